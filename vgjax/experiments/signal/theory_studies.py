"""The ``theory`` and ``jacobian-spectra`` studies: mean-field curves, the order-to-chaos line
and input-output Jacobian spectra of random nets at initialisation (no training).

Each study is a ``compute_*`` function (arrays and small tables, on the device) and a
``make_*`` function (a matplotlib Figure, host-side); :func:`write_all` writes both studies'
PNGs and JSON/markdown tables (``vgjax theory --figures OUT``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from vgjax import probes
from vgjax.model import init_params
from vgjax.io.tables import markdown_table, write_tables
from vgjax import theory as th
from vgjax.io.store import atomic_write_text
from vgjax.figures import save_png

# (label, activation, σ_b²) of the mean-field curves: Poole et al.'s tanh at two bias
# variances, and ReLU, whose q* is finite only below σ_w² = 2.
CURVES = (("tanh, σ_b² = 0", "tanh", 0.0), ("tanh, σ_b² = 0.05", "tanh", 0.05),
          ("ReLU, σ_b² = 0.05", "relu", 0.05))
WEIGHT_VARS = np.round(np.linspace(0.5, 4.0, 71), 4)
PLANE_W = np.round(np.linspace(0.5, 5.0, 46), 4)
PLANE_B = np.round(np.linspace(0.0, 0.5, 26), 4)

SPECTRA_DEPTHS = (4, 16, 64)
SPECTRA_WIDTH = 128
SCHEMES = ("gaussian", "orthogonal")
SCHEME_INITS = {"gaussian": "normal", "orthogonal": "orthogonal"}   # vgjax.model's names
# (label, activation, σ_b²) at criticality: tanh with a small q* (Pennington et al.'s regime,
# σ_b² = 1e-5 gives q* ≈ 0.02) and with Schoenholz et al.'s σ_b² = 0.05 (q* ≈ 0.57); ReLU at
# σ_w² = 2 and linear at σ_w² = 1 (σ_b² = 0, where their q* is marginal, not divergent).
SPECTRA_CASES = (("tanh, q* ≈ 0.02", "tanh", 1e-5), ("tanh, σ_b² = 0.05", "tanh", 0.05),
                 ("ReLU", "relu", 0.0), ("linear", "linear", 0.0))
OFF_CRITICAL = (0.7, 1.4)   # σ_w² multiples of the critical value for the mean-σ² check
# float32 resolves singular values only down to ~1e-7 σ_max (rounding of J itself and of the
# SVD): smaller ones, and the exact zeros of rank-deficient ReLU Jacobians, are counted as
# "below the float32 floor" instead of being drawn at a spurious ~1e-7 peak.
SIGMA_FLOOR = 1e-6


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def compute_theory() -> dict:
    """Mean-field curves over :data:`WEIGHT_VARS` per :data:`CURVES`, and tanh's χ₁ over the
    (σ_w², σ_b²) plane with the critical line σ_w²(σ_b²). Plain lists (JSON-able)."""
    out = {"weight_vars": WEIGHT_VARS.tolist(), "curves": {}}
    for label, act, b in CURVES:
        g = th.phase_grid(WEIGHT_VARS, [b], act)
        out["curves"][label] = {"activation": act, "bias_var": b,
                                **{k: [_finite(v) for v in np.asarray(getattr(g, k))[:, 0]]
                                   for k in th.FIELDS}}
    plane = th.phase_grid(PLANE_W, PLANE_B, "tanh")
    crit = jax.jit(jax.vmap(lambda b: th.critical_weight_var(b, "tanh")))(
        jnp.asarray(PLANE_B, jnp.float32))
    out["plane"] = {"weight_vars": PLANE_W.tolist(), "bias_vars": PLANE_B.tolist(),
                    "chi1": np.asarray(plane.chi1).tolist(),
                    "critical_weight_var": [round(float(v), 5) for v in np.asarray(crit)]}
    return out


def make_theory_curves(data: dict) -> Figure:
    """q*, χ₁ and ξ_c against σ_w² (three panels), one line per :data:`CURVES` entry."""
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    w = np.asarray(data["weight_vars"])
    for label, c in data["curves"].items():
        for ax, key in zip(axes, ("q_star", "chi1", "xi_c")):
            y = np.array([np.nan if v is None else v for v in c[key]], float)
            if key == "xi_c":
                y = np.where(np.isinf(y), np.nan, y)
            ax.plot(w, y, label=label)
    axes[0].set(ylabel="q*  (fixed point of the length map)", ylim=(0, 3))
    axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[1].set(ylabel="χ₁ = σ_w² E[φ′(√q* z)²]", ylim=(0, 2.2))
    axes[2].set(ylabel="ξ_c = −1 / ln χ_c  (layers)", yscale="log", ylim=(0.5, 500))
    for ax in axes:
        ax.set_xlabel("σ_w²")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Mean-field theory of random MLPs (Poole et al. 2016): ordered for χ₁ < 1, "
                 "chaotic for χ₁ > 1; ξ_c diverges at the transition")
    return fig


def make_order_chaos(data: dict) -> Figure:
    """tanh's χ₁ over the (σ_w², σ_b²) plane with the line χ₁ = 1, and ReLU's (σ_w² = 2)."""
    p = data["plane"]
    w, b, chi = np.asarray(p["weight_vars"]), np.asarray(p["bias_vars"]), np.asarray(p["chi1"])
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(w, b, np.log(chi).T, cmap="RdBu_r", vmin=-1.2, vmax=1.2,
                         shading="nearest")
    fig.colorbar(mesh, ax=ax, label="ln χ₁ (tanh)")
    ax.contour(w, b, chi.T, levels=[1.0], colors="black", linewidths=1.5)
    ax.plot(p["critical_weight_var"], b, "k:", lw=2.5, label="tanh: χ₁ = 1 (bisection)")
    ax.axvline(2.0, color="tab:green", lw=2, label="ReLU: χ₁ = σ_w²/2 = 1")
    ax.text(1.0, 0.4, "ordered", fontsize=13)
    ax.text(3.6, 0.05, "chaotic", fontsize=13)
    ax.set(xlabel="σ_w²", ylabel="σ_b²",
           title="Order-to-chaos transition χ₁ = 1 in the (σ_w², σ_b²) plane")
    ax.legend(loc="upper right")
    return fig


def init_stack(key: jax.Array, depth: int, width: int, weight_var, bias_var,
               scheme: str) -> tuple[jax.Array, jax.Array]:
    """``depth`` square layers of ``width`` units as a stack (kernels [depth, width, width],
    biases [depth, width]) made by the library's :func:`vgjax.model.init_params`: ``gaussian``
    kernels N(0, σ_w²/width) (its ``normal`` scheme), ``orthogonal`` ones with gain √σ_w²,
    biases N(0, σ_b²). ``weight_var`` and ``bias_var`` may be traced."""
    if scheme not in SCHEME_INITS:
        raise ValueError(f"scheme: {scheme!r} is not known; allowed: {', '.join(SCHEMES)}")
    params = init_params(key, depth, width, max_depth=depth, p=width, init=SCHEME_INITS[scheme],
                         output_init="normal", n_features=width, weight_var=weight_var,
                         bias_var=bias_var)
    return params["kernels"], params["biases"]


def predicted_mean_sq(q0, depth: int, weight_var, bias_var, activation) -> jax.Array:
    """Mean-field mean σ² of J = ∂h_L/∂x: σ_w² Π_{l<L} σ_w² E[φ′(√q^l z)²] on the q-trajectory
    from the input's q⁰ (= σ_w² χ₁^{L−1} when q⁰ = q*)."""
    qs = th.q_trajectory(q0, depth, weight_var, bias_var, activation)[:-1]
    factors = jax.vmap(lambda q: th.chi1(jnp.maximum(q, th.Q_MIN), weight_var, activation))(qs)
    return weight_var * jnp.prod(factors)


