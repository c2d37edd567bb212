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
# Bucket k of a value = number of inner edges <= value (values beyond the outer edges land in
# the end buckets).
INNER_EDGES = HIST_EDGES[1:-1]


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
    edges = jnp.asarray(INNER_EDGES)
    # Bucket index = number of inner edges <= value; outside values clamp to the end buckets.
    idx = (vals[..., None] >= edges[None, None, :]).sum(-1)
    onehot = (idx[..., None] == jnp.arange(N_BUCKETS)[None, None, :]) & mask[..., None]
    counts = onehot.sum(axis=1, dtype=jnp.int32)
    return counts, value_stats(vals, mask)


def value_stats(vals: jax.Array, mask: jax.Array) -> jax.Array:
    """(min, max, sum, sum of squares) of the masked entries along axis 1, stacked at axis
    1: [A, E, ...] -> [A, 4, ...]. Min/max of no entries are +inf/-inf."""
    return jnp.stack([
        jnp.where(mask, vals, jnp.inf).min(axis=1),
        jnp.where(mask, vals, -jnp.inf).max(axis=1),
        jnp.where(mask, vals, 0.0).sum(axis=1),
        jnp.where(mask, vals * vals, 0.0).sum(axis=1),
    ], axis=1)


def bucket_histogram(vals: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Counts [R, K] int32 and :func:`value_stats` [R, 4] of the masked entries of ``vals``
    [R, E]: the buckets of :func:`histogram`, found per entry (:func:`bucket_index`) and
    counted with one scatter-add, so the work grows with the entries, not entries x K (for
    large kernels; :func:`histogram`'s compare-and-count suits tiny ones)."""
    r = vals.shape[0]
    idx = bucket_index(vals)
    flat = (idx + N_BUCKETS * jnp.arange(r, dtype=idx.dtype)[:, None]).reshape(-1)
    counts = jnp.zeros((r * N_BUCKETS,), jnp.int32).at[flat].add(
        mask.reshape(-1).astype(jnp.int32), indices_are_sorted=False, mode="promise_in_bounds")
    return counts.reshape(r, N_BUCKETS), value_stats(vals, mask)


# The positive inner edges M_0 < ... < M_51 as float32 bit patterns, and per "cell" of
# positive float32 bit patterns (the top bits: exponent and 3 mantissa bits, 1/8 of a binade,
# 0.038 decades) the count of edges below the cell and the one edge inside it (an edge every
# 0.25 decades puts at most one in a cell; int32 max where there is none). Non-negative
# floats order like their bit patterns, so two table reads and one integer comparison count
# the edges below a value exactly.
_CELL_SHIFT = 20
_MAG_BITS = INNER_EDGES[INNER_EDGES > 0].view(np.int32)


def _cell_tables() -> tuple[np.ndarray, np.ndarray]:
    n_cells = (np.iinfo(np.int32).max >> _CELL_SHIFT) + 1
    starts = np.arange(n_cells, dtype=np.int64) << _CELL_SHIFT
    below = np.searchsorted(_MAG_BITS, starts, side="left").astype(np.int32)  # #{M_j < start}
    inside = np.full(starts.shape, np.iinfo(np.int32).max, np.int32)
    cells = _MAG_BITS >> _CELL_SHIFT
    assert np.unique(cells).size == cells.size, "two histogram edges in one cell"
    inside[cells] = _MAG_BITS
    return below, inside


_CELL_BELOW, _CELL_EDGE = _cell_tables()


def bucket_index(v: jax.Array) -> jax.Array:
    """Number of inner edges <= v (int32, same shape), exactly: the edges below |v|'s cell,
    plus whether |v| reaches the cell's own edge (integer compares of bit patterns; no
    logarithm). Negative v = -a counts the negative edges -M_j <= v, i.e. M_j >= a."""
    n_mag = _MAG_BITS.size                                  # 52 magnitudes on each side
    a = jax.lax.bitcast_convert_type(jnp.abs(v), jnp.int32)
    cell = a >> _CELL_SHIFT
    below, edge = jnp.asarray(_CELL_BELOW)[cell], jnp.asarray(_CELL_EDGE)[cell]
    le = below + (a >= edge).astype(jnp.int32)              # #{M_j <= a}
    lt = below + (a > edge).astype(jnp.int32)               # #{M_j < a}
    return jnp.where(v >= 0, n_mag + le, n_mag - lt)


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
