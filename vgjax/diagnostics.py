"""On-device per-layer reductions of one run's kernels: |grad| sums, norms, L1, histograms.

Layers are indexed as in the history arrays: ``i < D`` is hidden layer ``i + 1`` and ``D`` is
the output layer, so every function here returns arrays with a trailing or leading ``L = D + 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vgjax.model import Params

# Exponential buckets, as TensorBoard uses: 4 per decade from 1e-10 to 1e3 on each side of
# zero, plus one bucket around zero. Values beyond +-1e3 land in the outermost buckets (the
# exact min/max are kept beside the counts).
_MAGNITUDES = 10.0 ** np.linspace(-10.0, 3.0, 13 * 4 + 1)
HIST_EDGES = np.concatenate([-_MAGNITUDES[::-1], _MAGNITUDES]).astype(np.float32)
N_BUCKETS = HIST_EDGES.size - 1


def layer_kernels(tree: Params) -> tuple[jax.Array, jax.Array]:
    """Hidden kernels [D, P, P] and output kernel [P] (or [P, C]) of a params or grads tree."""
    return tree["kernels"], tree["out_kernel"]


def abs_sums(tree: Params) -> jax.Array:
    """[L] sum of |entries| of each layer's kernel (padding entries are zero)."""
    hidden, out = layer_kernels(tree)
    return jnp.concatenate([jnp.abs(hidden).sum(axis=(1, 2)), jnp.abs(out).sum()[None]])


def l2_norms(tree: Params) -> jax.Array:
    """[L] L2 (Frobenius) norm of each layer's kernel."""
    hidden, out = layer_kernels(tree)
    sq = jnp.concatenate([jnp.square(hidden).sum(axis=(1, 2)), jnp.square(out).sum()[None]])
    return jnp.sqrt(sq)


def real_counts(depth, width, *, max_depth: int, n_features: int = 2,
                n_outputs: int = 1) -> jax.Array:
    """[L] float32 number of real kernel entries per layer: F*w, w*w, ..., output w*C; 0 if
    absent (F input features, C = n_outputs logits)."""
    layers = jnp.arange(max_depth)
    fan_in = jnp.where(layers == 0, n_features, width)
    hidden = jnp.where(layers < depth, fan_in * width, 0)
    return jnp.concatenate([hidden, jnp.asarray(width * n_outputs)[None]]).astype(jnp.float32)


def layer_present(depth, *, max_depth: int) -> jax.Array:
    """[L] bool: the run has this layer (hidden layers below ``depth``, and the output)."""
    return jnp.concatenate([jnp.arange(max_depth) < depth, jnp.ones((1,), bool)])


def histogram(tree: Params, hidden_mask: jax.Array, out_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Histogram each layer's real kernel entries on the fixed :data:`HIST_EDGES`.

    A compare-and-count against fixed edges (deterministic, no scatter). The counts equal
    ``numpy.histogram(clip(v, edges[0], edges[-1]), HIST_EDGES)`` of the real, non-NaN
    entries: buckets are [e_k, e_k+1) (the last one closed), values beyond the outer edges
    (and +-inf) land in the outermost buckets, NaN is left out.

    Args:
      tree: params or grads with kernels [D, P, P] and out_kernel [P] (or [P, C]).
      hidden_mask: [D, P, P] bool, real hidden entries; out_mask: [P] (or [P, C]) bool.
    Returns:
      counts [L, K] int32 and stats [L, 4] float32 (min, max, sum, sum of squares) over the
      real entries; min/max of a layer with no entries are +inf/-inf.
    """
    hidden, out = layer_kernels(tree)
    d, p, _ = hidden.shape
    # [L, P*P] values and masks; the output kernel is padded into the same shape.
    flat = lambda o: jnp.pad(o.reshape(-1), (0, p * p - o.size))[None]
    vals = jnp.concatenate([hidden.reshape(d, p * p), flat(out)])
    mask = jnp.concatenate([hidden_mask.reshape(d, p * p), flat(out_mask)])
    # NaN is in no bucket and no statistic, as numpy.histogram leaves it out.
    mask = mask & ~jnp.isnan(vals)
    edges = jnp.asarray(HIST_EDGES[1:-1])
    # Bucket index = number of inner edges <= value; outside values clamp to the end buckets.
    idx = (vals[..., None] >= edges[None, None, :]).sum(-1)
    onehot = (idx[..., None] == jnp.arange(N_BUCKETS)[None, None, :]) & mask[..., None]
    counts = onehot.sum(axis=1, dtype=jnp.int32)
    stats = jnp.stack([
        jnp.where(mask, vals, jnp.inf).min(axis=1),
        jnp.where(mask, vals, -jnp.inf).max(axis=1),
        jnp.where(mask, vals, 0.0).sum(axis=1),
        jnp.where(mask, jnp.square(vals), 0.0).sum(axis=1),
    ], axis=1)
    return counts, stats


def divergence(curves: jax.Array, layers: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The divergence rule of every engine: the first epoch whose curves or layer statistics
    are not finite.

    Args:
      curves: [E, 4, ...]; layers: [E, 3, L, ...] (run axes, if any, last).
    Returns:
      diverged_epoch [...] int32 (1-based, -1 never) and valid [E, ...] bool (the epochs
      before it).
    """
    bad = ~(jnp.isfinite(curves).all(axis=1) & jnp.isfinite(layers).all(axis=(1, 2)))  # [E, ...]
    first_bad = jnp.argmax(bad, axis=0)
    anybad = bad.any(axis=0)
    diverged = jnp.where(anybad, first_bad + 1, -1).astype(jnp.int32)
    epochs = jnp.arange(curves.shape[0]).reshape((-1,) + (1,) * first_bad.ndim)
    valid = jnp.where(anybad[None], epochs < first_bad[None], True)
    return diverged, valid
