"""Signal-probe figures: saturated units per layer over epochs (init included), and dead
ReLU units against depth. Host-side, from the probe's history arrays (see
:mod:`vgjax.experiments.signal.results`, which computes the numbers these draw)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np
from matplotlib.figure import Figure

from vgjax.experiments.signal import results as sr
from vgjax.figures.common import (empty_note, layer_colors, new_figure, save_png, seed_phrase,
                                   suptitle)
from vgjax.result import SweepResult, seed_stats, with_init


def make_saturation(results: Mapping[str, SweepResult], *, title: str | None = None) -> Figure:
    """One panel per result: each hidden layer's saturated share (|φ′| < 0.05 on the
    training set), seed mean over epochs, epoch 0 being the initialisation."""
    if not results:
        raise ValueError("results: give at least one {label: SweepResult}")
    fig, axes = new_figure(len(results), sharey=True, panel_w=5.6, panel_h=4.3)
    counts = []
    for ax, (label, res) in zip(axes, results.items()):
        mean = seed_stats(with_init(res, "signal_saturation"), axis=0)["mean"]  # [E+1, D]
        epochs = np.arange(mean.shape[0])
        hidden = [i for i in range(mean.shape[1]) if np.isfinite(mean[:, i]).any()]
        for i, color in zip(hidden, layer_colors(len(hidden))):
            ax.plot(epochs, mean[:, i], lw=1.5, color=color, label=f"layer {i + 1}")
        if not hidden:
            empty_note(ax)
        else:
            ax.legend(loc="best", fontsize="small", framealpha=0.85)
        counts.append(len(res.runs))
        ax.set_title(f"{label} ({seed_phrase([len(res.runs)])})", fontsize="medium")
        ax.set_xlabel("epoch (0 = initialisation)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of (unit, point) pairs with |φ′(h)| < 0.05")
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}saturated units per hidden layer, mean over {seed_phrase(counts)}")
    return fig


def plot_saturation(results: Mapping[str, SweepResult], path: Union[str, os.PathLike], *,
                    title: str | None = None) -> Path:
    """:func:`make_saturation` written as a PNG to ``path``; returns the Path."""
    return save_png(make_saturation(results, title=title), path)


def make_dead_units(res: SweepResult, *, title: str | None = None) -> Figure:
    """Two panels. Left, against depth: the seed mean of the dead share (over a run's
    layers) at init and at the end, the share of runs with a fully dead layer at the end,
    and the share that learns. Right: the final dead share per layer (seed mean), depth by
    layer."""
    rows = sr.dead_tables(res)["rows"]
    depths = np.array([r["depth"] for r in rows])
    fig, (ax, heat) = new_figure(2, panel_w=5.8, panel_h=4.3)
    curves = (("dead share, init", [r["dead_init"]["mean"] for r in rows], "--", "#1f77b4"),
              ("dead share, end", [r["dead_final"]["mean"] for r in rows], "-", "#1f77b4"),
              ("runs with a fully dead layer, end", [r["share_fully_dead_final"] for r in rows],
               "-", "#d62728"),
              ("runs that learn", [r["share_learn"] for r in rows], "-", "black"))
    for label, ys, ls, color in curves:
        ys = np.array([np.nan if y is None else y for y in ys], np.float64)
        ax.plot(depths, ys, ls=ls, marker="o", ms=3, color=color, label=label)
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel("share")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.85)
    _, final = sr.init_and_final(res, "signal_dead")
    grid = np.full((len(depths), final.shape[1]), np.nan)
    for k, d in enumerate(depths):
        grid[k] = seed_stats(final[np.asarray(res.runs.depth) == d], axis=0)["mean"]
    im = heat.imshow(grid, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="magma",
                     extent=(0.5, final.shape[1] + 0.5, depths[0] - 0.5, depths[-1] + 0.5))
    fig.colorbar(im, ax=heat, pad=0.02, fraction=0.05).set_label("dead share, end",
                                                                  fontsize="small")
    heat.set_xlabel("hidden layer")
    heat.set_ylabel("depth (hidden layers)")
    n = seed_phrase([r["n_seeds"] for r in rows])
    head = f"{title} — " if title else ""
    suptitle(fig, f"{head}dead ReLU units (zero on every training point), {n} per depth")
    return fig


def plot_dead_units(res: SweepResult, path: Union[str, os.PathLike], *,
                    title: str | None = None) -> Path:
    """:func:`make_dead_units` written as a PNG to ``path``; returns the Path."""
    return save_png(make_dead_units(res, title=title), path)