def _spectrum(key, act, weight_var, bias_var, q0, depth, scheme, n_nets, n_points):
    """Normalised singular values [n_nets * n_points * width] of J for random nets."""
    def one(k):
        kl, kx = jax.random.split(k)
        layers = init_stack(kl, depth, SPECTRA_WIDTH, weight_var, bias_var, scheme)
        x = jax.random.normal(kx, (n_points, SPECTRA_WIDTH))
        x = x * jnp.sqrt(q0 * SPECTRA_WIDTH) / jnp.linalg.norm(x, axis=1, keepdims=True)
        # one device, no sharding: LAPACK (128 columns; Jacobi would cost minutes here)
        s, _ = probes.singular_values(probes.input_output_jacobian(layers, x, act), lapack=True)
        return s
    return jax.lax.map(one, jax.random.split(key, n_nets)).ravel()


def compute_spectra(*, seed: int = 0, n_nets: int = 4, n_points: int = 4,
                    depths=SPECTRA_DEPTHS) -> tuple[dict, dict]:
    """Singular values of J at criticality per :data:`SPECTRA_CASES` x :data:`SCHEMES` x
    depth, and the mean σ² beside its prediction (also off criticality, :data:`OFF_CRITICAL`).
    Inputs have ‖x‖²/N = q* (1 where q* is marginal), as in Pennington et al.

    Returns (a JSON-able dict with one entry per case in ``cases``, the singular values
    [n_nets * n_points * width] per (label, scheme, depth) at criticality).
    """
    key = jax.random.PRNGKey(seed)
    out = {"width": SPECTRA_WIDTH, "n_nets": n_nets, "n_points": n_points, "cases": []}
    svals = {}
    for ci, (label, act, b) in enumerate(SPECTRA_CASES):
        w_crit = {"relu": 2.0, "linear": 1.0}.get(act) or float(th.critical_weight_var(b, act))
        for mult in (1.0, *OFF_CRITICAL):
            w = w_crit * mult
            q_fix = float(th.q_star(w, b, act))
            q0 = q_fix if (act == "tanh" and math.isfinite(q_fix)) else 1.0
            for si, scheme in enumerate(SCHEMES):
                if mult != 1.0 and scheme == "orthogonal":
                    continue
                for depth in depths:
                    k = jax.random.fold_in(key, (ci * 10 + si) * 1000 + depth + int(mult * 100))
                    s = np.asarray(jax.jit(_spectrum, static_argnums=(1, 5, 6, 7, 8))(
                        k, act, w, b, q0, depth, scheme, n_nets, n_points), np.float64)
                    pred = float(predicted_mean_sq(q0, depth, w, b, act))
                    out["cases"].append({
                        "label": label, "activation": act, "scheme": scheme, "depth": depth,
                        "weight_var": round(w, 6), "bias_var": b, "q0": round(q0, 6),
                        "critical": mult == 1.0, "mean_sq": float(np.mean(s ** 2)),
                        "predicted_mean_sq": pred, "max": float(s.max()),
                        "median": float(np.median(s)),
                        "share_near_1": float(np.mean((s >= 0.5) & (s <= 2.0))),
                        "share_below_floor": float(np.mean(s < SIGMA_FLOOR))})
                    if mult == 1.0:
                        svals[(label, scheme, depth)] = s
    return out, svals


