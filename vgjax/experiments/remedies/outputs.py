"""Files and report sections of the remedies group, host-side: figures and tables from an
experiment's ``data.json``, and Markdown rendered only from ``data.json`` / ``tables.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vgjax.figures import save_png
from vgjax.io.tables import read_tables, write_tables

# The targets the report checks: |drift per layer| small against the per-layer spread (we call a
# tenth small), the walk's variance within 10 % of the theory for linear nets at N = 30,
# 100; BatchNorm growth within 5 % of the rate (ReLU: batch >= 256, width >= 512; linear:
# B = 8, 16, 64).
DRIFT_SMALL = 0.1
VAR_RTOL = 0.10
VAR_TARGET_WIDTHS = (30, 100)
BN_RTOL = 0.05
BN_LINEAR_TARGET_BATCHES = (8, 16, 64)
BN_RELU_TARGET = (256, 512)     # batch >= 256 at width >= 512


def read_data(exp_dir: Path) -> dict:
    """An experiment's ``data.json``; one-line ValueError when absent or unreadable."""
    path = Path(exp_dir) / "data.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"report: {str(path)!r} is not readable JSON "
                         f"({type(e).__name__})") from None


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


# ----------------------------------------------------------------------------- random walk

def walk_verdicts(case: dict) -> dict:
    """Whether one random-walk case meets the issue's targets (variance: linear nets at
    N = 30, 100 only; None where no target applies)."""
    small = abs(case["drift_per_layer"]) <= DRIFT_SMALL * case["step_std_theory"]
    var_ok = None
    if case["activation"] == "linear" and case["width"] in VAR_TARGET_WIDTHS:
        var_ok = abs(case["var_ratio"] - 1.0) <= VAR_RTOL
    return {"drift_small": bool(small), "var_within_10pct": var_ok}


def walk_table(data: dict) -> str:
    """The random-walk table (Markdown) from ``data.json``."""
    rows = ["| φ | N | gain g | nets (alive) | drift/layer ± s.e. | theory | "
            "step std (theory) | Var ln‖δ₁‖ ± s.e. | theory | ratio | targets |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in data["cases"]:
        v = walk_verdicts(c)
        marks = ["drift ✓" if v["drift_small"] else "drift ✗"]
        if v["var_within_10pct"] is not None:
            marks.append("var ✓" if v["var_within_10pct"] else "var ✗")
        rows.append(
            f"| {c['activation']} | {c['width']} | {c['gain']:.4f} | {c['seeds']} "
            f"({c['alive']}) | {c['drift_per_layer']:.2e} ± {c['drift_se']:.1e} | "
            f"{c['drift_theory']:.2e} | {c['step_std_theory']:.3f} | {c['var']:.3g} ± "
            f"{c['var_se']:.2g} | {c['var_theory']:.3g} | {c['var_ratio']:.3f} | "
            f"{', '.join(marks)} |")
    return "\n".join(rows)


def make_walk_figure(data: dict) -> Figure:
    """Mean ± std of ln‖δ_l‖ − ln‖δ_top‖ against layers back from the top, per activation
    (rows) and width (columns), with the theory's mean and ±1 std lines."""
    acts = sorted({c["activation"] for c in data["cases"]}, key=["linear", "relu"].index)
    widths = sorted({c["width"] for c in data["cases"]})
    fig = Figure(figsize=(4.2 * len(widths), 3.3 * len(acts)))
    axes = fig.subplots(len(acts), len(widths), squeeze=False)
    for c in data["cases"]:
        ax = axes[acts.index(c["activation"])][widths.index(c["width"])]
        mean = np.asarray(c["mean_by_layer"])[::-1]
        std = np.sqrt(np.asarray(c["var_by_layer"])[::-1])
        back = np.arange(mean.size)
        ax.fill_between(back, mean - std, mean + std, alpha=0.3, label="measured ± std")
        ax.plot(back, mean, lw=1.5)
        t_mean = back * c["drift_theory"]
        t_std = np.sqrt(back) * c["step_std_theory"]
        ax.plot(back, t_mean, "k--", lw=1, label="theory mean")
        ax.plot(back, t_mean + t_std, "k:", lw=1, label="theory ± std")
        ax.plot(back, t_mean - t_std, "k:", lw=1)
        ax.set_title(f"{c['activation']}, N = {c['width']}, g = {c['gain']:.3f}", fontsize=9)
        ax.set_xlabel("layers back from the top")
        ax.set_ylabel("ln‖δ_l‖ − ln‖δ_top‖")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Random-walk init: ln‖δ‖ at initialisation, depth {data['depth']}, "
                 f"{data['seeds']} nets", fontsize=10)
    fig.tight_layout()
    return fig


