"""The report's sections for the ``signal`` group (theory beside measurement, issue #12).

One section per experiment present in ``OUT``: a heading, what it shows and how it compares
with the paper it follows, its ``tables.json`` Markdown, its figures and (for the sweep) the
protocol read from its ``summary.json``. Host-only; a function of the files in ``OUT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vgjax import experiments as ex
from vgjax.store import sanitize_name

HEADING = "## Signal propagation: theory beside measurement"

INTRO = ("Mean-field theory of deep random networks (Poole et al. 2016, Schoenholz et al. "
         "2017, Pennington et al. 2017) next to what vgjax measures on real nets. "
         "`vgjax reproduce --group signal` (or `vgjax run NAME`) rebuilds these sections; "
         "`vgjax reproduce` alone runs the tutorial group only.")

TEXT: dict[str, str] = {
    "theory": (
        "q*, χ₁ and ξ_c against σ_w² for tanh (σ_b² ∈ {0, 0.05}) and ReLU, and the "
        "order-to-chaos line χ₁ = 1 in the (σ_w², σ_b²) plane: tanh with σ_b² = 0.05 turns "
        "chaotic at σ_w² = 1.761, ReLU at σ_w² = 2 (He), as in Poole et al.'s Fig. 2 and "
        "Schoenholz et al.'s Fig. 1. No training; details in [theory/README.md]"
        "(theory/README.md)."),
    "jacobian-spectra": (
        "Singular values of the input–output Jacobian of random width-128 nets at "
        "criticality, depths 4/16/64, Gaussian vs orthogonal weights (made by "
        "`vgjax.model.init_params`, the library's `normal` and `orthogonal` schemes): "
        "orthogonal tanh with a small q* keeps a concentrated spectrum with depth while "
        "Gaussian and ReLU spectra spread (Pennington et al. 2017); the mean σ² follows the "
        "mean-field prediction σ_w² Πχ. Details in [jacobian-spectra/README.md]"
        "(jacobian-spectra/README.md)."),
    "signal-propagation": (
        "Fresh tanh nets (Gaussian weights N(0, σ_w²/fan_in), σ_b² = 0.05, width 256, depth "
        "48, 8 seeds) on the digits training points, in the ordered (σ_w² = ½ the critical "
        "value), critical (χ₁ = 1) and chaotic (2×) phases. Measured q^l (mean h_l² over "
        "256 points and the units) against the q-map iterated from each point's own q⁰, and "
        "the per-point squared gradient norm of each layer's kernel relative to the last "
        "hidden layer against the theory (‖a^{l−1}‖² Π χ(q^k) on the q-trajectory) and "
        "χ₁^{L−l} (Schoenholz et al. 2017, Sec. 4; Poole et al. 2016, Fig. 1)."),
    "phase-diagram": (
        "Final training accuracy over σ_w² × depth for tanh nets with σ_b² = 0.05, "
        "the analogue of Schoenholz et al. 2017's Fig. 5, with their 6 ξ_c curve "
        "(white) drawn from `vgjax.theory`."),
}


def _protocol(summary: dict[str, Any]) -> str:
    c, g = summary["config"], summary["grid"]
    return (f"Protocol: {c['data']} ({c['n_train']} training, {c['n_samples'] - c['n_train']} "
            f"test points), width {', '.join(map(str, g['widths']))}, depths "
            f"{min(g['depths'])}–{max(g['depths'])} ({len(g['depths'])} values), σ_w² "
            f"{min(g['weight_vars'])}–{max(g['weight_vars'])} ({len(g['weight_vars'])} values), "
            f"{c['init']} init, {c['optimizer']} lr {c['lr']:g} momentum {c['momentum']:g}, "
            f"batch {c['batch_size']}, {c['epochs']} epochs, "
            f"{len(g['seeds'])} seed{'s' if len(g['seeds']) != 1 else ''}.")


def signal_sections(out: Path, tables: dict[str, dict], summaries: dict[str, dict]) -> list[str]:
    """Markdown lines of every ``signal``-group experiment present in ``out`` ([] if none)."""
    lines: list[str] = []
    for name in ex.in_group("signal"):
        exp = ex.get(name)
        figs = [f for f in exp.figures if (out / sanitize_name(name) / f).is_file()]
        if name not in tables and not figs:
            continue
        lines += [f"### {name}: {exp.title}", "", TEXT.get(name, ""), ""]
        if name in summaries:
            lines += [_protocol(summaries[name]), ""]
        extra = tables.get(name, {}).get("text")
        if extra:
            lines += [extra, ""]
        md = tables.get(name, {}).get("markdown")
        if md:
            lines += [md.rstrip("\n"), ""]
        for f in figs:
            lines += [f"![{name}: {Path(f).stem.replace('_', ' ')}]"
                      f"({sanitize_name(name)}/{f})", ""]
    return [HEADING, "", INTRO, ""] + lines if lines else []
