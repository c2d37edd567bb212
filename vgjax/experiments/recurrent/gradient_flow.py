"""``rnn-gradient-flow``: ln‖∂ℓ/∂h_t‖ against the distance to the loss at initialisation, for
tanh RNNs below, at and above σ_w² = 1, the IRNN, the LSTM and the GRU on the adding problem at
T = 200, with seed bands and the mean-field theory's decay for the tanh RNNs; the theory's
own setting (wide tanh RNNs, isotropic Gaussian inputs) measured beside it; and the same flow
in every layer of 3-layer stacks (tanh RNN at σ_w² = 1, LSTM), where depth and time are two
axes of one backward pass.

Nothing is trained. Every number the section shows is read from ``tables.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vgjax.experiments.base import Context
from vgjax.figures.common import new_figure, save_png, series_colors
from vgjax.io.store import atomic_write_text, dumps_json, jsonable
from vgjax.io.tables import markdown_table, read_tables, write_tables
from vgjax.recurrent import cells as rc
from vgjax.recurrent import flow as rf
from vgjax.recurrent import tasks as rt

LENGTH = 200
WIDTH = 128
SEEDS = tuple(range(5))
EXAMPLES = 32
FIT = (10, 150)            # distances to the loss used for the slopes (q_t ~ q* beyond 10)
ISO = {"width": 256, "n_inputs": 32, "length": 60, "nets": 4, "batch": 16,
       "weight_vars": (0.8, 1.0, 1.5), "fit": (10, 58)}
FIGURE = "gradient_flow.png"


class Net(NamedTuple):
    """One configuration of the study (``layers``: stacked recurrent layers)."""

    label: str
    cell: str
    activation: str
    init: str
    scale: float
    layers: int = 1


NETS = (Net("tanh RNN, σ_w² = 0.8", "rnn", "tanh", "normal", 0.8),
        Net("tanh RNN, σ_w² = 1.0", "rnn", "tanh", "normal", 1.0),
        Net("tanh RNN, σ_w² = 1.5", "rnn", "tanh", "normal", 1.5),
        Net("IRNN (ReLU, identity)", "rnn", "relu", "identity", 1.0),
        Net("LSTM (orthogonal, forget bias 1)", "lstm", "tanh", "orthogonal", 1.0),
        Net("GRU (orthogonal)", "gru", "tanh", "orthogonal", 1.0))
STACKED = (Net("tanh RNN, σ_w² = 1.0, 3 layers", "rnn", "tanh", "normal", 1.0, 3),
           Net("LSTM (orthogonal, forget bias 1), 3 layers", "lstm", "tanh", "orthogonal", 1.0,
               3))


def measure(nets=NETS, *, length: int = LENGTH, width: int = WIDTH, seeds=SEEDS,
            examples: int = EXAMPLES) -> dict[str, dict[str, np.ndarray]]:
    """Init-time :class:`~vgjax.recurrent.flow.Flow` of every net and seed on one adding
    batch per seed: {label: {log_rms [S, L, T], log_norm [S, L, T], saturation [S, L],
    lambda1 [S, L]}} (L the net's layers, first layer first). One jit per static
    (cell, φ, layers), the seeds and scales vmapped."""
    task = rt.make_task("adding")
    out = {}
    for net in nets:
        def one(seed, scale, net=net):
            k_init, _, k_test = jax.random.split(jax.random.PRNGKey(seed), 3)
            spec = rc.InitSpec(jnp.int32(rc.INITS.index(net.init)), scale, jnp.float32(1.0),
                               jnp.float32(0.0))
            p = rc.init_cell(k_init, net.cell, n_inputs=task.n_inputs, width=width,
                             n_outputs=task.n_outputs, spec=spec, layers=net.layers)
            batch = rt.sample(task, k_test, length, length, examples)
            return rf.task_flow(task, net.cell, net.activation, p, batch, length)
        flow = jax.jit(jax.vmap(one, (0, None)))(jnp.asarray(seeds, jnp.uint32),
                                                 jnp.float32(net.scale))
        out[net.label] = {k: np.asarray(v, np.float64) for k, v in flow._asdict().items()
                          if k != "param_grads"}
        if net.cell == "rnn" and net.layers == 1:
            out[net.label]["spectral_radius"] = spectral_radii(net, seeds, width)
    return out


def spectral_radii(net: Net, seeds, width: int) -> np.ndarray:
    """[S] largest |eigenvalue| of each seed's recurrent kernel (rnn): the per-step factor of
    a linear RNN's backward pass W^T, W^T W^T, ... once the top eigenvector dominates."""
    task = rt.make_task("adding")

    def kernel(seed):
        spec = rc.InitSpec(jnp.int32(rc.INITS.index(net.init)), jnp.float32(net.scale),
                           jnp.float32(1.0), jnp.float32(0.0))
        k_init = jax.random.split(jax.random.PRNGKey(seed), 3)[0]
        return rc.init_cell(k_init, net.cell, n_inputs=task.n_inputs, width=width,
                            n_outputs=task.n_outputs, spec=spec).wh
    ws = np.asarray(jax.jit(jax.vmap(kernel))(jnp.asarray(seeds, jnp.uint32)), np.float64)
    return np.array([np.abs(np.linalg.eigvals(w)).max() for w in ws])


def theory_rows(measured, nets=NETS, *, length: int = LENGTH, width: int = WIDTH) -> list[dict]:
    """Per (single-layer) net: measured decay per step (fit of the seed-mean
    ½ ln mean‖∂ℓ/∂h_t‖² over :data:`FIT`), the theory's along the q-trajectory (tanh only),
    λ₁γ, gate saturation."""
    task = rt.make_task("adding")
    input_sq = 1.0 / 3.0 + 2.0 / length        # E‖x_t‖²: U(0,1) values, 2 markers in T
    bias = rf.effective_bias_var(0.0, input_sq, task.n_inputs, width)
    lo, hi = length - 1 - FIT[1], length - 1 - FIT[0]
    rows = []
    for net in nets:
        m = {k: v[:, 0] if k != "spectral_radius" else v
             for k, v in measured[net.label].items()}            # the one layer
        decay = rf.fit_slope(m["log_rms"].mean(axis=0), lo, hi)
        row = {"net": net.label, "measured_decay": decay,
               "lambda1_gamma": float(np.mean(m["lambda1"])) * rf.gamma(net.activation)
               if net.cell == "rnn" else None,
               "saturation": float(np.mean(m["saturation"])) if net.cell != "rnn" else None,
               "theory_decay": None, "theory_decay_at_q_star": None, "relative_difference": None,
               "linear_decay": -float(np.mean(np.log(m["spectral_radius"])))
               if "spectral_radius" in m else None}
        if net.cell == "rnn" and net.activation == "tanh":
            prof = rf.theory_log_profile(length, net.scale, bias)
            row["theory_decay"] = rf.fit_slope(prof, lo, hi)
            row["theory_decay_at_q_star"] = -rf.theory_slope(net.scale, bias)
            row["relative_difference"] = decay / row["theory_decay"] - 1.0
        rows.append(row)
    return rows


def stacked_rows(measured, nets=STACKED, *, length: int = LENGTH, fit=FIT) -> list[dict]:
    """Per (stacked net, layer l): the seed mean of ½ ln mean‖∂ℓ/∂h_t^l‖² at the last step
    and at the first, each minus the top layer's at the last step (how much the gradient
    has shrunk, through depth alone and through depth and time), the decay per step back
    in time (fit over the distances ``fit``, as :func:`theory_rows`), λ₁γ (rnn) or gate
    saturation."""
    lo, hi = length - 1 - fit[1], length - 1 - fit[0]
    rows = []
    for net in nets:
        m = measured[net.label]
        mean = m["log_rms"].mean(axis=0)                          # [L, T]
        top = mean[-1, -1]
        for layer in range(net.layers):
            rows.append({
                "net": net.label, "layer": layer + 1, "layers": net.layers,
                "below_top_last": float(mean[layer, -1] - top),
                "below_top_first": float(mean[layer, 0] - top),
                "measured_decay": rf.fit_slope(mean[layer], lo, hi),
                "lambda1_gamma": float(np.mean(m["lambda1"][:, layer]))
                * rf.gamma(net.activation) if net.cell == "rnn" else None,
                "saturation": float(np.mean(m["saturation"][:, layer]))
                if net.cell != "rnn" else None})
    return rows


def isotropic_rows(iso=ISO) -> tuple[list[dict], np.ndarray]:
    """The theory's own setting: measured decay per step against −½ ln χ₁ at q*."""
    log_rms = rf.isotropic_log_rms(iso["weight_vars"], width=iso["width"],
                                   n_inputs=iso["n_inputs"], length=iso["length"],
                                   nets=iso["nets"], batch=iso["batch"])
    bias = rf.effective_bias_var(0.0, float(iso["n_inputs"]), iso["n_inputs"], iso["width"])
    rows = []
    for i, wv in enumerate(iso["weight_vars"]):
        measured = rf.fit_slope(log_rms[i].mean(axis=0), *iso["fit"])
        theory = -rf.theory_slope(wv, bias)
        rows.append({"weight_var": wv, "effective_bias_var": bias, "measured_decay": measured,
                     "theory_decay": theory, "relative_difference": measured / theory - 1.0})
    return rows, log_rms


def _band(ax, c: dict, color, label: str) -> None:
    # a seed mean against the distance to the loss, with its min-max band
    d = np.asarray(c["distance"])
    ax.plot(d, c["mean"], color=color, label=label, lw=1.5)
    ax.fill_between(d, c["lo"], c["hi"], color=color, alpha=0.2, lw=0)


def _curve(log_rms: np.ndarray, length: int) -> dict:
    # [S, T] -> seed mean and min-max band of ½ ln mean‖∂ℓ/∂h_t‖², by distance T − 1 − t
    dist = length - 1 - np.arange(length)
    return {"distance": dist[::-1].tolist(), "mean": log_rms.mean(axis=0)[::-1].tolist(),
            "lo": log_rms.min(axis=0)[::-1].tolist(), "hi": log_rms.max(axis=0)[::-1].tolist()}


def _figure(data: dict, path: Path) -> Path:
    stacked = data.get("stacked", {})
    fig, (ax, ax2, *axes) = new_figure(2 + len(stacked), panel_w=6.0, panel_h=4.4)
    colors = series_colors(len(data["curves"]))
    for color, (label, c) in zip(colors, data["curves"].items()):
        _band(ax, c, color, label)
        if c.get("theory") is not None:
            ax.plot(c["distance"], c["theory"], color=color, ls="--", lw=1.0)
    ax.set_xlabel("distance to the loss T − t (steps)")
    ax.set_ylabel("½ ln mean ‖∂ℓ/∂h_t‖²  (seed mean, band: min–max)")
    ax.set_title(f"adding problem, T = {data['length']}, N = {data['width']}, at init\n"
                 "dashed: mean-field theory on the q-trajectory", fontsize=9)
    ax.legend(fontsize=7)
    for color, (wv, c) in zip(colors, data["isotropic"].items()):
        t = np.arange(len(c["mean"]))
        ax2.plot(t, c["mean"], color=color, label=f"σ_w² = {wv}")
        ax2.plot(t, c["theory"], color=color, ls="--", lw=1.0)
    ax2.set_xlabel("time step t (loss after the last)")
    ax2.set_ylabel("½ ln Σ_b ‖∂ℓ_b/∂h_t‖²  (net mean)")
    ax2.set_title("theory's setting: tanh, isotropic Gaussian inputs\n"
                  "dashed: slope ½ ln χ₁ at q*", fontsize=9)
    ax2.legend(fontsize=7)
    for axl, (label, layers) in zip(axes, stacked.items()):
        for color, (layer, c) in zip(series_colors(len(layers)), layers.items()):
            _band(axl, c, color, f"layer {layer}" + (" (read out)" if int(layer) == len(layers)
                                                     else ""))
        axl.set_xlabel("distance to the loss T − t (steps)")
        axl.set_ylabel("½ ln mean ‖∂ℓ/∂h_t‖² of layer l  (seed mean, band: min–max)")
        axl.set_title(f"{label}: every layer, at init", fontsize=9)
        axl.legend(fontsize=7)
    return save_png(fig, path)


def _between_sentence(rows: list[dict]) -> str:
    """How the tanh rows' measured decay sits against the two rates, counted from ``rows``."""
    tanh = [r for r in rows if r["theory_decay"] is not None and r["linear_decay"] is not None]
    inside = [r for r in tanh if min(r["theory_decay"], r["linear_decay"])
              <= r["measured_decay"] <= max(r["theory_decay"], r["linear_decay"])]
    return (f"For {len(inside)} of the {len(tanh)} tanh RNNs the measured decay lies between "
            "the theory's and −ln ρ(W).")


def _stacked_sentence(rows: list[dict]) -> str:
    """Per stacked net, the first layer against the top one, from the table's rows."""
    parts = []
    for net in dict.fromkeys(r["net"] for r in rows):
        mine = [r for r in rows if r["net"] == net]
        first, top = mine[0], mine[-1]
        parts.append(f"in the {net} the first layer's gradient at the last step is "
                     f"{np.exp(first['below_top_last']):.3g} times the top layer's and "
                     f"{np.exp(first['below_top_first']):.3g} times at the first step, and it "
                     f"decays by {first['measured_decay']:.4f} per step back in time against "
                     f"{top['measured_decay']:.4f} in layer {top['layer']}")
    return "Measured: " + "; ".join(parts) + "."


def _stacked_lines(rows: list[dict], f) -> list[str]:
    """The stacked nets' paragraph and table (the rows of ``tables.json``'s ``stacked``)."""
    lines = [f"Stacked layers: {rows[0]['layers']}-layer nets of the same width on the same "
             "batches, layer l > 1 reading layer l − 1's h_t, the readout the top layer's. "
             "The total ∂ℓ/∂h_t^l sums the recurrent term from step t + 1 and the term from "
             "layer l + 1 at step t (the log-domain pass pulls the layers back top down in "
             "each step). Per layer: ½ ln mean‖∂ℓ/∂h_t^l‖² minus the top layer's at the last "
             "step t = T, at t = T (depth alone) and at t = 1 (depth and T − 1 steps); decay "
             "per step as above. " + _stacked_sentence(rows), ""]
    return lines + markdown_table(
        ["net", "layer", "vs top, t = T", "vs top, t = 1", "decay per step", "λ₁γ",
         "gate saturation"],
        ([r["net"], r["layer"], f"{r['below_top_last']:+.3f}", f"{r['below_top_first']:+.3f}",
          f"{r['measured_decay']:.4f}", f(r["lambda1_gamma"], "{:.3f}"),
          f(r["saturation"], "{:.1%}")] for r in rows))


class GradientFlow:
    """The experiment object (see :mod:`vgjax.experiments.recurrent`)."""

    name = "rnn-gradient-flow"
    group = "recurrent"
    title = ("Gradient flow through time at initialisation: tanh RNN (σ_w² below, at, above "
             "1), IRNN, LSTM, GRU at T = 200, beside the mean-field theory; every layer of "
             "3-layer stacks")
    uses: tuple[str, ...] = ()
    reported = "Chen, Pennington & Schoenholz 2018: decay √χ₁ per step (tanh)"
    figures: tuple[str, ...] = (FIGURE,)

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs trained: none (everything happens at initialisation)."""
        return 0

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Nothing to refuse: the study fixes its seeds and trains no epochs."""

    def run(self, ctx: Context) -> list[Path]:
        exp_dir = Path(ctx.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        measured = measure(NETS + STACKED)
        rows = theory_rows(measured)
        iso_rows, iso_log_rms = isotropic_rows()
        task = rt.make_task("adding")
        bias = rf.effective_bias_var(0.0, 1.0 / 3.0 + 2.0 / LENGTH, task.n_inputs, WIDTH)
        curves = {}
        for net in NETS:
            lr = measured[net.label]["log_rms"][:, 0]
            theory = None
            if net.cell == "rnn" and net.activation == "tanh":
                prof = rf.theory_log_profile(LENGTH, net.scale, bias)
                theory = (prof + lr.mean(axis=0)[-1])[::-1].tolist()
            curves[net.label] = {**_curve(lr, LENGTH), "theory": theory}
        stacked = {net.label: {str(layer + 1): _curve(measured[net.label]["log_rms"][:, layer],
                                                      LENGTH)
                               for layer in range(net.layers)} for net in STACKED}
        iso = {}
        for row, lr in zip(iso_rows, iso_log_rms):
            mean = lr.mean(axis=0)
            t = np.arange(len(mean))
            anchor = mean[ISO["fit"][1] - 1]
            iso[str(row["weight_var"])] = {
                "mean": mean.tolist(),
                "theory": (anchor + row["theory_decay"] * (t - (ISO["fit"][1] - 1))).tolist()}
        protocol = {"length": LENGTH, "width": WIDTH, "seeds": len(SEEDS),
                    "examples": EXAMPLES, "fit_distances": list(FIT), "task": "adding",
                    "effective_bias_var": bias, "isotropic": {k: v for k, v in ISO.items()}}
        data = {"length": LENGTH, "width": WIDTH, "curves": curves, "isotropic": iso,
                "stacked": stacked}
        atomic_write_text(exp_dir / "data.json", dumps_json(jsonable(data)))
        write_tables(exp_dir, {"protocol": protocol, "task_inputs": rows,
                               "isotropic": iso_rows, "stacked": stacked_rows(measured)})
        return [exp_dir / "data.json", exp_dir / "tables.json", _figure(data, exp_dir / FIGURE)]

    def section(self, exp_dir: Path) -> list[str]:
        tables = read_tables(Path(exp_dir) / "tables.json")
        if tables is None:
            return []
        p = tables["protocol"]
        f = lambda v, fmt="{:.4f}": "–" if v is None else fmt.format(v)
        lines = [f"### {self.name}: {self.title}", "",
                 f"Fresh nets of width N = {p['width']} on the adding problem at T = "
                 f"{p['length']} ({p['seeds']} seeds, {p['examples']} sequences each), at "
                 "initialisation; ln‖∂ℓ/∂h_t‖ from the library's log-domain backward pass "
                 "(exact where float32 gradients underflow). Decay per step: the slope of the "
                 "seed mean of ½ ln mean‖∂ℓ/∂h_t‖² over distances "
                 f"{p['fit_distances'][0]}–{p['fit_distances'][1]} to the loss. Theory (tanh): "
                 "½ ln χ(q_t) summed along the q-trajectory from h_0 = 0, with the inputs as "
                 f"bias variance σ_b² = {p['effective_bias_var']:.4g} (Glorot input kernel, "
                 "E‖x‖² of the two-channel adding inputs); these inputs are weak and "
                 "two-dimensional, not the theory's isotropic ones. With them the tanh "
                 "RNN's states stay small (q ≪ 1, φ′ ≈ 1) and the backward pass is nearly a "
                 "power of one matrix Wᵀ, while the theory treats each step's Jacobian as a "
                 "fresh random matrix (true of wide nets driven by strong isotropic inputs, "
                 "second table). −ln ρ(W), ρ the recurrent kernel's spectral radius (seed "
                 "mean), is the rate a linear RNN reaches once the top eigenvector dominates. "
                 + _between_sentence(tables["task_inputs"]), ""]
        lines += markdown_table(
            ["net", "decay per step, measured", "theory (q-trajectory)", "theory at q*",
             "measured / theory − 1", "−ln ρ(W)", "λ₁γ (Pascanu)", "gate saturation"],
            ([r["net"], f(r["measured_decay"]), f(r["theory_decay"]),
              f(r["theory_decay_at_q_star"]), f(r["relative_difference"], "{:+.1%}"),
              f(r.get("linear_decay")), f(r["lambda1_gamma"], "{:.3f}"),
              f(r["saturation"], "{:.1%}")] for r in tables["task_inputs"]))
        iso = p["isotropic"]
        lines += ["", f"The theory's own setting: tanh RNNs of width {iso['width']}, inputs "
                  f"x_t ~ N(0, I_{iso['n_inputs']}), T = {iso['length']}, {iso['nets']} nets × "
                  f"{iso['batch']} sequences, slope fitted over t = {iso['fit'][0]}–"
                  f"{iso['fit'][1]}:", ""]
        # (no "|" inside a cell: it would split the column)
        lines += markdown_table(
            ["σ_w²", "effective σ_b²", "decay per step, measured", "−½ ln χ₁ at q*",
             "measured / theory − 1"],
            ([r["weight_var"], f"{r['effective_bias_var']:.3f}", f"{r['measured_decay']:.4f}",
              f"{r['theory_decay']:.4f}", f"{r['relative_difference']:+.1%}"]
             for r in tables["isotropic"]))
        if tables.get("stacked"):
            lines += ["", *_stacked_lines(tables["stacked"], f)]
        lines += ["", f"![gradient flow]({self.name}/{FIGURE})", ""]
        return lines


def load_data(exp_dir: Path) -> dict:
    """The curves :meth:`GradientFlow.run` wrote (``data.json``)."""
    return json.loads((Path(exp_dir) / "data.json").read_text())