def make_variance_figure(data: dict) -> Figure:
    """Variance of the walk against layers back from the top, with steps x ψ′-theory."""
    acts = sorted({c["activation"] for c in data["cases"]}, key=["linear", "relu"].index)
    fig = Figure(figsize=(5.0 * len(acts), 3.6))
    axes = fig.subplots(1, len(acts), squeeze=False)[0]
    for c in data["cases"]:
        ax = axes[acts.index(c["activation"])]
        var = np.asarray(c["var_by_layer"])[::-1]
        back = np.arange(var.size)
        line, = ax.plot(back, var, lw=1.5, label=f"N = {c['width']}")
        ax.plot(back, back * c["step_std_theory"] ** 2, "--", color=line.get_color(), lw=1)
        ax.set_title(f"{c['activation']}: variance (dashed: theory)", fontsize=9)
        ax.set_xlabel("layers back from the top")
        ax.set_ylabel("Var ln‖δ_l‖")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_walk(exp_dir: Path, data: dict) -> list[Path]:
    """random-walk's figures and ``tables.json`` from its data."""
    rows = [{k: v for k, v in c.items() if not k.endswith("_by_layer")} | walk_verdicts(c)
            for c in data["cases"]]
    return [save_png(make_walk_figure(data), exp_dir / "walk.png"),
            save_png(make_variance_figure(data), exp_dir / "variance.png"),
            write_tables(exp_dir, {"markdown": walk_table(data), "rows": rows})]


def walk_section(exp_dir: Path) -> list[str]:
    """The random-walk report section, from ``data.json`` and ``tables.json``."""
    data, tables = read_data(exp_dir), read_tables(Path(exp_dir) / "tables.json") or {}
    name = Path(exp_dir).name
    rows = tables.get("rows", [])
    lin = [r for r in rows if r["activation"] == "linear" and r["width"] in VAR_TARGET_WIDTHS]
    relu10 = [r for r in rows if r["activation"] == "relu" and r["width"] == 10]
    worst_drift = max((abs(r["drift_per_layer"]) / r["step_std_theory"] for r in rows),
                      default=float("nan"))
    lines = [
        "### Random-walk initialisation: ln‖δ_l‖ at initialisation (`random-walk`)", "",
        f"Linear and ReLU nets of depth {data['depth']} and widths "
        f"{', '.join(str(w) for w in sorted({c['width'] for c in data['cases']}))}, kernels "
        "N(0, g²/N) with Sussillo & Abbott's gain (`vgjax.model.random_walk_gain`), zero "
        f"biases, {data['seeds']} nets each: the log-norm of a random direction "
        "backpropagated from the top layer, ln‖δ_l‖ − ln‖δ_top‖. Theory "
        "(`vgjax.theory.random_walk_step`): each layer adds ½ ln(g² χ²_N / N), so the walk's "
        "variance after s steps is s·ψ′(N/2)/4 and g = exp(1/(2N)) leaves a drift of "
        "−1/(6N²) per layer; for ReLU, χ²_K with K ~ Binomial(N, ½) active units under "
        "gradient independence.", "",
        "**What it shows:** "
        + ("the walk is unbiased" if worst_drift <= DRIFT_SMALL else "the walk drifts")
        + f": the largest |mean drift per layer| is {worst_drift:.3f} of the per-layer "
        "spread"
        + (", and the linear nets' variance is "
           + ", ".join(f"{r['var_ratio']:.3f}× the theory at N = {r['width']}" for r in lin)
           if lin else "")
        + " (target: within 10 %, " + ("met" if lin and all(r["var_within_10pct"] for r in lin)
                                       else "not met") + "). ReLU's variance is larger than "
        "linear's at the same N (fewer active units per layer), as the binomial theory says."
        + (f" At N = 10, {relu10[0]['dead_share']:.1%} of ReLU nets had a layer with no "
           f"active unit (theory {relu10[0]['dead_share_theory']:.1%}), which zeroes the "
           "gradient; they are left out." if relu10 else ""), "",
        "**Where it departs from the paper:** Sussillo & Abbott show single walks and the "
        "depth/(2N) variance of the large-N limit; this measures thousands of nets against "
        "the exact finite-N law (ψ′(N/2)/4 → 1/(2N)). Their ReLU gain is a fit; here the "
        "drift it leaves is set beside the binomial theory's. tanh (g = 1.13, no formula) "
        "is not run. Layers are numbered from the input; the walk starts at the top "
        f"({data['depth'] - 1} steps reach layer 1).", "",
        tables.get("markdown", ""), "",
        f"![random walks]({name}/walk.png)", "",
        f"![variance]({name}/variance.png)", "",
    ]
    return lines


