"""Learning curves: train and test accuracy per epoch, seed mean with a ±1 std band."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vgjax.figures.common import (AXIS_LABELS, TEST_COLOR, TRAIN_COLOR, as_indices, check_history, config_label, describe, discrete_colorbar, fmt_value, n_seeds, new_figure, save_png, seed_phrase, series_colors, suptitle)
from vgjax.result import GROUP_FIELDS, SweepResult, group_indices, seed_stats


def _band(ax, x, stats, color, label, *, alpha=0.18, lw=1.6, ls="-", band=True):
    mean = stats["mean"]
    if not np.isfinite(mean).any():
        return None
    (line,) = ax.plot(x, mean, color=color, lw=lw, ls=ls, label=label)
    if band:
        ax.fill_between(x, mean - stats["std"], mean + stats["std"], color=color, alpha=alpha,
                        lw=0)
    return line


def _epoch_axis(ax, n_epochs: int) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on short runs
    ax.set_xlim(1, max(n_epochs, 2))
    ax.grid(alpha=0.3)


def _one_config(result: SweepResult, g: np.ndarray, train: np.ndarray, test: np.ndarray,
                head: str, div_note: str) -> Figure:
    """One panel: the train and the test curve of one config's seeds ``g``."""
    n_epochs = train.shape[1]
    epochs = np.arange(1, n_epochs + 1)
    fig, (ax,) = new_figure(1, panel_w=6.4, panel_h=4.4)
    _band(ax, epochs, seed_stats(train[g]), TRAIN_COLOR, "train")
    _band(ax, epochs, seed_stats(test[g]), TEST_COLOR, "test")
    d = np.asarray(result.runs.diverged_epoch)[g]
    d = d[(d >= 1) & (d <= n_epochs)]
    if d.size:
        ax.plot(d, np.zeros_like(d, dtype=float) + 0.02, "x", color="0.3",
                transform=ax.get_xaxis_transform(), label=f"divergence ({d.size})")
    _epoch_axis(ax, n_epochs)
    ax.set_ylabel("accuracy")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small", framealpha=0.85)
    suptitle(fig, f"{head} — accuracy per epoch, mean ± 1 std over "
                  f"{seed_phrase([n_seeds(result, g)])}{div_note}")
    return fig


def _many_configs(result: SweepResult, groups: dict[tuple, np.ndarray], train: np.ndarray,
                  test: np.ndarray, head: str, div_note: str) -> Figure:
    """Two panels (train | test), one curve per config."""
    keys = list(groups)
    vary = tuple(len({k[i] for k in keys}) > 1 for i in range(len(GROUP_FIELDS)))
    with_band = len(keys) <= 6
    epochs = np.arange(1, train.shape[1] + 1)
    fig, axes = new_figure(2, panel_w=5.6, panel_h=4.4, sharey=True)
    colors = series_colors(len(keys))
    for ax, arr, name in ((axes[0], train, "train"), (axes[1], test, "test")):
        for key, color in zip(keys, colors):
            _band(ax, epochs, seed_stats(arr[groups[key]]), color, config_label(key, vary),
                  band=with_band, alpha=0.12, lw=1.6 if len(keys) <= 8 else 1.1)
        ax.set_title(f"{name} accuracy", fontsize="medium")
        _epoch_axis(ax, train.shape[1])
    axes[0].set_ylabel("accuracy")
    single_axis = [i for i in range(len(GROUP_FIELDS)) if vary[i]]
    if len(keys) > 8 and len(single_axis) == 1:
        # Many configs along one parameter: a discrete colorbar instead of a long legend.
        field = GROUP_FIELDS[single_axis[0]]
        ticks = [fmt_value(k[single_axis[0]]) for k in keys]
        discrete_colorbar(fig, list(axes), colors, ticks, AXIS_LABELS.get(field, field))
    else:
        handles, labels = axes[1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small",
                       framealpha=0.85, ncol=1 if len(handles) <= 16 else 2)
    what = "mean ± 1 std" if with_band else "mean"
    counts = [n_seeds(result, g) for g in groups.values()]
    suptitle(fig, f"{head} — accuracy per epoch, {what} over {seed_phrase(counts)}{div_note}")
    return fig


def make_learning_curves(result: SweepResult, *, title: str | None = None, runs=None) -> Figure:
    """The figure of :func:`plot_learning_curves`."""
    for name in ("train_accuracy", "test_accuracy"):
        check_history(result, name, "plot_learning_curves")
    train = np.asarray(result.history["train_accuracy"])
    test = np.asarray(result.history["test_accuracy"])
    idx = as_indices(runs, len(result.runs))
    groups = {k: np.intersect1d(v, idx) for k, v in group_indices(result).items()}
    groups = {k: v for k, v in groups.items() if v.size}
    head = title if title else describe(result)
    n_div = int((np.asarray(result.runs.diverged_epoch)[idx] >= 0).sum())
    div_note = f"; {n_div} of {idx.size} runs diverged" if n_div else ""
    if len(groups) == 1:
        return _one_config(result, next(iter(groups.values())), train, test, head, div_note)
    return _many_configs(result, groups, train, test, head, div_note)


def plot_learning_curves(result: SweepResult, path: Union[str, os.PathLike], *,
                         title: str | None = None, runs=None) -> Path:
    """Train and test accuracy per epoch: seed mean with a ±1 std band.

    Uses ``history["train_accuracy"]`` and ``["test_accuracy"]``, each ``[R, E]``.

    Args:
        result: the sweep.
        path: PNG file to write.
        title: what the runs are (default: a description made from the config).
        runs: ``[n]`` int run indices (or an ``[R]`` boolean mask) to use; default all.
            When the selected runs hold one ``(depth, width, lr)`` config the figure is one
            panel with a train and a test curve; with several configs it is two panels
            (train | test) with one curve per config (bands only up to 6 configs).

    Epochs after a run diverged are NaN and skipped, so late means are over the surviving
    seeds; divergence epochs are marked with ``x`` on the single-config plot.
    """
    return save_png(make_learning_curves(result, title=title, runs=runs), path)
