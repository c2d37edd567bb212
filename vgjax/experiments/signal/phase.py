"""The ``phase-diagram`` experiment's theory and table: the 6 ξ_c curve of the mean-field
theory (Schoenholz et al. 2017) beside the measured trainable region.

The sweep itself is an ordinary grid (:data:`vgjax.experiments.PHASE`, a σ_w² axis x depths);
this module adds the theory (on the device) and the Markdown table (host).
"""

from __future__ import annotations

import math

import numpy as np

from vgjax import theory as th
from vgjax.figures.phase import XI_MULTIPLE, accuracy_grid
from vgjax.result import SweepResult

# σ_w² range of the drawn curve: the experiment's [1, 4] with a margin.
CURVE_WEIGHT_VARS = np.round(np.linspace(0.9, 4.1, 161), 4)
# A cell "trains" when its final training accuracy is at least this (chance: 0.1 on digits).
TRAINS = 0.5


def theory_curve(bias_var: float, activation: str, extra=()
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight_vars [K], ξ_c [K] (inf at criticality), the critical σ_w² where χ₁ = 1) over
    :data:`CURVE_WEIGHT_VARS` and the σ_w² in ``extra`` (e.g. the grid's own), sorted."""
    weight_vars = np.unique(np.round(np.concatenate(
        [CURVE_WEIGHT_VARS, np.asarray(extra, np.float64)]), 4))
    g = th.phase_grid(np.asarray(weight_vars, np.float32), [bias_var], activation)
    xi = np.asarray(g.xi_c, np.float64)[:, 0]
    crit = float(th.critical_weight_var(bias_var, activation))
    return np.asarray(weight_vars, np.float64), xi, crit


def deepest_trainable(result: SweepResult, threshold: float = TRAINS) -> dict[float, int]:
    """Per σ_w²: the largest depth whose seed-mean final training accuracy is >= threshold
    (0 when none)."""
    ws, ds, grid = accuracy_grid(result)
    return {float(w): int(max([d for d, a in zip(ds, grid[:, j]) if a >= threshold],
                              default=0)) for j, w in enumerate(ws)}


def table(result: SweepResult, theory_weight_vars, xi_c, critical_weight_var: float) -> str:
    """Markdown: final training accuracy per depth (rows) x σ_w² (columns), then per σ_w² the
    deepest trainable depth beside 6 ξ_c; the curve (:func:`theory_curve`) must hold the
    grid's σ_w² (its ``extra``)."""
    ws, ds, grid = accuracy_grid(result)
    tw = np.asarray(theory_weight_vars, np.float64)
    xi_at = [float(np.asarray(xi_c)[np.argmin(np.abs(tw - w))]) for w in ws]
    fmt = lambda v: "–" if not math.isfinite(v) else f"{v:.2f}"
    lines = ["| depth \\ σ_w² | " + " | ".join(f"{w:g}" for w in ws) + " |",
             "|---" * (len(ws) + 1) + "|"]
    for i in range(len(ds) - 1, -1, -1):
        lines.append(f"| {ds[i]} | " + " | ".join(fmt(v) for v in grid[i]) + " |")
    deepest = deepest_trainable(result)
    lines += ["", f"| σ_w² | deepest depth with train accuracy ≥ {TRAINS} | "
              f"{XI_MULTIPLE:g} ξ_c (theory) |", "|---|---|---|"]
    for w, x in zip(ws, xi_at):
        six = "∞" if not math.isfinite(x) else f"{XI_MULTIPLE * x:.1f}"
        lines.append(f"| {w:g} | {deepest[float(w)]} | {six} |")
    lines += ["", f"Critical point (χ₁ = 1): σ_w² = {critical_weight_var:.3f}."]
    return "\n".join(lines) + "\n"
