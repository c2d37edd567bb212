"""The ``phase-diagram`` experiment's theory, figure and table: the 6 ξ_c curve of the
mean-field theory (Schoenholz et al. 2017) beside the measured trainable region.

The sweep itself is an ordinary grid (a σ_w² axis x depths, see
:mod:`vgjax.experiments.signal`); this module adds the theory (on the device), the figure and
the Markdown table (host). jax and matplotlib are imported when used, so the report can read
:func:`deepest_trainable` cheaply.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from vgjax.io.tables import markdown_table, write_tables
from vgjax.result import SweepResult

# σ_w² range of the drawn curve: the experiment's [1, 4] with a margin.
CURVE_WEIGHT_VARS = np.round(np.linspace(0.9, 4.1, 161), 4)
# A cell "trains" when its final training accuracy is at least this (chance: 0.1 on digits).
TRAINS = 0.5
# How the figure and the report name the weights (Config.init).
INIT_NAMES = {"normal": "Gaussian", "orthogonal": "orthogonal"}


def init_name(init: str) -> str:
    """The figure's and the report's name of a ``Config.init`` (the init itself when it has
    none in :data:`INIT_NAMES`)."""
    return INIT_NAMES.get(init, init)


def theory_curve(bias_var: float, activation: str, extra=()
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight_vars [K], ξ_c [K] (inf at criticality), the critical σ_w² where χ₁ = 1) over
    :data:`CURVE_WEIGHT_VARS` and the σ_w² in ``extra`` (e.g. the grid's own), sorted."""
    from vgjax import theory as th

    weight_vars = np.unique(np.round(np.concatenate(
        [CURVE_WEIGHT_VARS, np.asarray(extra, np.float64)]), 4))
    g = th.phase_grid(np.asarray(weight_vars, np.float32), [bias_var], activation)
    xi = np.asarray(g.xi_c, np.float64)[:, 0]
    crit = float(th.critical_weight_var(bias_var, activation))
    return np.asarray(weight_vars, np.float64), xi, crit


def deepest_trainable(cells: Iterable[tuple[float, int, float | None]],
                      threshold: float = TRAINS) -> dict[float, int]:
    """Per σ_w², sorted: the largest depth whose seed-mean final training accuracy is >=
    ``threshold`` (0 when none). ``cells``: (σ_w², depth, accuracy or None/NaN) per grid
    cell, e.g. from :func:`vgjax.figures.phase.accuracy_grid` or a summary's groups."""
    deepest: dict[float, int] = {}
    for w, d, acc in cells:
        ok = acc is not None and math.isfinite(acc) and acc >= threshold
        deepest[float(w)] = max(deepest.get(float(w), 0), int(d) if ok else 0)
    return dict(sorted(deepest.items()))


class Verdict(NamedTuple):
    """One σ_w²'s measured boundary beside the theory's: the deepest trainable depth, the
    grid's next depth above it (None at the grid's deepest), 6 ξ_c, and ``how``:
    ``"follows"`` (6 ξ_c lies between the two depths, or beyond the grid where its deepest
    trains), ``"short"`` (the next depth is still within 6 ξ_c but did not train) or
    ``"beyond"`` (a net deeper than 6 ξ_c trained)."""

    deepest: int
    next_depth: int | None
    bound: float
    how: str


def verdicts(deepest: dict[float, int], depths, bound: dict[float, float]
             ) -> dict[float, Verdict]:
    """Per σ_w² of ``deepest`` (:func:`deepest_trainable`): its :class:`Verdict` against
    ``bound`` (σ_w² -> 6 ξ_c; inf at criticality) on the grid's ``depths``."""
    depths = sorted(int(d) for d in depths)
    out = {}
    for w, d in deepest.items():
        nxt = next((x for x in depths if x > d), None)
        b = bound[w]
        how = ("beyond" if d > b else "follows" if nxt is None or nxt > b else "short")
        out[w] = Verdict(d, nxt, b, how)
    return out


def budget_epochs(budgets, epochs: int) -> tuple[int, ...]:
    """The epochs (1-based, sorted) at which the diagram is read: those of ``budgets`` before
    the last epoch, then the last (``epochs``)."""
    return tuple(sorted({int(b) for b in budgets if 1 <= int(b) < epochs} | {int(epochs)}))


class Budget(NamedTuple):
    """The diagram read after ``epochs`` epochs (``steps`` optimizer steps): per σ_w², the
    deepest trainable depth (:func:`deepest_trainable`)."""

    epochs: int
    steps: int
    deepest: dict[float, int]


