"""The ``random-walk`` experiment: ln||δ_l|| across the layers of linear and ReLU nets at
random-walk initialisation (Sussillo & Abbott 2014), against :func:`vgjax.theory.random_walk_step`.

Kernels are N(0, g²/N) with the library's gain g (:func:`vgjax.model.random_walk_gain`), the
distribution of ``init_params(..., init="random_walk")`` (tests pin that); they are drawn
with one ``jax.random.normal`` call per net rather than ``init_params``' per-entry streams, which
take about 4x the time (hashing 200 x N² entries per net for thousands of nets). A net has
``DEPTH`` hidden layers of N units, reads a Gaussian input of N features and has zero biases;
the loss is ``r · h_DEPTH`` for a random Gaussian ``r``, so δ_l = ∂L/∂z_l (z_l layer l's
pre-activation) is a backpropagated random direction.

Drawing the kernels (200 x N² normals per seed) is nearly all the work, so the activations
of one width share them: a seed's linear and ReLU nets have the same standard-normal draws,
each scaled by its own g/√N (exactly the values a per-activation draw gives, since the key
does not depend on the activation). One compiled program per N computes every seed and
every activation (``vmap`` over a batch of seeds, ``lax.map`` over batches to bound memory).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vgjax import theory as th
from vgjax.model import activation_fn, random_walk_gain

DEPTH = 200
WIDTHS = (10, 30, 100)
ACTIVATIONS = ("linear", "relu")
SEED_BATCH = 16          # seeds per vmapped batch (memory: DEPTH x N x N floats per seed)


class Walks(NamedTuple):
    """ln||δ_l|| − ln||δ_DEPTH|| of every seed: ``walk [S, DEPTH]`` (layer 1 first; the last
    column is 0), and ``alive [S]`` (False: a ReLU layer had no active unit, δ is 0)."""

    walk: np.ndarray
    alive: np.ndarray


def walk_draws(seed_key: jax.Array, width: int, depth: int = DEPTH
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One seed's draws: standard-normal kernels ``[depth, width, width]`` (key
    ``fold_in(seed_key, 0)``), the input ``[width]`` (1) and the top direction ``r [width]``
    (2). Every activation's net scales the same kernels by its own gain."""
    z = jax.random.normal(jax.random.fold_in(seed_key, 0), (depth, width, width))
    x = jax.random.normal(jax.random.fold_in(seed_key, 1), (width,), jnp.float32)
    r = jax.random.normal(jax.random.fold_in(seed_key, 2), (width,), jnp.float32)
    return z, x, r


def walk_of_draws(z: jax.Array, x: jax.Array, r: jax.Array, activation: str) -> jax.Array:
    """``[depth]`` ln||δ_l||, l = 1..depth, of the net with kernels ``z · g/√N`` (``z
    [depth, N, N]`` standard normals), input ``x [N]`` and top direction ``r [N]``."""
    width = z.shape[-1]
    kernels = z * (random_walk_gain(activation, width) / jnp.sqrt(jnp.float32(width)))
    phi = activation_fn(activation)

    def loss(eps):   # eps [depth, width]: additive perturbations of the pre-activations
        def layer(h, ke):
            k, e = ke
            h = phi(h @ k + e)
            return h, None
        h, _ = jax.lax.scan(layer, x, (kernels, eps))
        return h @ r

    delta = jax.grad(loss)(jnp.zeros(z.shape[:2], jnp.float32))
    return jnp.log(jnp.linalg.norm(delta, axis=1))


def log_delta_norms(seed_key: jax.Array, width: int, activation: str, depth: int = DEPTH
                    ) -> jax.Array:
    """``[depth]`` ln||δ_l||, l = 1..depth, of one random-walk-initialised net (see module
    docstring; draws: :func:`walk_draws`)."""
    return walk_of_draws(*walk_draws(seed_key, width, depth), activation)


def compute_walks(seeds, width: int, activations=ACTIVATIONS, depth: int = DEPTH
                  ) -> dict[str, Walks]:
    """:class:`Walks` of ``seeds`` (ints) for one width, per activation: one compiled
    program, the kernels drawn once per seed for all the activations."""
    # Padded to whole batches (the extra seeds are dropped): lax.map would otherwise compile
    # its body a second time for the remainder.
    padded = list(seeds) + [0] * (-len(seeds) % SEED_BATCH)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(padded, jnp.uint32))

    def one_seed(k):
        z, x, r = walk_draws(k, width, depth)
        return jnp.stack([walk_of_draws(z, x, r, a) for a in activations])

    f = jax.jit(lambda ks: jax.lax.map(one_seed, ks, batch_size=SEED_BATCH))
    logs = np.asarray(f(keys), np.float64)[:len(seeds)]   # [S, A, depth]
    walks = {}
    for i, activation in enumerate(activations):
        a_logs = logs[:, i]
        alive = np.all(np.isfinite(a_logs), axis=1)
        a_logs = np.where(alive[:, None], a_logs, 0.0)
        walks[activation] = Walks(np.where(alive[:, None], a_logs - a_logs[:, -1:], np.nan),
                                  alive)
    return walks


def summarise(walks: Walks, width: int, activation: str) -> dict:
    """Measured drift and variance against the theory, as plain floats.

    ``steps = depth − 1`` increments separate layer 1 from the top layer. Drift per layer:
    the mean over living seeds of the bottom walk value / steps (its standard error beside
    it) and the theory's step mean; spread per layer: the theory's step std.
    """
    w = walks.walk[walks.alive]
    depth = w.shape[1]
    steps = depth - 1
    gain = float(random_walk_gain(activation, width))
    step = th.random_walk_step(width, gain, activation)
    bottom = w[:, 0]
    n = bottom.size
    var = float(bottom.var(ddof=1))
    var_theory = steps * float(step.var)
    return {
        "activation": activation, "width": width, "depth": depth, "steps": steps,
        "gain": gain, "seeds": int(walks.alive.size), "alive": n,
        "dead_share": 1.0 - n / walks.alive.size,
        "dead_share_theory": (th.relu_dead_layer_probability(width, depth)
                              if activation == "relu" else 0.0),
        "drift_per_layer": float(bottom.mean()) / steps,
        "drift_se": float(np.sqrt(var / n)) / steps,
        "drift_theory": float(step.mean),
        "step_std_theory": float(np.sqrt(step.var)),
        "var": var,
        "var_se": var * float(np.sqrt(2.0 / (n - 1))),
        "var_theory": var_theory,
        "var_ratio": var / var_theory,
    }


def compute(seeds, *, widths=WIDTHS, activations=ACTIVATIONS, depth: int = DEPTH
            ) -> dict:
    """Every (activation, width)'s summary, per-layer mean and variance of the walk (for the
    figure) and the seconds its width's program took (shared by the activations). Plain
    lists, JSON-able."""
    by_case = {}
    for width in widths:
        t0 = time.perf_counter()
        walks = compute_walks(seeds, width, tuple(activations), depth)
        seconds = time.perf_counter() - t0
        for activation, wk in walks.items():
            w = wk.walk[wk.alive]
            by_case[activation, width] = {**summarise(wk, width, activation),
                                          "mean_by_layer": w.mean(axis=0).tolist(),
                                          "var_by_layer": w.var(axis=0, ddof=1).tolist(),
                                          "seconds": seconds}
    cases = [by_case[a, w] for a in activations for w in widths]
    return {"depth": depth, "seeds": len(seeds), "cases": cases}