# ----------------------------------------------------------------------------- batchnorm

def bn_verdict(case: dict) -> bool | None:
    """Whether one BatchNorm case meets its 5 % target (None where none applies)."""
    if case["activation"] == "linear" and case["batch"] in BN_LINEAR_TARGET_BATCHES:
        return abs(case["rel_error"]) <= BN_RTOL
    if case["activation"] == "relu" and case["batch"] >= BN_RELU_TARGET[0] \
            and case["width"] >= BN_RELU_TARGET[1]:
        return abs(case["rel_error"]) <= BN_RTOL
    return None


def bn_table(data: dict) -> str:
    """The batchnorm-explosion table (Markdown) from ``data.json``."""
    rows = ["| φ | batch B | measured growth ± s.e. | theory | rel. error | 5 % target |",
            "|---|---|---|---|---|---|"]
    for c in data["cases"]:
        v = bn_verdict(c)
        theory = ("π/(π−1) = " if c["activation"] == "relu" else "(B−2)/(B−3) = ") \
            + f"{c['theory']:.4f}"
        rows.append(f"| {c['activation']} | {c['batch']} | {c['growth']:.4f} ± "
                    f"{_fmt(c['growth_se'], 2)} | {theory} | {c['rel_error']:+.1%} | "
                    f"{'–' if v is None else ('✓' if v else '✗')} |")
    return "\n".join(rows)


def make_bn_growth(data: dict) -> Figure:
    """Measured per-layer growth against the batch size, with Yang et al.'s rates."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for act, marker in (("relu", "o"), ("linear", "s")):
        cs = [c for c in data["cases"] if c["activation"] == act]
        if not cs:
            continue
        b = np.array([c["batch"] for c in cs])
        ax.errorbar(b, [c["growth"] for c in cs],
                    yerr=[c["growth_se"] or 0.0 for c in cs], fmt=marker, label=f"{act}: measured")
    bb = np.geomspace(4, 512, 200)
    ax.plot(bb, (bb - 2) / (bb - 3), "k--", lw=1, label="linear: (B−2)/(B−3)")
    ax.axhline(math.pi / (math.pi - 1), color="k", ls=":", lw=1, label="ReLU: π/(π−1)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("growth of ‖∂L/∂W_l‖² per layer (going back)")
    ax.set_title(f"BatchNorm at initialisation, width {data['width']}, depth {data['depth']}",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def make_bn_profiles(data: dict) -> Figure:
    """Mean ln‖∂L/∂W_l‖² against the layer, per activation and batch size."""
    acts = [a for a in ("relu", "linear") if any(c["activation"] == a for c in data["cases"])]
    fig = Figure(figsize=(5.0 * len(acts), 3.6))
    axes = fig.subplots(1, len(acts), squeeze=False)[0]
    for c in data["cases"]:
        ax = axes[acts.index(c["activation"])]
        y = np.asarray(c["log_norm_by_layer"]) / math.log(10.0)
        ax.plot(np.arange(1, y.size + 1), y, lw=1.2, label=f"B = {c['batch']}")
        ax.set_title(f"{c['activation']}: log10 ‖∂L/∂W_l‖²", fontsize=9)
        ax.set_xlabel("layer l (the loss reads layer %d)" % y.size)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def write_bn(exp_dir: Path, data: dict) -> list[Path]:
    """batchnorm-explosion's figures and ``tables.json`` from its data."""
    rows = [{k: v for k, v in c.items() if k not in ("log_norm_by_layer", "growth_by_seed")}
            | {"within_5pct": bn_verdict(c)} for c in data["cases"]]
    return [save_png(make_bn_growth(data), exp_dir / "growth.png"),
            save_png(make_bn_profiles(data), exp_dir / "profiles.png"),
            write_tables(exp_dir, {"markdown": bn_table(data), "rows": rows})]


