"""The gradient profile: gradient magnitude across layers at a few epochs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib import colormaps

from vgjax.figures.common import (PanelEntry, STAT_LABELS, check_history, empty_note, n_seeds, new_figure, panel_entries, positive, save_png, seed_phrase, suptitle)
from vgjax.result import seed_stats


def _clip_epochs(epochs: Sequence[int], n_epochs: int) -> list[int]:
    out = sorted({int(min(max(int(e), 1), n_epochs)) for e in epochs})
    return out


def make_gradient_profile(results: Mapping[str, PanelEntry], *, epochs=(1, 10, 100, 500),
                           title: str | None = None, stat: str = "grad_mean_abs") -> Figure:
    entries = panel_entries(results)
    if len(tuple(epochs)) == 0:
        raise ValueError("plot_gradient_profile: epochs is empty")
    fig, axes = new_figure(len(entries), sharey=True, panel_h=4.3)
    cmap = colormaps["plasma"]
    counts = []
    for ax, (label, res, idx) in zip(axes, entries):
        arr = check_history(res, stat, "plot_gradient_profile")
        mean = seed_stats(arr[idx], axis=0)["mean"]  # [E, L]
        n_epochs, n_layers = mean.shape
        chosen = _clip_epochs(epochs, n_epochs)
        present = np.isfinite(mean).any(axis=0)
        hidden = [i for i in range(n_layers - 1) if present[i]]
        layer_ids = hidden + [n_layers - 1]
        xpos = np.arange(1, len(layer_ids) + 1)
        drawn = 0
        for k, ep in enumerate(chosen):
            color = cmap(0.85 * k / max(len(chosen) - 1, 1))
            y = positive(mean[ep - 1, layer_ids])
            if not np.isfinite(y).any():
                continue
            ax.plot(xpos, y, marker="o", ms=4, lw=1.6, color=color, label=f"epoch {ep}")
            drawn += 1
        ax.set_yscale("log")
        ticks = [str(i + 1) for i in hidden] + ["out"]
        step = max(1, int(np.ceil(len(ticks) / 14)))
        ax.set_xticks(xpos[::-1][::step][::-1])
        ax.set_xticklabels(ticks[::-1][::step][::-1])
        ax.set_xlim(0.5, len(layer_ids) + 0.5)
        ax.set_xlabel("layer (1 = next to the input, out = output layer)")
        n = n_seeds(res, idx)
        counts.append(n)
        ax.set_title(f"{label} ({seed_phrase([n])})", fontsize="medium")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small", framealpha=0.85, loc="best")
        else:
            empty_note(ax)
    axes[0].set_ylabel(STAT_LABELS.get(stat, stat) + " (log)")
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}gradient profile across layers, "
                   f"mean over {seed_phrase(counts)}")
    return fig


def plot_gradient_profile(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                          epochs: Sequence[int] = (1, 10, 100, 500), title: str | None = None,
                          stat: str = "grad_mean_abs") -> Path:
    """Gradient magnitude across layers at a few epochs: the vanishing pattern at a glance.

    Args:
        results: ``{label: (SweepResult, run_indices)}`` as for :func:`plot_layer_gradients`.
        path: PNG file to write.
        epochs: 1-based epochs to show, one line each; values are clamped to ``1 .. E`` and
            de-duplicated (so ``500`` on a 100-epoch run shows epoch 100).
        title: what is compared.
        stat: per-layer history array ``[R, E, L]``; x is hidden layer 1..D then ``out``
            (only layers that the selected runs have), y is the seed mean, log scale.
    """
    fig = make_gradient_profile(results, epochs=epochs, title=title, stat=stat)
    return save_png(fig, path)