def make_spectra(svals: dict, depths=SPECTRA_DEPTHS) -> Figure:
    """Densities of log10 σ of J: one panel per case x scheme, one line per depth."""
    fig = Figure(figsize=(11, 3.0 * len(SPECTRA_CASES)), layout="constrained")
    axes = fig.subplots(len(SPECTRA_CASES), len(SCHEMES), squeeze=False)
    edges = np.linspace(np.log10(SIGMA_FLOOR), 2, 81)
    for r, (label, _, _) in enumerate(SPECTRA_CASES):
        for c, scheme in enumerate(SCHEMES):
            ax = axes[r, c]
            for depth in depths:
                s = svals.get((label, scheme, depth))
                if s is None:
                    continue
                low = np.mean(s < 10 ** edges[0])      # see SIGMA_FLOOR
                ax.hist(np.log10(s[s >= 10 ** edges[0]]), edges, weights=np.full(
                    np.sum(s >= 10 ** edges[0]), 1.0 / (s.size * (edges[1] - edges[0]))),
                    histtype="step", lw=1.5,
                    label=f"depth {depth}" + (f" ({low:.0%} < 1e-6)" if low > 0 else ""))
            ax.axvline(0.0, color="grey", lw=0.8, ls="--")
            ax.set(title=f"{label}, {scheme}", xlabel="log10 σ (singular values of ∂h_L/∂x)",
                   ylabel="density")
            ax.legend(fontsize=8)
    fig.suptitle(f"Input-output Jacobian spectra at criticality, width {SPECTRA_WIDTH} "
                 "(cf. Pennington et al. 2017)\nσ < 1e-6 is below float32's resolution "
                 "(or exactly 0) and only counted in the legend")
    return fig