def bn_section(exp_dir: Path) -> list[str]:
    """The batchnorm-explosion report section, from ``data.json`` and ``tables.json``."""
    data, tables = read_data(exp_dir), read_tables(Path(exp_dir) / "tables.json") or {}
    name = Path(exp_dir).name
    targeted = [r for r in tables.get("rows", []) if r["within_5pct"] is not None]
    met = sum(bool(r["within_5pct"]) for r in targeted)
    worst = max((abs(r["rel_error"]) for r in targeted), default=float("nan"))
    return [
        "### BatchNorm explodes gradients at initialisation (`batchnorm-explosion`)", "",
        f"Nets h_l = φ(BN(h_{{l−1}} W_l)) of width {data['width']} and depth "
        f"{data['depth']} (Gaussian kernels, no biases, BatchNorm on batch statistics with "
        f"γ = 1, β = 0, ε = {data['eps']:g}), {data['seeds']} nets per case, a random "
        "linear loss on the top layer. Measured: the per-layer growth of ‖∂L/∂W_l‖² going "
        "back from the loss (exp of minus the slope of ln‖∂L/∂W_l‖² against l, over layers "
        f"{data['trim'][0] + 1}–{data['depth'] - data['trim'][1]}). Theory (Yang et al. "
        "2019; `vgjax.theory.BATCHNORM_RELU_GROWTH`, `batchnorm_growth_linear`): π/(π−1) ≈ "
        "1.467 for ReLU at a large batch, (B−2)/(B−3) for linear units, whatever σ_w².", "",
        f"**What it shows:** {met} of the {len(targeted)} targeted cases are within 5 % of "
        f"the rate (largest error {worst:.1%}): BatchNorm does not cure exploding gradients "
        "at initialisation, it causes them, at a rate set by the batch size and φ only. "
        "Small batches explode faster (ReLU's rate falls towards π/(π−1) as B grows).", "",
        "**Where it departs from the paper:** Yang et al. derive the rates for infinite "
        "width and state them for ‖∂L/∂W_l‖²; finite width and the fitted layer range add "
        "a little scatter (the standard error over nets is in the table). ReLU at small "
        "batches has no closed form here; only its large-batch limit is drawn.", "",
        tables.get("markdown", ""), "",
        f"![growth per layer]({name}/growth.png)", "",
        f"![gradient profiles]({name}/profiles.png)", "",
    ]


# ----------------------------------------------------------------------------- architectures

def _sweeps_of(data: dict, family: str) -> list[dict]:
    return [s for s in data["sweeps"] if s["family"] == family]


def _ratio(case: dict) -> str:
    """log10 of layer 1's gradient norm over the output's, or why there is none."""
    if case.get("vanished"):
        return "−∞ (layer 1: 0)"
    if case["log10_first_over_output"] is None and case["diverged"] > 0:
        return f"– ({case['diverged']} of {case['seeds']} diverged)"
    return _fmt(case["log10_first_over_output"])


def arch_table(data: dict) -> str:
    """The architectures table (Markdown): per family and architecture, the share of seeds
    that learn at each depth, and log10 of layer 1's first-epoch gradient norm over the
    output layer's at the deepest depth."""
    depths = data["depths"]
    deep = depths[-1]
    rows = [f"| nets | {data.get('setting', 'architecture')} | "
            + " | ".join(f"learn, L = {d}" for d in depths)
            + f" | log10 ‖∂L/∂W₁‖/‖∂L/∂W_out‖, L = {deep} |",
            "|---|---|" + "---|" * (len(depths) + 1)]
    for fam in data["families"]:
        for s in _sweeps_of(data, fam["key"]):
            by_depth = {c["depth"]: c for c in s["cases"]}
            shares = [f"{by_depth[d]['share_learn']:.2f}" for d in depths]
            rows.append(f"| {fam['label']} | {s['label']} | " + " | ".join(shares)
                        + f" | {_ratio(by_depth[deep])} |")
    return "\n".join(rows)


