"""The ``batchnorm-explosion`` experiment: the per-layer growth of the gradient at
initialisation in BatchNorm nets, against Yang et al. (2019): π/(π−1) for ReLU at a large
batch, (B−2)/(B−3) for linear units at batch B (:mod:`vgjax.theory`).

A net is ``h_l = φ(BN(h_{l−1} W_l))``, l = 1..DEPTH, of ``WIDTH`` units: Gaussian kernels
N(0, 1/N) (BatchNorm divides σ_w² out), no biases (BatchNorm removes them), BatchNorm with
batch statistics, no learnt scale or shift (γ = 1, β = 0 at initialisation) and ε = EPS.
The input is a Gaussian batch [B, N], the loss ``Σ r ⊙ h_DEPTH`` for a Gaussian ``r``. The
growth is ``exp(−slope)`` of the least-squares line through ``ln ||∂L/∂W_l||²`` against l,
fitted on layers TRIM_BOTTOM < l <= DEPTH − TRIM_TOP (away from the loss's transient), per
seed; the seeds' mean and standard error are reported.
"""

from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgjax import theory as th
from vgjax.model import activation_fn

DEPTH = 48
WIDTH = 512
BATCHES = (4, 8, 16, 32, 64, 128, 256, 512)
ACTIVATIONS = ("relu", "linear")
EPS = 1e-5          # ε shifts the growth by a factor (1 + ε)^-1 per layer: negligible
TRIM_TOP, TRIM_BOTTOM = 8, 4


def log_grad_norms(seed_key: jax.Array, width: int, batch: int, activation: str,
                   depth: int = DEPTH) -> jax.Array:
    """``[depth]`` ln ||∂L/∂W_l||², l = 1..depth, of one BatchNorm net (module docstring).
    Keys: kernels ``fold_in(seed_key, 0)``, input 1, ``r`` 2."""
    kernels = (jax.random.normal(jax.random.fold_in(seed_key, 0), (depth, width, width))
               / jnp.sqrt(jnp.float32(width)))
    x = jax.random.normal(jax.random.fold_in(seed_key, 1), (batch, width))
    r = jax.random.normal(jax.random.fold_in(seed_key, 2), (batch, width))
    phi = activation_fn(activation)

    def loss(kernels):
        def layer(h, w):
            y = h @ w
            y = (y - y.mean(axis=0, keepdims=True)) * jax.lax.rsqrt(
                y.var(axis=0, keepdims=True) + EPS)
            return phi(y), None
        h, _ = jax.lax.scan(layer, x, kernels)
        return jnp.sum(h * r)

    g = jax.grad(loss)(kernels)
    return jnp.log(jnp.sum(g * g, axis=(1, 2)))


def growth_rates(log_norms: np.ndarray) -> np.ndarray:
    """``[S]`` per-layer growth going back from the loss, from ``log_norms [S, depth]``:
    exp(−slope) of the line through the untrimmed layers."""
    depth = log_norms.shape[1]
    layers = np.arange(TRIM_BOTTOM, depth - TRIM_TOP)
    slopes = np.polyfit(layers, log_norms[:, layers].T, 1)[0]
    return np.exp(-slopes)


def theory_rate(activation: str, batch: int) -> float:
    """Yang et al.'s rate: (B−2)/(B−3) for linear units, π/(π−1) for ReLU (large batch)."""
    if activation == "linear":
        return th.batchnorm_growth_linear(batch)
    return th.BATCHNORM_RELU_GROWTH


def compute(seeds: Sequence[int], *, batches=BATCHES, activations=ACTIVATIONS,
            width: int = WIDTH, depth: int = DEPTH) -> dict:
    """Every (activation, batch)'s measured growth (seed mean, standard error, per seed),
    the theory's rate, the mean ln||∂L/∂W_l||² profile and the seconds taken. JSON-able."""
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
    cases = []
    for activation in activations:
        for batch in batches:
            t0 = time.perf_counter()
            f = jax.jit(lambda ks: jax.lax.map(
                lambda k: log_grad_norms(k, width, batch, activation, depth), ks))
            logs = np.asarray(f(keys), np.float64)
            rates = growth_rates(logs)
            rate = theory_rate(activation, batch)
            cases.append({
                "activation": activation, "batch": batch, "width": width, "depth": depth,
                "growth": float(rates.mean()),
                "growth_se": float(rates.std(ddof=1) / np.sqrt(rates.size)) if rates.size > 1
                else None,
                "growth_by_seed": rates.tolist(),
                "theory": rate, "rel_error": float(rates.mean() / rate - 1.0),
                "log_norm_by_layer": logs.mean(axis=0).tolist(),
                "seconds": time.perf_counter() - t0})
    return {"depth": depth, "width": width, "seeds": len(seeds),
            "trim": [TRIM_BOTTOM, TRIM_TOP], "eps": EPS, "cases": cases}
