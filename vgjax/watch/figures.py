"""Figures of a watched model (:class:`~vgjax.watch.api.WatchResult`), host-side NumPy and
Matplotlib only: where the gradients vanish, path by path, and the learning curves with seed
bands. Like :mod:`vgjax.figures`, each ``plot_*`` writes a PNG atomically and returns its
path; each ``make_*`` returns the :class:`matplotlib.figure.Figure`.

Runs are grouped by learning rate (one group when the optimizer keeps its own rate); seed
statistics skip epochs from the one in which a run diverged (:func:`vgjax.result.seed_stats`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure

from vgjax.figures.common import (empty_note, layer_colors, new_figure, positive, save_png,
                                  seed_phrase, series_colors, suptitle)
from vgjax.result import seed_stats
from vgjax.watch.api import WatchResult


def lr_groups(result: WatchResult) -> list[tuple[str, np.ndarray]]:
    """``[(label, run indices)]``: the runs of each learning rate, in the grid's order (one
    group, labelled ``"all seeds"``, when the optimizer keeps its own rate)."""
    lr = np.asarray(result.runs.lr, np.float64)
    if np.isnan(lr).all():
        return [("all seeds", np.arange(len(lr)))]
    return [(f"lr {v:g}", np.flatnonzero(lr == v)) for v in dict.fromkeys(lr.tolist())]


def make_path_gradients(result: WatchResult, *, stat: str = "grad_norm",
                        title: str | None = None) -> Figure:
    """One panel per learning rate: each parameter path's seed-mean ``stat`` ([R, E, L],
    e.g. ``grad_norm`` or ``grad_mean_abs``) over epochs on a log axis, coloured from the
    input (dark) to the output (light), so a vanishing gradient shows as the early paths'
    lines falling below the late ones'."""
    values = np.asarray(result.history[stat], np.float64)
    if values.ndim != 3 or values.shape[2] != len(result.paths):
        raise ValueError(f"stat: {stat!r} has shape {values.shape}; allowed: a per-path "
                         f"history array [R, E, {len(result.paths)}]")
    groups = lr_groups(result)
    fig, axes = new_figure(len(groups), sharey=True, panel_w=6.2, panel_h=4.3)
    colors = layer_colors(len(result.paths))
    epochs = np.arange(1, values.shape[1] + 1)
    for ax, (label, idx) in zip(axes, groups):
        mean = seed_stats(values[idx], axis=0)["mean"]  # [E, L]
        drawn = [ax.plot(epochs, positive(mean[:, i]), color=colors[i], lw=1.4, label=path)[0]
                 for i, path in enumerate(result.paths) if np.isfinite(positive(mean[:, i])).any()]
        if not drawn:
            empty_note(ax)
        ax.set_yscale("log" if drawn else "linear")
        ax.set_title(f"{label} ({seed_phrase([len(idx)])})", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if drawn and len(drawn) <= 12:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      framealpha=0.85, borderaxespad=0.0)
    axes[0].set_ylabel(f"{stat} (log)")
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}{stat} per parameter path, input to output, seed mean")
    return fig


def make_learning_curves(result: WatchResult, *, title: str | None = None) -> Figure:
    """Loss and accuracy (train dashed, test solid) over epochs: the seed mean of each
    learning rate's runs with a band of ± one standard deviation."""
    fig, (loss_ax, acc_ax) = new_figure(2, panel_w=5.6, panel_h=4.0)
    groups = lr_groups(result)
    for (label, idx), color in zip(groups, series_colors(len(groups))):
        for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            for split, style in (("train", "--"), ("test", "-")):
                st = seed_stats(np.asarray(result.history[f"{split}_{name}"])[idx], axis=0)
                epochs = np.arange(1, st["mean"].shape[0] + 1)
                ax.plot(epochs, st["mean"], style, color=color, lw=1.5,
                        label=f"{label}, {split}")
                ax.fill_between(epochs, st["mean"] - st["std"], st["mean"] + st["std"],
                                color=color, alpha=0.15, lw=0)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize="small", framealpha=0.85)
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}learning curves, seed mean ± std")
    return fig


def plot_path_gradients(result: WatchResult, path: Union[str, os.PathLike], *,
                        stat: str = "grad_norm", title: str | None = None) -> Path:
    """:func:`make_path_gradients`, written as a PNG to ``path``."""
    return save_png(make_path_gradients(result, stat=stat, title=title), path)


def plot_learning_curves(result: WatchResult, path: Union[str, os.PathLike], *,
                         title: str | None = None) -> Path:
    """:func:`make_learning_curves`, written as a PNG to ``path``."""
    return save_png(make_learning_curves(result, title=title), path)