def make_learn_figure(data: dict) -> Figure:
    """Share of seeds that learn against depth, a panel per family, a line per
    architecture."""
    fams = data["families"]
    fig = Figure(figsize=(5.2 * len(fams), 3.8))
    axes = fig.subplots(1, len(fams), squeeze=False)[0]
    for ax, fam in zip(axes, fams):
        for s in _sweeps_of(data, fam["key"]):
            ax.plot([c["depth"] for c in s["cases"]], [c["share_learn"] for c in s["cases"]],
                    "o-", lw=1.2, label=s["label"])
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("depth L (hidden layers)")
        ax.set_ylabel(f"share of seeds with test accuracy ≥ {data['learn_threshold']:g}")
        ax.set_title(f"{fam['label']}, width {data['width']}", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Which architectures train deep nets ({data['optimizer']} lr {data['lr']:g}, "
                 f"{data['epochs']} epochs, {data['seeds']} seeds, circles)", fontsize=10)
    fig.tight_layout()
    return fig


def make_profiles_figure(data: dict) -> Figure:
    """First-epoch gradient norm per layer at the deepest depth (top row) and log10 of
    layer 1's over the output's against depth (bottom row), per family and architecture."""
    fams = data["families"]
    deep = data["depths"][-1]
    fig = Figure(figsize=(5.2 * len(fams), 7.0))
    axes = fig.subplots(2, len(fams), squeeze=False)
    for j, fam in enumerate(fams):
        top, bottom = axes[0][j], axes[1][j]
        for s in _sweeps_of(data, fam["key"]):
            case = next(c for c in s["cases"] if c["depth"] == deep)
            prof = np.array([np.nan if v is None else v for v in case["grad_profile"]])
            line, = top.plot(np.arange(1, prof.size + 1), prof, lw=1.2, label=s["label"])
            ratios = [(c["depth"], c["log10_first_over_output"]) for c in s["cases"]
                      if c["log10_first_over_output"] is not None]
            if ratios:
                bottom.plot(*zip(*ratios), "o-", lw=1.2, color=line.get_color())
        top.set_yscale("log")
        top.set_xlabel(f"layer (1 = input side; {deep + 1} = output)")
        top.set_ylabel("‖∂L/∂W_l‖, first epoch")
        top.set_title(f"{fam['label']}: depth {deep}", fontsize=10)
        bottom.axhline(0.0, color="k", lw=0.8)
        bottom.set_xscale("log")
        bottom.set_xlabel("depth L")
        bottom.set_ylabel("log10 ‖∂L/∂W₁‖ / ‖∂L/∂W_out‖")
        bottom.set_title("< 0: vanishing towards the input, > 0: exploding", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_architectures(exp_dir: Path, data: dict) -> list[Path]:
    """architectures' figures and ``tables.json`` from its data."""
    rows = [{k: v for k, v in s.items() if k != "cases"}
            | {"cases": [{k: v for k, v in c.items() if k != "grad_profile"}
                         for c in s["cases"]]} for s in data["sweeps"]]
    return [save_png(make_learn_figure(data), exp_dir / "learn.png"),
            save_png(make_profiles_figure(data), exp_dir / "profiles.png"),
            write_tables(exp_dir, {"markdown": arch_table(data), "rows": rows})]


def _rows_of(tables: dict, family: str) -> dict[str, dict]:
    """architecture key -> its tables.json row, for one family."""
    return {r["architecture"]: r for r in tables.get("rows", []) if r["family"] == family}


def _case(row: dict | None, depth: int) -> dict | None:
    return None if row is None else next((c for c in row["cases"] if c["depth"] == depth), None)


def _learn_text(rows: dict[str, dict], depth: int) -> str:
    """'X (share), Y (share) learn at depth L; not Z' for one family, from tables.json."""
    good, bad = [], []
    for row in rows.values():
        case = _case(row, depth)
        if case is not None:
            (good if case["share_learn"] >= 0.5 else bad).append(
                f"{row['label']} ({case['share_learn']:.2f})")
    return ((f"{', '.join(good)} learn" if good else "no architecture has most seeds "
             "learning") + (f"; {', '.join(bad)} do not" if bad else ""))


def _gradient_text(rows: dict[str, dict], depth: int) -> str:
    """What the first-epoch profiles say at ``depth``: plain vs BatchNorm vs BatchNorm +
    residual vs ReZero, as log10 of layer 1's gradient over the output's."""
    parts = []
    for key, what in (("plain", "plain"), ("batchnorm", "BatchNorm"),
                      ("batchnorm-res1", "BatchNorm + residual"), ("rezero", "ReZero")):
        case = _case(rows.get(key), depth)
        if case is not None:
            parts.append(f"{what} {_ratio(case)}")
    return ", ".join(parts)


def _verdicts(tables: dict, depths: list[int]) -> str:
    """Sentences on the gradient profiles that hold in every family of ``tables.json``:
    BatchNorm alone explodes towards the input (log10 ratio > 1 at the deepest depth), a
    residual around it stays within a factor 10, ReZero within a factor 10 at every
    depth."""
    deep = depths[-1]
    rows = [r for r in tables.get("rows", [])]
    by = lambda key: [r for r in rows if r["architecture"] == key]
    ratio = lambda r, d: (_case(r, d) or {}).get("log10_first_over_output")
    out = []
    grow = [r["family_label"] for r in by("batchnorm")
            if (ratio(r, deep) or 0.0) > 1]
    if grow:
        out.append(f" In the {' and '.join(grow)} nets BatchNorm alone makes the gradient "
                   "grow towards the input, as `batchnorm-explosion` measures at "
                   "initialisation.")
    bn_res = [ratio(r, deep) for r in by("batchnorm-res1")]
    if bn_res and all(v is not None and abs(v) < 1 for v in bn_res):
        out.append(" With a residual connection around the normalised branch the first "
                   "layer's gradient stays within a factor 10 of the output's.")
    rz = [ratio(r, d) for r in by("rezero") for d in depths]
    if rz and all(v is not None and abs(v) < 1 for v in rz):
        out.append(" ReZero, whose blocks start as identities, stays within a factor 10 at "
                   "every depth.")
    return "".join(out)


def architectures_section(exp_dir: Path) -> list[str]:
    """The architectures report section, from ``data.json`` and ``tables.json``."""
    data, tables = read_data(exp_dir), read_tables(Path(exp_dir) / "tables.json") or {}
    name = Path(exp_dir).name
    deep = data["depths"][-1]
    fams = ", ".join(f"{f['label']} ({f['activation']}, {f['init']} kernels, output "
                     f"{f['output_init']})" for f in data["families"])
    shows, grads = [], []
    for fam in data["families"]:
        rows = _rows_of(tables, fam["key"])
        shows.append(f"{fam['label']} at depth {deep}: {_learn_text(rows, deep)}")
        grads.append(f"{fam['label']}: {_gradient_text(rows, deep)}")
    minutes = data.get("seconds", float("nan")) / 60.0
    return [
        "### Residual connections and normalisation against depth (`architectures`)", "",
        f"Nets of width {data['width']} and depths {', '.join(map(str, data['depths']))} on "
        f"the circles, {data['seeds']} seeds each: {fams}. Architectures "
        "(`--residual`, `--norm`): every hidden layer after the input projection is a "
        "block h + α·φ(Norm(W h + b)) (F = one Dense, the normalisation, the activation), "
        "with α = 1, 1/√L or ReZero's learnable α from 0; LayerNorm / BatchNorm (Keras's "
        "momentum 0.99, ε = 1e-3; running averages for evaluation) on the pre-activations. "
        f"**Training budget:** {data['optimizer']} (lr {data['lr']:g}) for {data['epochs']} "
        f"epochs of batch 32, not the tutorial's SGD for 500, so that the "
        f"{len(data['sweeps'])} sweeps (one per family and architecture, on the wide "
        f"engine) ran in {minutes:.1f} minutes on a 2-core CPU. A seed learns when its final test accuracy is ≥ "
        f"{data['learn_threshold']:g} and it did not diverge. The gradient profile is the "
        "first epoch's mean ‖∂L/∂W_l‖ per layer (near initialisation), the seeds' median.",
        "",
        "**What it shows:** share of seeds that learn, " + "; ".join(shows) + ". In the "
        f"first epoch at depth {deep}, log10 of layer 1's gradient norm over the output "
        "layer's is " + "; ".join(grads) + " (0: a flat profile; −∞: the gradient "
        "underflowed to 0 before reaching layer 1)." + _verdicts(tables, data["depths"]),
        "",
        "**Where it departs from the papers:** Yang & Schoenholz (2017) and Yang et al. "
        "(2019) are mean-field statements at initialisation for infinite width (residual "
        "nets: polynomial rather than exponential growth of the gradient with depth; "
        "BatchNorm: a gradient explosion by a constant factor per layer, see "
        "`batchnorm-explosion`); here nets of "
        f"{data['width']} units are trained briefly, and the measure is whether a seed "
        "learns, so finite width and the optimizer (Adam rescales each parameter's step, "
        "which hides much of a gradient's scale) take part. ReZero (Bachlechner et al. "
        "2020) is reported on Transformers and deep fully connected nets with its α on "
        "the whole residual branch, as here, but without normalisation inside the branch "
        "and at far larger widths.", "",
        tables.get("markdown", ""), "",
        f"![share that learns]({name}/learn.png)", "",
        f"![gradient profiles]({name}/profiles.png)", "",
    ]


def walk_training_section(exp_dir: Path) -> list[str]:
    """The random-walk-training report section, from ``data.json`` and ``tables.json``."""
    data, tables = read_data(exp_dir), read_tables(Path(exp_dir) / "tables.json") or {}
    name = Path(exp_dir).name
    deep = data["depths"][-1]
    shows, flatter = [], []
    for fam in data["families"]:
        rows = _rows_of(tables, fam["key"])
        parts = [f"{r['label']} {c['share_learn']:.2f} (log10 ratio {_ratio(c)})"
                 for r in rows.values() if (c := _case(r, deep)) is not None]
        shows.append(f"{fam['label']}: " + ", ".join(parts))
        walk = _case(rows.get("random_walk"), deep)
        other = [_case(r, deep) for k, r in rows.items() if k != "random_walk"]
        if walk and walk["log10_first_over_output"] is not None and all(
                c and (c.get("vanished") or (c["log10_first_over_output"] is not None and
                       abs(c["log10_first_over_output"]) > abs(walk["log10_first_over_output"])))
                for c in other):
            flatter.append(fam["label"])
    minutes = data.get("seconds", float("nan")) / 60.0
    return [
        "### Random-walk initialisation, trained (`random-walk-training`)", "",
        f"Nets of width {data['width']} and depths {', '.join(map(str, data['depths']))} "
        f"on the circles, {data['seeds']} seeds each, per activation two sweeps: "
        "`init=\"random_walk\"` (Sussillo & Abbott's gain, every layer) and the usual "
        "initialiser (Glorot for linear and tanh, He for ReLU, every layer). **Training "
        f"budget:** {data['optimizer']} (lr {data['lr']:g}) for {data['epochs']} epochs of "
        f"batch 32; the {len(data['sweeps'])} sweeps ran in {minutes:.1f} minutes on a "
        "2-core CPU. A seed learns when its final test accuracy is ≥ "
        f"{data['learn_threshold']:g}; linear nets cannot separate the circles, so only "
        "their gradient profile says something.", "",
        f"**What it shows:** the share of seeds that learn at depth {deep} and log10 of "
        "layer 1's first-epoch gradient norm over the output layer's: " + "; ".join(shows)
        + "." + (f" Random-walk initialisation keeps layer 1's gradient closer to the "
                 f"output's than the usual initialiser in the {', '.join(flatter)} nets."
                 if flatter else ""), "",
        "**Where it departs from the paper:** Sussillo & Abbott train with plain SGD (and a "
        "tuned learning rate per depth) on MNIST and TIMIT at width 100 and more, for many "
        "epochs; here the circles, a narrow width and a short Adam budget, which rescales "
        "each parameter's step and so hides part of the initial gradient's scale.", "",
        tables.get("markdown", ""), "",
        f"![share that learns]({name}/learn.png)", "",
        f"![gradient profiles]({name}/profiles.png)", "",
    ]
