"""A per-layer statistic over epochs: gradients (log scale) and weight norms."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vgjax.figures.common import (PanelEntry, OUTPUT_COLOR, STAT_LABELS, check_history, discrete_colorbar, empty_note, layer_colors, layer_name, n_seeds, new_figure, panel_entries, positive, save_png, seed_phrase, suptitle)
from vgjax.result import seed_stats



def make_layer_stat(results: Mapping[str, PanelEntry], *, stat: str, title: str | None,
                     log: Union[bool, str], what: str, sharey: bool = True) -> Figure:
    entries = panel_entries(results)
    means = []
    for label, res, idx in entries:
        arr = check_history(res, stat, what)
        if arr.ndim != 3:
            raise ValueError(f"{what}: {stat!r} has shape {arr.shape}, expected [R, E, L]")
        means.append(seed_stats(arr[idx], axis=0)["mean"])  # [E, L]
    if log == "auto":
        vals = np.concatenate([positive(m).ravel() for m in means])
        vals = vals[np.isfinite(vals)]
        log = bool(vals.size) and vals.max() / vals.min() > 30.0
    fig, axes = new_figure(len(entries), sharey=sharey, panel_w=5.6, panel_h=4.3)
    counts = []
    for ax, (label, res, idx), mean in zip(axes, entries, means):
        n_layers = mean.shape[1]
        epochs = np.arange(1, mean.shape[0] + 1)
        ys = [positive(mean[:, i]) if log else mean[:, i] for i in range(n_layers)]
        hidden = [i for i in range(n_layers - 1) if np.isfinite(ys[i]).any()]
        colors = dict(zip(hidden, layer_colors(len(hidden))))
        drawn = []
        for i in hidden:
            drawn += ax.plot(epochs, ys[i], lw=1.4, color=colors[i], label=layer_name(i, n_layers))
        out = n_layers - 1
        if np.isfinite(ys[out]).any():
            drawn += ax.plot(epochs, ys[out], lw=1.8, ls="--", color=OUTPUT_COLOR, label="output")
        if log:
            ax.set_yscale("log")
        if not drawn:
            empty_note(ax)
        n = n_seeds(res, idx)
        counts.append(n)
        ax.set_title(f"{label} ({seed_phrase([n])})", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on short runs
        ax.set_xlim(1, max(len(epochs), 2))
        ax.grid(alpha=0.3, which="major")
        if len(hidden) <= 9:
            if drawn:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                          framealpha=0.85, borderaxespad=0.0)
        else:
            # Too many layers for a legend: a discrete colorbar for the hidden layers.
            discrete_colorbar(fig, ax, [colors[i] for i in hidden],
                               [str(i + 1) for i in hidden], "hidden layer")
            out_lines = [h for h in drawn if h.get_label() == "output"]
            if out_lines:
                ax.legend(handles=out_lines, loc="best", fontsize="small", framealpha=0.85)
    axes[0].set_ylabel(STAT_LABELS.get(stat, stat) + (" (log)" if log else ""))
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}{STAT_LABELS.get(stat, stat)} per layer over epochs, "
                   f"mean over {seed_phrase(counts)}")
    return fig


def plot_layer_gradients(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                         stat: str = "grad_mean_abs", title: str | None = None) -> Path:
    """Per-layer gradient statistic over epochs, log y axis, one panel per entry.

    Args:
        results: ``{label: (SweepResult, run_indices)}``, one panel each, side by side (e.g.
            ``{"tanh U(0,1)": (res_tanh, idx), "ReLU He": (res_relu, idx)}``). ``run_indices``
            is an int array (or None / a bare SweepResult for all runs).
        path: PNG file to write.
        stat: a per-layer history array ``[R, E, L]`` (``grad_mean_abs``, ``grad_norm``, ...).
        title: what is compared.

    Each line is one layer's seed mean (``[E]``), labelled ``layer 1 … layer D`` and
    ``output``; layers with no finite (or no positive) value are not drawn.
    """
    fig = make_layer_stat(results, stat=stat, title=title, log=True, what="plot_layer_gradients")
    return save_png(fig, path)


def plot_weight_norms(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                      title: str | None = None, log: Union[bool, str] = "auto") -> Path:
    """Weight L1 norm per layer over epochs (``history["weight_l1"]``, ``[R, E, L]``).

    Same layout as :func:`plot_layer_gradients`: one panel per entry, one line per layer
    (seed mean). Panels have their own y ranges. ``log="auto"`` uses a log y axis when the
    values span more than a factor 30.
    """
    fig = make_layer_stat(results, stat="weight_l1", title=title, log=log,
                           what="plot_weight_norms", sharey=False)
    return save_png(fig, path)