def budgets_of(result: SweepResult, budgets=()) -> list[Budget]:
    """One :class:`Budget` per epoch of :func:`budget_epochs` (the last one last), from the
    runs' per-epoch training accuracy."""
    from vgjax.figures.phase import accuracy_grid

    n_epochs = np.asarray(result.history["train_accuracy"]).shape[1]
    out = []
    for e in budget_epochs(budgets, n_epochs):
        ws, ds, grid = accuracy_grid(result, epoch=e)
        out.append(Budget(e, e * result.config.steps_per_epoch, deepest_trainable(
            (w, d, grid[i, j]) for i, d in enumerate(ds) for j, w in enumerate(ws))))
    return out


def table(result: SweepResult, theory_weight_vars, xi_c, critical_weight_var: float,
          read: list[Budget] | None = None) -> str:
    """Markdown: training accuracy after the last epoch per depth (rows) x σ_w² (columns),
    then per σ_w² the deepest trainable depth after each budget of ``read``
    (:func:`budgets_of`; None: the last epoch only) beside 6 ξ_c; the curve
    (:func:`theory_curve`) must hold the grid's σ_w² (its ``extra``)."""
    from vgjax.figures.phase import XI_MULTIPLE, accuracy_grid

    ws, ds, grid = accuracy_grid(result)
    tw = np.asarray(theory_weight_vars, np.float64)
    xi_at = [float(np.asarray(xi_c)[np.argmin(np.abs(tw - w))]) for w in ws]
    fmt = lambda v: "–" if not math.isfinite(v) else f"{v:.2f}"  # noqa: E731
    read = budgets_of(result) if read is None else read
    steps = read[-1].steps
    lines = markdown_table([f"depth \\ σ_w² (accuracy after {steps} steps)",
                            *(f"{w:g}" for w in ws)],
                           ([ds[i], *(fmt(v) for v in grid[i])]
                            for i in range(len(ds) - 1, -1, -1)))
    lines += ["", *markdown_table(
        ["σ_w²", *(f"deepest depth with train accuracy ≥ {TRAINS} after {b.steps} steps"
                   for b in read), f"{XI_MULTIPLE:g} ξ_c (theory)"],
        ([f"{w:g}", *(b.deepest[float(w)] for b in read),
          "∞" if not math.isfinite(x) else f"{XI_MULTIPLE * x:.1f}"]
         for w, x in zip(ws, xi_at)))]
    lines += ["", f"Critical point (χ₁ = 1): σ_w² = {critical_weight_var:.3f}."]
    return "\n".join(lines) + "\n"


def write(res: SweepResult, exp_dir: Path, name: str, budgets=()) -> Path:
    """The phase-diagram heatmaps (one per budget, :func:`budget_epochs`) with the theory's
    6 ξ_c, and its ``tables.json`` (the Markdown of :func:`table`, 6 ξ_c per σ_w² and the
    deepest trainable depth per budget), into ``exp_dir``; the PNG's path. ``name``: the
    experiment's, for the figure's title."""
    from vgjax.figures import plot_phase_diagram

    from vgjax.figures.phase import XI_MULTIPLE

    cfg = res.config
    grid_ws = np.unique(np.asarray(res.runs.weight_var, np.float64))
    tw, xi, crit = theory_curve(cfg.bias_var, cfg.activation, grid_ws)
    bound = {f"{w:g}": XI_MULTIPLE * float(xi[np.argmin(np.abs(tw - w))]) for w in grid_ws}
    read = budgets_of(res, budgets)
    write_tables(exp_dir, {"markdown": table(res, tw, xi, crit, read), "xi_bound": bound,
                           "critical_weight_var": crit,
                           "budgets": [{"epochs": b.epochs, "steps": b.steps,
                                        "deepest": {f"{w:g}": d for w, d in b.deepest.items()}}
                                       for b in read]})
    return plot_phase_diagram(
        res, Path(exp_dir) / "phase_diagram.png", tw, xi, critical_weight_var=crit,
        epochs=tuple(b.epochs for b in read),
        title=f"{name}: {cfg.activation}, {init_name(cfg.init)} weights, "
              f"width {res.widths[0]}, σ_b² = "
              f"{cfg.bias_var:g}, {cfg.data_name}, {cfg.optimizer} lr {cfg.lr:g}, "
              f"{cfg.epochs} epochs of {cfg.n_train} points")
