"""The trainability phase diagram (Schoenholz et al. 2017): seed-mean training accuracy over
σ_w² x depth, with the theory's 6 ξ_c curve drawn over it; read after the last epoch or, one
panel each, after earlier ones (the training budget the boundary depends on).

Host-only: the curve comes in as arrays (``weight_vars [K]``, ``xi_c [K]``, computed by
:mod:`vgjax.theory` elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from vgjax.figures.common import check_history, new_figure, save_png, suptitle
from vgjax.result import SweepResult, final_metric

XI_MULTIPLE = 6.0


def accuracy_grid(result: SweepResult, metric: str = "train_accuracy", epoch: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight_vars [W], depths [D], seed-mean ``metric`` [D, W] after ``epoch`` (1-based;
    None: the last), each run's last finite value up to it; NaN where every run of a cell
    diverged by then)."""
    check_history(result, metric, "plot_phase_diagram")
    history = np.asarray(result.history[metric])
    if epoch is not None and not 1 <= epoch <= history.shape[1]:
        raise ValueError(f"epoch: {epoch} is out of range; allowed: 1..{history.shape[1]}")
    final = final_metric(result, history[:, :epoch])
    r = result.runs
    ws = np.unique(np.asarray(r.weight_var, np.float64))
    ds = np.unique(np.asarray(r.depth))
    grid = np.full((len(ds), len(ws)), np.nan)
    for i, d in enumerate(ds):
        for j, w in enumerate(ws):
            v = final[(r.depth == d) & np.isclose(r.weight_var, w)]
            v = v[np.isfinite(v)]
            if v.size:
                grid[i, j] = v.mean()
    return ws, ds, grid


def _edges(centres: np.ndarray) -> np.ndarray:
    c = np.asarray(centres, np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def make_phase_diagram(result: SweepResult, theory_weight_vars, xi_c, *,
                       critical_weight_var: float | None = None,
                       metric: str = "train_accuracy", title: str | None = None,
                       epochs: tuple[int, ...] | None = None) -> Figure:
    """The figure of :func:`plot_phase_diagram`."""
    n_epochs = np.asarray(result.history[metric]).shape[1]
    epochs = tuple(epochs) if epochs else (n_epochs,)
    fig, axes = new_figure(len(epochs), panel_w=7.5 if len(epochs) == 1 else 6.0, panel_h=5.5)
    tw, xi = np.asarray(theory_weight_vars, np.float64), np.asarray(xi_c, np.float64)
    curve = np.where(np.isfinite(xi), XI_MULTIPLE * xi, np.nan)
    steps = result.config.steps_per_epoch
    for ax, epoch in zip(axes, epochs):
        ws, ds, grid = accuracy_grid(result, metric, epoch)
        mesh = ax.pcolormesh(_edges(ws), _edges(ds), np.ma.masked_invalid(grid),
                             cmap=colormaps["viridis"].with_extremes(bad="0.85"), vmin=0.0,
                             vmax=1.0, shading="flat")
        fig.colorbar(mesh, ax=ax, label=f"{metric.replace('_', ' ')} (seed mean)")
        ax.plot(tw, curve, color="white", lw=2.2,
                label=f"{XI_MULTIPLE:g} ξ_c (mean-field theory)")
        ax.plot(tw, curve / 2, color="white", lw=1, ls="--", label=f"{XI_MULTIPLE / 2:g} ξ_c")
        if critical_weight_var is not None:
            ax.axvline(critical_weight_var, color="tab:red", lw=1, ls=":",
                       label=f"χ₁ = 1 (σ_w² = {critical_weight_var:.3f})")
        ax.set(xlim=(_edges(ws)[0], _edges(ws)[-1]), ylim=(_edges(ds)[0], _edges(ds)[-1]),
               xlabel="σ_w²", ylabel="depth (hidden layers)",
               title=f"after {epoch * steps} steps (epoch {epoch})")
        ax.legend(loc="upper right", fontsize=8, facecolor="0.5", framealpha=0.6)
    seeds = np.unique(np.asarray(result.runs.seed)).size
    suptitle(fig, (title or "phase diagram") + f" — {seeds} seed" + ("" if seeds == 1 else "s"))
    return fig


def plot_phase_diagram(result: SweepResult, path: Union[str, os.PathLike], theory_weight_vars,
                       xi_c, *, critical_weight_var: float | None = None,
                       metric: str = "train_accuracy", title: str | None = None,
                       epochs: tuple[int, ...] | None = None) -> Path:
    """σ_w² x depth heatmap of the seed-mean ``metric`` of ``result`` (its runs'
    ``weight_var`` and ``depth``) after each of ``epochs`` (1-based, one panel each; None:
    the last), with ``6 ξ_c`` (and ``3 ξ_c``) over ``theory_weight_vars`` drawn as lines and
    the critical σ_w² as a dotted vertical line. Returns the PNG's path."""
    return save_png(make_phase_diagram(result, theory_weight_vars, xi_c,
                                       critical_weight_var=critical_weight_var, metric=metric,
                                       title=title, epochs=epochs), path)
