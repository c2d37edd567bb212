"""The signal group's theory-beside-measurement experiments: the mean-field curves, Jacobian
spectra, signal propagation at initialisation and the trainability phase diagram.

Each object owns its run (the computation lives in :mod:`~vgjax.experiments.signal.theory_studies`,
:mod:`~vgjax.experiments.signal.propagation` and :mod:`~vgjax.experiments.signal.phase`,
imported when it runs) and its report section, whose prose takes every measured number from
the experiment's files (``data.json``, ``summary.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgjax.config import Config
from vgjax.experiments.base import Context, Study, Sweep, summary_of, tables_of
from vgjax.experiments.signal.phase import TRAINS, deepest_trainable, init_name, verdicts
from vgjax.experiments.signal.report import study_section, sweep_protocol
from vgjax.io.tables import markdown_table
from vgjax.result import SweepResult


def _read_json(path: Path) -> Any | None:
    import json
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(v: float, digits: int) -> str:
    """``v`` with ``digits`` significant digits as 'm·10ᵉ' (e.g. '1.35·10⁻⁸')."""
    e = math.floor(math.log10(abs(v)))
    m = round(v / 10 ** e, digits - 1)
    if abs(m) >= 10:
        m, e = m / 10, e + 1
    return f"{m:.{digits - 1}f}·10{str(e).translate(_SUPERSCRIPT)}"


def power_of_ten(v: float) -> str:
    """'10⁻⁸' for 1.35e-8."""
    return "10" + str(math.floor(math.log10(abs(v)))).translate(_SUPERSCRIPT)


@dataclass(frozen=True)
class Theory(Study):
    """Mean-field q*, χ₁ and ξ_c against σ_w², and the order-to-chaos line (no training)."""

    figures: tuple[str, ...] = ("mean_field.png", "order_chaos.png")

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.theory_studies import write_theory
        return [p for p in write_theory(ctx.exp_dir) if p.suffix == ".png"]

    def section(self, exp_dir: Path) -> list[str]:
        return study_section(self, exp_dir, (
            "q*, χ₁ and ξ_c against σ_w² for tanh (σ_b² ∈ {0, 0.05}) and ReLU, and the "
            "order-to-chaos line χ₁ = 1 in the (σ_w², σ_b²) plane: tanh with σ_b² = 0.05 "
            "turns chaotic at σ_w² = 1.761, ReLU at σ_w² = 2 (He), as in Poole et al.'s "
            "Fig. 2 and Schoenholz et al.'s Fig. 1. No training; details in "
            f"[{self.name}/README.md]({self.name}/README.md)."))


@dataclass(frozen=True)
class JacobianSpectra(Study):
    """Singular values of the input-output Jacobian of random nets at criticality."""

    figures: tuple[str, ...] = ("spectra.png", "mean_sq.png")

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.theory_studies import write_spectra
        return [p for p in write_spectra(ctx.exp_dir) if p.suffix == ".png"]

    def section(self, exp_dir: Path) -> list[str]:
        return study_section(self, exp_dir, (
            "Singular values of the input–output Jacobian of random width-128 nets at "
            "criticality, depths 4/16/64, Gaussian vs orthogonal weights (made by "
            "`vgjax.model.init_params`, the library's `normal` and `orthogonal` schemes): "
            "orthogonal tanh with a small q* keeps a concentrated spectrum with depth while "
            "Gaussian and ReLU spectra spread (Pennington et al. 2017); the mean σ² follows the "
            "mean-field prediction σ_w² Πχ. Details in "
            f"[{self.name}/README.md]({self.name}/README.md)."))


@dataclass(frozen=True)
class SignalPropagation(Study):
    """Measured q^l and per-layer gradient norms of random tanh nets in the ordered,
    critical and chaotic phases, beside the mean-field theory (no training)."""

    figures: tuple[str, ...] = ("q_per_layer.png", "grad_per_layer.png")

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.propagation import write
        return [p for p in write(ctx.exp_dir) if p.suffix == ".png"]

    def section(self, exp_dir: Path) -> list[str]:
        data = _read_json(exp_dir / "data.json")
        return study_section(self, exp_dir, "" if data is None else propagation_text(data))


def table_layers(depth: int) -> list[int]:
    """The layers (1-based) whose q^l the signal-propagation table shows."""
    return sorted({1, 2, 4, 8, 16, depth // 2, depth} & set(range(1, depth + 1)))


def propagation_table(data: dict[str, Any]) -> str:
    """Markdown: per phase, q at a few layers (measured ± std vs theory) and the gradient
    ratio layer 1 / layer L (measured vs q-trajectory theory vs χ₁^{L−1})."""
    layers = table_layers(data["depth"])
    return "\n".join(markdown_table(
        ["phase", "σ_w²", "χ₁", "q*", *(f"q^{l}" for l in layers),
         "‖g¹‖²/‖g^L‖² measured", "theory (q-map)", "χ₁^{L−1}"],
        ([name, f"{p['weight_var']:.3f}", f"{p['chi1']:.3f}", f"{p['q_star']:.3f}",
          *(f"{p['q_mean'][l - 1]:.3f} ± {p['q_std'][l - 1]:.3f} ({p['q_theory'][l - 1]:.3f})"
            for l in layers),
          f"{p['g2_ratio_mean'][0]:.3g} ± {p['g2_ratio_std'][0]:.2g}",
          f"{p['g2_ratio_theory'][0]:.3g}", f"{p['g2_ratio_chi1'][0]:.3g}"]
         for name, p in data["phases"].items()))) + "\n"


def propagation_text(data: dict[str, Any]) -> str:
    """The signal-propagation prose, every number from its ``data.json``."""
    depth, width = data["depth"], data["width"]
    ph = data["phases"]
    ordered, critical, chaotic = ph["ordered"], ph["critical"], ph["chaotic"]
    shown = table_layers(depth)
    # how far the measured q^l is from the q-map at the table's layers, worst phase
    off = max(abs(p["q_mean"][l - 1] / p["q_theory"][l - 1] - 1) for p in ph.values()
              for l in shown)
    # first layer at which the q-map is within 5 % of q*, slowest phase
    settle = max(next((l for l, q in enumerate(p["q_theory"], 1)
                       if abs(q / p["q_star"] - 1) < 0.05), depth) for p in ph.values())
    flat = critical["g2_ratio_mean"][1:]   # below layer 1, which reads the raw pixels
    scatter = critical["g2_ratio_std"][1:]
    n_seeds = len(data["seeds"])
    return (
        "Fresh tanh nets (Gaussian weights N(0, σ_w²/fan_in) from `vgjax.model.init_params`, "
        f"σ_b² = {data['bias_var']:g}, width {width}, depth {depth}, {n_seeds} seeds) on the "
        "digits training points, in the ordered (σ_w² = ½ × critical), critical (χ₁ = 1) and "
        "chaotic (2 × critical) phases, at initialisation. Left figure: measured q^l (mean "
        f"h_l² over {data['n_points']} points and the units; mean ± std over seeds) against "
        "the q-map iterated from each point's own q⁰ (q¹ = σ_w² mean(x²) + σ_b², since the "
        "first layer reads the 64 raw pixels). Right figure: each layer's per-point squared "
        "kernel-gradient norm (`Step.loss_and_grads` on batches of one point, "
        f"{data['n_grad']} points) relative to the last hidden layer, against the theory "
        "‖a^{l−1}‖² Π_{k=l}^{L−1} χ(q^k) on the q-trajectory and the plain χ₁^{L−l}. "
        f"**What it shows:** the length map converges to q* within ~{settle} layers in every "
        "phase and the measurement follows it within its seed scatter "
        f"(≤ {math.ceil(100 * off)} % off at every layer shown in the table); gradients shrink "
        f"by χ₁ = {ordered['chi1']:.3g} per layer going down in the ordered phase "
        f"({power_of_ten(ordered['g2_ratio_mean'][0])} across {depth} layers, measured "
        f"{sci(ordered['g2_ratio_mean'][0], 3)} against {sci(ordered['g2_ratio_theory'][0], 3)} "
        f"on the q-trajectory) and grow by χ₁ = {chaotic['chi1']:.3g} in the chaotic one "
        f"({sci(chaotic['g2_ratio_mean'][0], 2)} against {sci(chaotic['g2_ratio_theory'][0], 2)}), "
        "exactly the exponential vanishing/exploding that Schoenholz et al. (2017, Sec. 4 "
        "and Fig. 3) derive and Poole et al. (2016) observe for q^l. χ₁^{L−l} alone "
        "over-predicts layer 1 by the factor of the first layers' transient (q¹ ≠ q*) and "
        "the 64-pixel input (‖x‖² instead of ‖φ(h)‖²); the q-trajectory theory includes "
        "both. At criticality the theory says 'flat'; the measurement below layer 1 is flat "
        f"to within {min(flat):.2f}–{max(flat):.2f} (seed scatter "
        f"±{sum(scatter) / len(scatter):.1f}), "
        f"the finite-width (1/{width}) corrections that accumulate only where nothing is "
        "exponential — the paper's statement is about the exponent, which is 0 here to the "
        "accuracy one can read.")


# ------------------------------------------------------------------------- phase diagram

OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD"}


@dataclass(frozen=True)
class PhaseDiagram(Sweep):
    """Training accuracy over σ_w² x depth (one grid with a σ_w² axis), with the theory's
    6 ξ_c curve and the critical σ_w²; read after the last epoch and after each of
    ``budgets`` (earlier epochs of the same runs: how the boundary moves with training)."""

    figures: tuple[str, ...] = ("phase_diagram.png",)
    budgets: tuple[int, ...] = ()
    # the experiment of the same protocol with other weights whose boundary the section
    # sets beside this one's (read from its summary when present)
    contrast: str = ""

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.phase import write
        return [write(res, ctx.exp_dir, self.name, self.budgets)]

    def section(self, exp_dir: Path) -> list[str]:
        summary = summary_of(exp_dir)
        if summary is None:
            return []
        budgets = (tables_of(exp_dir) or {}).get("budgets", [])
        other = summary_of(exp_dir.parent / self.contrast) if self.contrast else None
        bound = phase_bound(summary, exp_dir)
        text = phase_text(self.name, summary, bound, budgets)
        if other is not None:
            text += " " + contrast_text(self.contrast, summary, other, bound)
        return study_section(self, exp_dir, text, sweep_protocol(summary))


@dataclass(frozen=True)
class PhaseContrast(PhaseDiagram):
    """Part of a :class:`PhaseDiagram`'s grid under the same protocol with other weights
    (``contrast``: the diagram's name, whose section compares the two)."""

    def section(self, exp_dir: Path) -> list[str]:
        summary = summary_of(exp_dir)
        if summary is None:
            return []
        c, g = summary["config"], summary["grid"]
        return study_section(self, exp_dir, (
            f"The σ_w² = {', '.join(f'{w:g}' for w in g['weight_vars'])} columns and depths "
            f"{', '.join(map(str, g['depths']))} of `{self.contrast}` with "
            f"{init_name(c['init'])} weights, everything else the same; the "
            f"`{self.contrast}` section above compares the two boundaries."),
            sweep_protocol(summary))


def _deepest(summary: dict[str, Any]) -> dict[float, int]:
    # σ_w² -> deepest trainable depth after the last epoch, from a summary's groups
    return deepest_trainable((x["weight_var"], x["depth"], x["final_train_accuracy"]["mean"])
                             for x in summary["groups"])


def contrast_text(name: str, summary: dict[str, Any], other: dict[str, Any],
                  bound: dict[float, float]) -> str:
    """The prose setting ``other``'s deepest trainable depths (experiment ``name``: the same
    protocol with other weights, on some of the σ_w²) beside ``summary``'s, from both
    summaries; ``bound``: σ_w² -> 6 ξ_c (:func:`phase_bound`), whose largest marks the σ_w²
    closest to criticality."""
    mine, theirs = _deepest(summary), _deepest(other)
    init, init_other = summary["config"]["init"], other["config"]["init"]
    ws = [w for w in theirs if w in mine]
    near = max(ws, key=lambda w: bound[w])
    first = min(other["grid"]["depths"])
    said = lambda d: str(d) if d else f"none of depths ≥ {first}"  # noqa: E731
    return (
        f"**{init_name(init_other).capitalize()} against "
        f"{init_name(init).lower()} weights:** the same protocol with "
        f"{init_name(init_other)} weights (`{name}`, its own section below) "
        "trains to depth "
        + ", ".join(f"{said(theirs[w])} at σ_w² = {w:g}" for w in ws)
        + ", against " + ", ".join(f"{mine[w]}" for w in ws) + " here. "
        + (_SPREAD.format(width=", ".join(map(str, summary["grid"]["widths"])))
           if (init, init_other) == ("orthogonal", "normal") and mine[near] > theirs[near]
           else ""))


# Why Gaussian nets stop short of orthogonal ones of the same mean field (contrast_text).
_SPREAD = ("The two share the mean field (q*, χ₁ and ξ_c are the same), but the singular "
           "values of a Gaussian net's input–output Jacobian spread with depth faster than an "
           "orthogonal net's (`jacobian-spectra`; Pennington et al. 2017), a finite-width "
           "effect, growing with depth over width, that the mean field does not see: at width "
           "{width} it, not ξ_c, stops the Gaussian nets closest to criticality.")


def phase_bound(summary: dict[str, Any], exp_dir: Path) -> dict[float, float]:
    """σ_w² -> 6 ξ_c of the grid's σ_w²: from the experiment's ``tables.json`` (written with
    its figure), else from the theory (:func:`vgjax.experiments.signal.phase.theory_curve`)."""
    tables = tables_of(exp_dir) or {}
    if "xi_bound" in tables:
        return {float(w): float(b) for w, b in tables["xi_bound"].items()}
    import numpy as np
    from vgjax.experiments.signal.phase import theory_curve
    from vgjax.figures.phase import XI_MULTIPLE
    c, ws = summary["config"], summary["grid"]["weight_vars"]
    tw, xi, _ = theory_curve(c["bias_var"], c["activation"], ws)
    return {float(w): XI_MULTIPLE * float(xi[np.argmin(np.abs(tw - w))]) for w in ws}


def _depths(v: dict) -> str:
    return ", ".join(f"σ_w² = {w:g} ({x.deepest} vs 6 ξ_c = {_xi(x.bound)})"
                     for w, x in v.items())


def _xi(b: float) -> str:
    return "∞" if not math.isfinite(b) else f"{b:.0f}"


def phase_text(name: str, summary: dict[str, Any], bound: dict[float, float],
               budgets=()) -> str:
    """The phase-diagram prose, every measured number from its ``summary.json`` (and 6 ξ_c
    per σ_w², ``bound``, from :func:`phase_bound`; the deepest trainable depth after each
    budget, ``budgets``, from ``tables.json``'s list of ``{"steps", "deepest"}``)."""
    c, g = summary["config"], summary["grid"]
    cfg = Config.from_dict(c)
    steps = c["epochs"] * cfg.steps_per_epoch
    depths = sorted(g["depths"])
    deepest = _deepest(summary)
    v = verdicts(deepest, depths, {w: bound[w] for w in deepest})
    crit = min(deepest, key=lambda w: -bound[w] if math.isfinite(bound[w]) else -math.inf)
    flanks = {w: x for w, x in v.items() if w != crit}
    by = {how: {w: x for w, x in v.items() if x.how == how} for how in ("follows", "short",
                                                                        "beyond")}
    seeds = len(g["seeds"])
    engine = summary.get("versions", {}).get("engine", "")
    near = v[crit]
    peak = max(x.deepest for x in flanks.values()) if flanks else 0
    parts = [
        f"Final training accuracy over σ_w² × depth for {c['activation']} nets with σ_b² = "
        f"{c['bias_var']:g} ({init_name(c['init'])} weights of variance "
        f"σ_w²/fan_in, width {', '.join(map(str, g['widths']))}), the analogue of "
        "Schoenholz et al. 2017's Fig. 5, with their 6 ξ_c curve (white; dashed: "
        "3 ξ_c) and the critical σ_w² drawn from `vgjax.theory`. One grid, one compiled "
        f"program{f' (the {engine} engine)' if engine else ''}. A cell trains when its "
        f"seed-mean final training accuracy is ≥ {TRAINS} (chance: 0.10). **What it shows:** "
        f"closest to criticality (σ_w² = {crit:g}, 6 ξ_c = {_xi(near.bound)}) nets train to "
        f"depth {near.deepest}"
        + (f" but not {near.next_depth}" if near.next_depth else " (the grid's deepest)")
        + f"; on the flanks the deepest trainable depth is at most {peak}. "]
    if by["follows"]:
        parts.append("The measured boundary follows 6 ξ_c (6 ξ_c lies between the deepest "
                     "depth that trains and the next one of the grid, or beyond the grid "
                     "whose deepest depth trains) at "
                     f"{_depths(by['follows'])}. ")
    if by["short"]:
        parts.append("It falls short of 6 ξ_c at "
                     f"{_depths(by['short'])}: there a net shallower than 6 ξ_c did not "
                     f"reach {TRAINS} within the budget of {steps} steps — the budget (or "
                     "the step size, which deep nets need small), not ξ_c, is the boundary. ")
    if by["beyond"]:
        parts.append(f"Nets deeper than 6 ξ_c trained at {_depths(by['beyond'])}. ")
    parts.append(_budget_text(budgets, crit, bound, by["beyond"], depths))
    parts.append(
        "Schoenholz et al. state 6 ξ_c as the limit at long training, and report that nets "
        "near criticality need many steps. **How it differs from the paper:** MNIST there "
        "(50 000+ images of 784 pixels, SGD/RMSProp for thousands of steps, depths to 300, "
        "Gaussian weights, wider nets); here scikit-learn's digits (the "
        f"first {c['n_train']} of 8 × 8 images to train, {c['n_samples'] - c['n_train']} to "
        f"test), width {', '.join(map(str, g['widths']))}, depths {depths[0]}–{depths[-1]}, "
        f"{init_name(c['init'])} weights, "
        f"{steps} {OPTIMIZER_NAMES.get(c['optimizer'], c['optimizer'])} steps ({c['epochs']} "
        f"epochs, batch {c['batch_size']}, lr {c['lr']:g}: Adam trained deep nets where "
        "Keras SGD with momentum did not in pilot runs, and larger rates destabilised depth "
        f"≥ 100), {'one seed' if seeds == 1 else f'{seeds} seeds'} — sized for the signal "
        "group's 15-minute target on a 2-core CPU (this run's time: the protocol line "
        f"below); `vgjax run {name} --epochs N` trains longer.")
    return "".join(parts)


def _budget_text(budgets, crit: float, bound: dict[float, float], beyond: dict,
                 depths: list[int]) -> str:
    # How the deepest trainable depth moved between the budgets the diagram was read at.
    if len(budgets) < 2:
        return ""
    deepest_depth = depths[-1]
    steps = [b["steps"] for b in budgets]
    paths = {float(w): [b["deepest"][w] for b in budgets] for w in budgets[-1]["deepest"]}
    moved = {w: p for w, p in paths.items() if len(set(p)) > 1}
    still = [w for w in paths if w not in moved]
    arrow = lambda p: " → ".join(map(str, p))  # noqa: E731
    text = (f"Read after {', '.join(map(str, steps[:-1]))} and {steps[-1]} steps (the same "
            "runs' per-epoch accuracy, one panel each), ")
    if moved:
        text += ("the deepest trainable depth moved at "
                 + ", ".join(f"σ_w² = {w:g} ({arrow(p)})" for w, p in moved.items()))
        text += (f" and stayed at {', '.join(f'σ_w² = {w:g} ({paths[w][-1]})' for w in still)}"
                 if still else "") + ". "
    else:
        text += "the deepest trainable depth did not move at any σ_w². "
    if any(w < crit for w in beyond):
        ordered = {float(w): d for w, d in budgets[0]["deepest"].items() if float(w) < crit}
        early = verdicts(ordered, depths, bound)
        followed = {w: x for w, x in early.items() if x.how == "follows"}
        text += ("On the ordered side, where the bound is the depth over which gradients "
                 "vanish (there ξ_c = −1/ln χ₁), Adam trains past 6 ξ_c as the budget grows"
                 + (f" (after {steps[0]} steps the boundary still followed it at "
                    f"{_depths(followed)})" if followed else "")
                 + ": its per-parameter step does not shrink with the gradient, so a "
                 "vanishing gradient slows training instead of stopping it. ")
    near = paths[crit]
    if near[-1] == deepest_depth:
        first = next(s for s, d in zip(steps, near) if d == deepest_depth)
        text += (f"Closest to criticality the grid's deepest nets ({deepest_depth} layers) "
                 f"trained from {first} steps on; 6 ξ_c there is {_xi(bound[crit])}. ")
    elif near[-1] == near[-2]:
        text += (f"Closest to criticality it stayed at {near[-1]} from {steps[-2]} to "
                 f"{steps[-1]} steps")
        if all(p[-1] < deepest_depth for p in paths.values()):
            text += f", and depth {deepest_depth} trained at no σ_w² within any budget"
        text += (f", though 6 ξ_c there is {_xi(bound[crit])}: near criticality the budget, "
                 "not ξ_c, is the boundary. ")
    return text
