"""The ``signal-propagation`` study: measured q^l and per-layer gradient norms of random tanh
nets at initialisation beside the mean-field theory (Poole et al. 2016; Schoenholz et al. 2017).

Nets come from the library's :func:`vgjax.model.init_params` through the public step
(:func:`vgjax.step.make_step`): Gaussian kernels N(0, σ_w²/fan_in), biases N(0, σ_b²). The
input is the data's training points (digits: 64 pixels in [0, 1]), so the first layer reads
64 features (q¹ = σ_w² mean(x²) + σ_b² per point) and the theory's q-map is iterated from each
point's own q⁰ = mean over features of x², then averaged over the points, as the measurement
averages. Gradients are per point (batches of one through :meth:`Step.loss_and_grads`), the
quantity the theory predicts: ‖∂ℓ/∂W^l‖² = ‖a^{l−1}‖² ‖δ^l‖² with ‖δ^l‖² shrinking or growing
by χ(q^l) = σ_w² E[φ′(√q^l z)²] per layer going down (χ₁ at q^l = q*).

:func:`compute` maps one net's measurement over seeds x σ_w² in vmapped batches (one
compiled program);
:func:`write` draws the figures and writes ``tables.json`` (the table of
:func:`vgjax.experiments.signal.studies.propagation_table`) and ``data.json``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vgjax import probes
from vgjax import theory as th
from vgjax.config import Config
from vgjax.data import make_data
from vgjax.step import Batch, make_step
from vgjax.io.store import atomic_write_text

ACTIVATION = "tanh"
BIAS_VAR = 0.05
WIDTH = 256
DEPTH = 48
SEEDS = tuple(range(8))
PHASE_MULTIPLES = (("ordered", 0.5), ("critical", 1.0), ("chaotic", 2.0))
N_POINTS = 256        # training points for q^l
N_GRAD_POINTS = 16    # points whose per-point gradients are averaged
CONFIG = Config(activation=ACTIVATION, init="normal", output_init="normal", bias_var=BIAS_VAR,
                data="digits", n_samples=1000, n_train=800)


def phase_weight_vars(bias_var: float = BIAS_VAR) -> dict[str, float]:
    """σ_w² of the ordered, critical (χ₁ = 1) and chaotic nets: multiples of the critical one."""
    crit = float(th.critical_weight_var(bias_var, ACTIVATION))
    return {name: round(crit * m, 4) for name, m in PHASE_MULTIPLES}


def measure(config: Config, x: jax.Array, y: jax.Array, seeds, weight_vars, *, depth: int,
            width: int, n_grad: int, batch: int = 3) -> tuple[jax.Array, jax.Array]:
    """Measured q^l and per-point squared gradient norms of fresh nets, one per (seed, σ_w²).

    Args:
      config: the protocol (activation, init, bias_var, data dims); x [N, F], y [N]: points.
      seeds: [S] ints; weight_vars: [W] floats; depth, width: the nets' shape.
      n_grad: the first ``n_grad`` points give per-point gradients.
      batch: nets vmapped together (``lax.map`` over batches bounds the memory; one jit).
    Returns:
      A pair ``(q, g2)``; q [S, W, depth] is the mean of h_l² over points and units, g2
      [S, W, depth + 1] the mean over the points of ‖∂ℓ/∂W‖² per layer, hidden layers then
      the output layer.
    """
    step = make_step(config, max_depth=depth, p=width)

    def one(seed, w):
        params = step.init(jax.random.PRNGKey(seed), depth, width, weight_var=w).params
        q = probes.second_moment((params["kernels"], params["biases"]), x, config.activation)

        def point_g2(xy):
            xi, yi = xy
            _, grads = step.loss_and_grads(params, Batch(xi[None], yi[None], jnp.ones((1,))),
                                           depth, width)
            return step.layer_stats(grads, depth, width)[1] ** 2
        g2 = jax.lax.map(point_g2, (x[:n_grad], y[:n_grad])).mean(axis=0)
        return q, g2

    @jax.jit
    def grid(seeds, weight_vars):
        s, w = (a.ravel() for a in jnp.meshgrid(seeds, weight_vars, indexing="ij"))
        # vmapped a batch of nets at a time: all 24 nets at once hold ~16 GB at depth 48
        q, g2 = jax.lax.map(lambda sw: one(*sw), (s, w), batch_size=batch)
        return (q.reshape(len(seeds), len(weight_vars), -1),
                g2.reshape(len(seeds), len(weight_vars), -1))
    return grid(jnp.asarray(seeds), jnp.asarray(weight_vars, jnp.float32))


def predict(x: jax.Array, weight_var, bias_var, activation, depth: int, width: int
            ) -> tuple[jax.Array, jax.Array]:
    """Mean-field q^l and the squared-gradient profile for the points ``x [N, F]``.

    Returns (q [depth]: the q-map from each point's q⁰, averaged over points; g2 [depth]:
    per hidden layer l, mean over points of ‖a^{l−1}‖² Π_{k=l}^{L−1} χ(q^k), normalised to 1
    at the last hidden layer L, to compare with measured ratios).
    """
    q0 = jnp.mean(x * x, axis=1)
    f = x.shape[1]

    def one(q0_i):
        qs = th.q_trajectory(q0_i, depth, weight_var, bias_var, activation)
        chi = jax.vmap(lambda q: th.chi1(jnp.maximum(q, th.Q_MIN), weight_var, activation))(qs)
        # Π_{k=l}^{L-1} χ(q^k) for l = 1..L: reversed cumulative product, 1 at l = L
        back = jnp.concatenate([jnp.cumprod(chi[:-1][::-1])[::-1], jnp.ones((1,))])
        a2 = jnp.concatenate([jnp.array([f * q0_i]), width * (qs[1:] - bias_var) / weight_var])
        return qs, a2 * back
    qs, g2 = jax.vmap(one)(q0)
    return qs.mean(axis=0), g2.mean(axis=0) / g2.mean(axis=0)[-1]


def compute(*, seeds=SEEDS, depth: int = DEPTH, width: int = WIDTH, n_points: int = N_POINTS,
            n_grad: int = N_GRAD_POINTS, config: Config = CONFIG) -> dict:
    """Measurement and theory for the three phases; a JSON-able dict (lists, per phase)."""
    d = make_data(config)
    x, y = jnp.asarray(d.x_train[:n_points]), jnp.asarray(d.y_train[:n_points])
    phases = phase_weight_vars(config.bias_var)
    q, g2 = (np.asarray(a, np.float64) for a in measure(
        config, x, y, seeds, list(phases.values()), depth=depth, width=width, n_grad=n_grad))
    out = {"activation": config.activation, "bias_var": config.bias_var, "width": width,
           "depth": depth, "seeds": list(seeds), "n_points": n_points, "n_grad": n_grad,
           "q0_mean": float(jnp.mean(x * x)), "phases": {}}
    for j, (name, w) in enumerate(phases.items()):
        mf = th.mean_field(w, config.bias_var, config.activation)
        q_th, g_th = (np.asarray(a, np.float64) for a in predict(
            x, w, config.bias_var, config.activation, depth, width))
        ratio = g2[:, j, :depth] / g2[:, j, depth - 1:depth]   # relative to the last hidden
        out["phases"][name] = {
            "weight_var": w, "chi1": float(mf.chi1), "q_star": float(mf.q_star),
            "q_mean": q[:, j].mean(0).tolist(), "q_std": q[:, j].std(0).tolist(),
            "q_theory": q_th.tolist(),
            "g2_ratio_mean": ratio.mean(0).tolist(), "g2_ratio_std": ratio.std(0).tolist(),
            "g2_ratio_theory": g_th.tolist(),
            "g2_ratio_chi1": (float(mf.chi1) ** (depth - 1 - np.arange(depth))).tolist()}
    return out


def write(exp_dir: Path, data: dict | None = None, **kwargs) -> list[Path]:
    """Compute the study (``compute(**kwargs)``, unless ``data`` gives its result) and write
    ``q_per_layer.png``, ``grad_per_layer.png``, ``data.json`` and the report's
    ``tables.json`` into ``exp_dir``; the paths written."""
    from vgjax.experiments.signal.studies import propagation_table
    from vgjax.figures import propagation as fig
    from vgjax.io.tables import write_tables

    exp_dir.mkdir(parents=True, exist_ok=True)
    data = compute(**kwargs) if data is None else data
    atomic_write_text(exp_dir / "data.json", json.dumps(data, allow_nan=False))
    paths = [fig.plot_q_per_layer(data, exp_dir / "q_per_layer.png"),
             fig.plot_grad_per_layer(data, exp_dir / "grad_per_layer.png")]
    return paths + [exp_dir / "data.json", write_tables(exp_dir, {"markdown": propagation_table(data)})]


def small_config(**changes) -> Config:
    """:data:`CONFIG` with fields changed (tests use smaller data)."""
    return replace(CONFIG, **changes)