def make_mean_sq(data: dict) -> Figure:
    """Measured mean σ² of J against the mean-field prediction, log-log, every case."""
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    markers = {"gaussian": "o", "orthogonal": "s"}
    colors = dict(zip([c[0] for c in SPECTRA_CASES], ("tab:blue", "tab:orange", "tab:green",
                                                      "tab:purple")))
    seen = set()
    for c in data["cases"]:
        key = (c["label"], c["scheme"])
        ax.scatter(c["predicted_mean_sq"], c["mean_sq"], marker=markers[c["scheme"]],
                   facecolors=colors[c["label"]] if c["critical"] else "none",
                   edgecolors=colors[c["label"]], label=None if key in seen else
                   f"{c['label']}, {c['scheme']}")
        seen.add(key)
    lo = min(min(c["mean_sq"], c["predicted_mean_sq"]) for c in data["cases"])
    hi = max(max(c["mean_sq"], c["predicted_mean_sq"]) for c in data["cases"])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="theory: σ_w² χ₁^{L−1} (on the q-trajectory)",
           ylabel="measured mean σ² of ∂h_L/∂x",
           title="Mean squared singular value vs mean-field theory\n"
                 "(filled: critical; open: σ_w² × 0.7 or × 1.4, depths 4/16/64)")
    ax.legend(fontsize=7)
    return fig


def _spectra_table(data: dict) -> str:
    rows = markdown_table(
        ["case", "init", "depth", "σ_w²", "mean σ²", "theory", "max σ", "median σ",
         "share of σ in [½, 2]", "share of σ < 1e-6"],
        ([c["label"], c["scheme"], c["depth"], f"{c['weight_var']:.4g}", f"{c['mean_sq']:.3g}",
          f"{c['predicted_mean_sq']:.3g}", f"{c['max']:.3g}", f"{c['median']:.3g}",
          f"{c['share_near_1']:.2f}", f"{c['share_below_floor']:.2f}"]
         for c in data["cases"] if c["critical"]))
    return "\n".join(rows) + "\n"


def _theory_table(data: dict) -> str:
    picks = [1.0, 1.5, 1.76, 2.0, 2.5, 3.0, 4.0]
    w = np.asarray(data["weight_vars"])
    fmt = lambda v: "–" if v is None else f"{v:.4g}"  # noqa: E731
    at = [int(np.argmin(np.abs(w - p))) for p in picks]
    rows = markdown_table(["curve", "σ_w²", "q*", "χ₁", "c*", "χ_c", "ξ_c"], (
        [label, f"{w[i]:.3g}", *(fmt(c[k][i]) for k in th.FIELDS)]
        for label, c in data["curves"].items() for i in at))
    crit = data["plane"]["critical_weight_var"]
    rows += ["", "Critical line of tanh (χ₁ = 1): " + ", ".join(
        f"σ_b² = {b:g}: σ_w² = {w_:.3f}" for b, w_ in zip(data["plane"]["bias_vars"][::5],
                                                          crit[::5]))]
    return "\n".join(rows) + "\n"


def write_theory(t_dir: Path) -> list[Path]:
    """The ``theory`` study into ``t_dir``: PNGs, ``data.json``, ``table.md`` and the report's
    ``tables.json`` (the same table). Returns the paths written."""
    data = compute_theory()
    return _write_study(t_dir, data, _theory_table(data), {
        "mean_field.png": make_theory_curves(data), "order_chaos.png": make_order_chaos(data)})


def write_spectra(j_dir: Path, *, spectra_nets: int = 4) -> list[Path]:
    """The ``jacobian-spectra`` study into ``j_dir`` (files as :func:`write_theory`)."""
    spectra, svals = compute_spectra(n_nets=spectra_nets)
    return _write_study(j_dir, spectra, _spectra_table(spectra), {
        "spectra.png": make_spectra(svals), "mean_sq.png": make_mean_sq(spectra)})


def _write_study(out: Path, data: dict, table: str, figs: dict[str, Figure]) -> list[Path]:
    """One study's files: its figures, ``data.json``, ``table.md`` and ``tables.json``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [save_png(fig, out / name) for name, fig in figs.items()]
    atomic_write_text(out / "data.json", json.dumps(data, allow_nan=False))
    atomic_write_text(out / "table.md", table)
    return paths + [out / "data.json", out / "table.md", write_tables(out, {"markdown": table})]


def write_all(out: Path, *, spectra_nets: int = 4) -> list[Path]:
    """Both studies into ``out/theory/`` and ``out/jacobian-spectra/`` (``vgjax theory
    --figures OUT``; the same as ``vgjax run theory jacobian-spectra`` without the report).
    Returns the paths written."""
    return (write_theory(out / "theory")
            + write_spectra(out / "jacobian-spectra", spectra_nets=spectra_nets))
