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

The kernels do not depend on the batch size or the activation (key ``fold_in(seed_key, 0)``,
shape ``[DEPTH, N, N]``), so they are drawn once per seed and shared by every case; the
input and ``r`` are drawn per batch size. One compiled program per batch size (its shape)
computes every seed and every activation.
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


def draw_kernels(seed_key: jax.Array, width: int, depth: int = DEPTH) -> jax.Array:
    """``[depth, width, width]`` N(0, 1/N) kernels of one seed (key ``fold_in(seed_key, 0)``),
    the same for every batch size and activation."""
    return (jax.random.normal(jax.random.fold_in(seed_key, 0), (depth, width, width))
            / jnp.sqrt(jnp.float32(width)))


def draw_batch(seed_key: jax.Array, width: int, batch: int) -> tuple[jax.Array, jax.Array]:
    """One seed's input ``x [batch, width]`` (key ``fold_in(seed_key, 1)``) and loss
    direction ``r [batch, width]`` (2)."""
    return (jax.random.normal(jax.random.fold_in(seed_key, 1), (batch, width)),
            jax.random.normal(jax.random.fold_in(seed_key, 2), (batch, width)))


def grad_log_norms(kernels: jax.Array, x: jax.Array, r: jax.Array, activation: str
                   ) -> jax.Array:
    """``[depth]`` ln ||∂L/∂W_l||² of the BatchNorm net with ``kernels [depth, N, N]`` on
    the batch ``x [B, N]``, loss ``Σ r ⊙ h_depth`` (module docstring)."""
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


def log_grad_norms(seed_key: jax.Array, width: int, batch: int, activation: str,
                   depth: int = DEPTH) -> jax.Array:
    """``[depth]`` ln ||∂L/∂W_l||², l = 1..depth, of one BatchNorm net (module docstring;
    draws: :func:`draw_kernels`, :func:`draw_batch`)."""
    return grad_log_norms(draw_kernels(seed_key, width, depth),
                          *draw_batch(seed_key, width, batch), activation)


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
    the theory's rate, the mean ln||∂L/∂W_l||² profile and the seconds its batch size's
    program took (shared by the activations; the kernels' draw is counted in the first).
    JSON-able. Holds every seed's kernels at once (depth x width² floats per seed)."""
    activations = tuple(activations)
    t0 = time.perf_counter()
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
    kernels = jax.jit(jax.vmap(lambda k: draw_kernels(k, width, depth)))(keys)
    by_case = {}
    for batch in batches:
        def one_seed(kk, batch=batch):
            k, kern = kk
            x, r = draw_batch(k, width, batch)
            return jnp.stack([grad_log_norms(kern, x, r, a) for a in activations])

        logs_all = np.asarray(jax.jit(lambda ks, kern: jax.lax.map(one_seed, (ks, kern)))(
            keys, kernels), np.float64)                   # [S, A, depth]
        seconds = time.perf_counter() - t0
        for i, activation in enumerate(activations):
            logs = logs_all[:, i]
            rates = growth_rates(logs)
            rate = theory_rate(activation, batch)
            by_case[activation, batch] = {
                "activation": activation, "batch": batch, "width": width, "depth": depth,
                "growth": float(rates.mean()),
                "growth_se": float(rates.std(ddof=1) / np.sqrt(rates.size)) if rates.size > 1
                else None,
                "growth_by_seed": rates.tolist(),
                "theory": rate, "rel_error": float(rates.mean() / rate - 1.0),
                "log_norm_by_layer": logs.mean(axis=0).tolist(),
                "seconds": seconds}
        t0 = time.perf_counter()
    return {"depth": depth, "width": width, "seeds": len(seeds),
            "trim": [TRIM_BOTTOM, TRIM_TOP], "eps": EPS,
            "cases": [by_case[a, b] for a in activations for b in batches]}
