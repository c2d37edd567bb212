"""Per-layer signal probes of an MLP: pure on-device functions of its layers and a data batch.

The net is given explicitly as a sequence of hidden layers ``[(kernel [n_in, n_out],
bias [n_out]), ...]`` (Flax's ``x @ kernel + bias`` convention), or as one stack
``(kernels [L, N, N], biases [L, N])`` of equal square layers, which runs under ``lax.scan``
(compile time independent of depth). So the probes work with any engine's weights: an exact per-layer pytree, or the padded layout of a grid run (every kernel
[P, P]; pass the run's traced ``depth`` and ``width`` and the probes treat the padding exactly
as :class:`vgjax.model.MaskedMLP` does: units >= width are zero, layers >= depth pass their
input through, and those layers' probe values are NaN). Everything is jit-able and vmappable
over runs. The output layer is not a probe target: the signal probes concern the hidden stack
(``h_L`` is the last hidden layer's pre-activation, as in Pennington et al. 2017).

Shapes: B data points, L hidden layers, n_l units of layer l, K histogram buckets.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from vgjax.model import activation_fn
from vgjax.theory import Activation, derivative_fn

Layers = Sequence[tuple[jax.Array, jax.Array]] | tuple[jax.Array, jax.Array]

SATURATION_THRESHOLD = 0.05
"""A unit is saturated on a point when |φ′(h)| < 0.05 (Glorot & Bengio 2010's sense)."""

LOG_SIGMA_EDGES = jnp.linspace(-8.0, 8.0, 65)
"""Default bucket edges [K+1] of the log10 singular value histogram (values beyond clip in)."""


def preactivations(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                   width=None) -> list[jax.Array]:
    """Pre-activations ``h_l = φ(h_{l-1}) W_l + b_l`` of every layer: a list of [B, n_l]
    (for a stack: one array [L, B, N]).

    ``x [B, n_0]`` is zero-padded to the first kernel's rows when narrower (the grid layout).
    With ``depth``/``width`` given (scalars, may be traced), the padded stack is run as the
    grid model runs it: post-activations of units >= width are zeroed and layers >= depth
    pass their input through (their entries here are then meaningless; the probes NaN them).
    """
    phi = activation_fn(activation)
    if _is_stack(layers):
        return _stacked_preactivations(layers, x, phi, depth=depth, width=width)
    h = x
    out = []
    for i, (kernel, bias) in enumerate(layers):
        if h.shape[-1] < kernel.shape[0]:
            h = jnp.pad(h, ((0, 0), (0, kernel.shape[0] - h.shape[-1])))
        z = h @ kernel + bias[None, :]
        out.append(z)
        a = phi(z)
        if width is not None:
            a = a * (jnp.arange(a.shape[-1]) < width)[None, :].astype(a.dtype)
        h = a if depth is None else jnp.where(i < depth, a, h)
    return out


def _is_stack(layers) -> bool:
    return (isinstance(layers, tuple) and len(layers) == 2 and hasattr(layers[0], "ndim")
            and layers[0].ndim == 3)


def _stacked_preactivations(layers, x, phi, *, depth, width) -> jax.Array:
    kernels, biases = layers
    n = kernels.shape[-1]
    h = jnp.pad(x, ((0, 0), (0, n - x.shape[-1]))) if x.shape[-1] < n else x
    unit = None if width is None else (jnp.arange(n) < width)[None, :].astype(h.dtype)

    def step(h, layer):
        i, kernel, bias = layer
        z = h @ kernel + bias[None, :]
        a = phi(z) if unit is None else phi(z) * unit
        return (a if depth is None else jnp.where(i < depth, a, h)), z
    _, zs = jax.lax.scan(step, h, (jnp.arange(kernels.shape[0]), kernels, biases))
    return zs


def _each(f, zs):
    """``f`` applied to every layer's pre-activations: a list, or vmapped over a stack."""
    return jax.vmap(f)(zs) if hasattr(zs, "ndim") else [f(z) for z in zs]


def _per_layer(values, width, depth) -> jax.Array:
    """[L] means of per-unit values ``[n_l]`` (a list, or a stack [L, N]) over the real
    units; NaN for layers >= depth."""
    if hasattr(values, "ndim"):
        real = jnp.ones(values.shape[1:], bool) if width is None else (
            jnp.arange(values.shape[1]) < width)
        m = jnp.sum(jnp.where(real[None, :], values, 0.0), axis=1) / jnp.maximum(jnp.sum(real), 1)
        return m if depth is None else jnp.where(jnp.arange(values.shape[0]) < depth, m, jnp.nan)
    out = []
    for i, v in enumerate(values):
        real = jnp.ones(v.shape, bool) if width is None else jnp.arange(v.shape[0]) < width
        m = jnp.sum(jnp.where(real, v, 0.0)) / jnp.maximum(jnp.sum(real), 1)
        out.append(m if depth is None else jnp.where(i < depth, m, jnp.nan))
    return jnp.stack(out)


def second_moment(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                  width=None) -> jax.Array:
    """[L] measured q^l: mean of h_l² over the data points and the layer's units."""
    zs = preactivations(layers, x, activation, depth=depth, width=width)
    return _per_layer(_each(lambda z: jnp.mean(z * z, axis=0), zs), width, depth)


def saturation(layers: Layers, x: jax.Array, activation: Activation, *, depth=None, width=None,
               threshold: float = SATURATION_THRESHOLD) -> jax.Array:
    """[L] share of (unit, point) pairs of each layer with |φ′(h)| < ``threshold``."""
    dphi = derivative_fn(activation)
    zs = preactivations(layers, x, activation, depth=depth, width=width)
    return _per_layer(_each(lambda z: jnp.mean(jnp.abs(dphi(z)) < threshold, axis=0), zs),
                      width, depth)


def dead_units(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
               width=None) -> jax.Array:
    """[L] share of each layer's units whose activation φ(h) is 0 on every data point.

    For ReLU: units with h <= 0 everywhere, which pass neither signal nor gradient.
    """
    phi = activation_fn(activation)
    zs = preactivations(layers, x, activation, depth=depth, width=width)
    return _per_layer(_each(lambda z: jnp.all(phi(z) == 0, axis=0).astype(jnp.float32), zs),
                      width, depth)


def input_output_jacobian(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                          width=None) -> jax.Array:
    """``J = ∂h_L/∂x`` at each data point: [B, n_L, n_0], by ``vmap(jacfwd)`` on the layers.

    With ``depth`` given, ``h_L`` is the pre-activation of the run's last real layer
    ``depth - 1`` (picked by a dynamic index, so depth may be traced).
    """
    def last(xi):
        zs = preactivations(layers, xi[None, :], activation, depth=depth, width=width)
        if depth is None:
            return zs[-1][0]
        stack = zs if hasattr(zs, "ndim") else jnp.stack(zs)
        return stack[depth - 1, 0]
    return jax.vmap(jax.jacfwd(last))(x)


def singular_values(jac: jax.Array, *, n_in=None, n_out=None, lapack: bool = False
                    ) -> tuple[jax.Array, jax.Array]:
    """Normalised singular values of Jacobians ``[B, n_out, n_in]``: ([B, k], valid [B, k]).

    ``n_in``/``n_out`` are the real sizes (may be traced; default: the array's): a padded J
    has exactly ``k_real = min(n_in, n_out)`` non-trivial singular values, the largest ones,
    and the others are marked invalid. Values are scaled by ``√(k_real / n_out)`` so their
    mean square is ``‖J‖_F² / n_out``, the per-output-unit gain the mean-field theory
    predicts; for square J (n_in = n_out) there is no scaling. By default no LAPACK call (nor
    any other library call) is in the program, so a probed grid shards over every CPU
    device: up to two columns (static ``jac.shape[-1]``) in closed form, more by one-sided
    Jacobi (:func:`jacobi_singular_values`); both keep the small singular values' relative
    accuracy, which the log10 σ histogram needs. ``lapack=True``: ``jnp.linalg.svd`` for
    more than two columns, far faster on wide Jacobians, for programs that are not sharded
    over several CPU devices (the studies at initialisation).
    """
    n_in = jac.shape[-1] if n_in is None else n_in
    n_out = jac.shape[-2] if n_out is None else n_out
    if jac.shape[-1] > 2 and lapack:
        s = jnp.linalg.svd(jac, compute_uv=False)                   # [B, k] descending
    elif jac.shape[-1] > 2:
        s = jacobi_singular_values(jac)
    else:
        s = _few_column_singular_values(jac)
    k_real = jnp.minimum(n_in, n_out)
    valid = jnp.broadcast_to((jnp.arange(s.shape[-1]) < k_real)[None, :], s.shape)
    return s * jnp.sqrt(k_real / n_out), valid


# One-sided Jacobi: the most sweeps, and the cosine |a_p . a_q| / (|a_p| |a_q|) of two columns
# under which a pair counts as orthogonal (the column norms then err by O(cosine²), far
# below float32 rounding). A batch stops when its worst pair of a sweep is under it; random
# 64-column matrices need about 10 sweeps (6 leave errors of 1e-3 sigma_max).
JACOBI_SWEEPS = 16
JACOBI_TOL = 1e-4


def jacobi_singular_values(a: jax.Array, sweeps: int = JACOBI_SWEEPS,
                           tol: float = JACOBI_TOL) -> jax.Array:
    """Singular values [..., n] (descending) of matrices ``a`` [..., m, n] with m >= n, by
    one-sided Jacobi (Hestenes) written in lax ops: no LAPACK or other library call, so it
    runs inside a program sharded over several CPU devices (a batched ``gesdd`` there was
    seen to deadlock).

    Column pairs are rotated until every two columns are orthogonal; the singular values
    are then the column norms. Each sweep visits all n(n-1)/2 pairs in n-1 rounds of n/2
    disjoint pairs (the round-robin "circle" order, one rotation of all of a round's pairs
    at once), and sweeps repeat (at most ``sweeps``) until the largest relative column
    product of a sweep is under ``tol``. One-sided Jacobi computes small singular values to
    high relative accuracy (Demmel and Veselić 1992), where the eigenvalues of aᵀa lose
    everything below √eps σ_max. Each matrix is first scaled by its largest entry, so the
    squared column norms neither overflow nor underflow before ~1e-19 σ_max.
    """
    n = a.shape[-1]
    scale = jnp.max(jnp.abs(a), axis=(-2, -1), keepdims=True)
    a = a / jnp.where(scale > 0, scale, 1.0)
    if n % 2:  # a zero column: pairs it with each column in turn and never rotates
        a = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (1,), a.dtype)], axis=-1)
    k = a.shape[-1] // 2
    top, bot = a[..., :k], a[..., k:]
    tiny = jnp.finfo(a.dtype).tiny

    def rotate(top, bot):
        alpha = jnp.sum(top * top, axis=-2)
        beta = jnp.sum(bot * bot, axis=-2)
        gamma = jnp.sum(top * bot, axis=-2)                           # [..., k]
        norms = jnp.sqrt(alpha) * jnp.sqrt(beta)
        off = jnp.abs(gamma) / jnp.maximum(norms, tiny)
        turn = off > tol
        # the rotation that zeroes the pair's product: t = tan θ, the smaller root of
        # t² + 2ζt - 1 = 0 (|θ| <= π/4), written without overflow for large |ζ|
        zeta = (beta - alpha) / (2.0 * jnp.where(turn, gamma, 1.0))
        big = jnp.abs(zeta) > 1e15
        root = jnp.sqrt(1.0 + jnp.where(big, 0.0, zeta * zeta))
        t = jnp.where(big, 0.5 / zeta, jnp.sign(zeta) / (jnp.abs(zeta) + root))
        t = jnp.where(zeta == 0, 1.0, t)
        c = jnp.where(turn, 1.0 / jnp.sqrt(1.0 + t * t), 1.0)[..., None, :]
        s = jnp.where(turn, t, 0.0)[..., None, :] * c
        # a NaN matrix (a diverged run) never turns and does not hold the others back
        return c * top - s * bot, s * top + c * bot, jnp.max(jnp.where(turn, off, 0.0))

    def one_round(carry, _):
        top, bot, worst = carry
        top, bot, off = rotate(top, bot)
        if k > 1:  # the circle order: column 0 stays, the others move one place round
            top, bot = (jnp.concatenate([top[..., :1], bot[..., :1], top[..., 1:-1]], axis=-1),
                        jnp.concatenate([bot[..., 1:], top[..., -1:]], axis=-1))
        return (top, bot, jnp.maximum(worst, off)), None

    def sweep(carry):
        top, bot, _, i = carry
        (top, bot, worst), _ = jax.lax.scan(one_round, (top, bot, jnp.zeros((), a.dtype)),
                                            None, length=2 * k - 1)
        return top, bot, worst, i + 1

    top, bot, _, _ = jax.lax.while_loop(
        lambda c: (c[3] < sweeps) & (c[2] > tol), sweep,
        (top, bot, jnp.asarray(jnp.inf, a.dtype), jnp.zeros((), jnp.int32)))
    cols = jnp.concatenate([top, bot], axis=-1)
    s = jnp.sqrt(jnp.sum(cols * cols, axis=-2))[..., :n] * scale[..., 0, :]
    return -jnp.sort(-s, axis=-1)


def _few_column_singular_values(jac: jax.Array) -> jax.Array:
    """Singular values [B, k] (descending) of matrices ``[B, m, n]`` with n <= 2 columns,
    without LAPACK: Gram-Schmidt R = [[a, b], [0, d]] of the two columns, then the 2x2
    triangle's singular values as LAPACK's ``slas2`` computes them (σ_max = (√((a+d)² + b²)
    + √((a-d)² + b²)) / 2, σ_min = a d / σ_max), so the smaller one keeps full relative
    accuracy where ``eigh`` of JᵀJ would lose it below √eps σ_max."""
    norm = lambda v: jnp.sqrt(jnp.sum(v * v, axis=-1))
    j1 = jac[..., 0]
    a = norm(j1)                                                     # [B]
    if jac.shape[-1] == 1:
        return a[..., None]
    j2 = jac[..., 1]
    q1 = j1 / jnp.where(a > 0, a, 1.0)[..., None]
    b = jnp.sum(q1 * j2, axis=-1)
    d = norm(j2 - b[..., None] * q1)
    smax = 0.5 * (jnp.sqrt((a + d) ** 2 + b * b) + jnp.sqrt((a - d) ** 2 + b * b))
    smin = jnp.where(smax > 0, a * d / jnp.where(smax > 0, smax, 1.0), 0.0)
    return jnp.stack([smax, jnp.minimum(smin, smax)], axis=-1)


def spectrum_summary(s: jax.Array, valid: jax.Array,
                     edges: jax.Array = LOG_SIGMA_EDGES) -> dict[str, jax.Array]:
    """Summary of singular values ``s`` [B, k] (``valid`` [B, k] bool).

    Returns ``mean_sq`` [] (mean σ²), ``max`` [] (max σ) and ``log_hist`` [K]: counts of
    log10 σ in the buckets ``edges`` [K+1] (left-closed; values outside, and σ = 0, are
    counted in the first or last bucket so every valid value is counted once).
    """
    n = jnp.maximum(jnp.sum(valid), 1)
    mean_sq = jnp.sum(jnp.where(valid, s * s, 0.0)) / n
    smax = jnp.max(jnp.where(valid, s, -jnp.inf))
    logs = jnp.log10(jnp.maximum(s, jnp.finfo(s.dtype).tiny))
    k = edges.shape[0] - 1
    bucket = jnp.clip(jnp.searchsorted(edges, logs, side="right") - 1, 0, k - 1)
    hist = jnp.sum(jax.nn.one_hot(bucket, k, dtype=jnp.int32)
                   * valid[..., None].astype(jnp.int32), axis=(0, 1))
    return {"mean_sq": mean_sq, "max": smax, "log_hist": hist}


def layer_probes(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                 width=None) -> dict[str, jax.Array]:
    """The per-layer probes from one forward pass: ``q``, ``saturation`` and ``dead``, each
    [L] (NaN for layers >= depth), as :func:`second_moment`, :func:`saturation` and
    :func:`dead_units` compute them."""
    phi, dphi = activation_fn(activation), derivative_fn(activation)
    zs = preactivations(layers, x, activation, depth=depth, width=width)
    return {
        "q": _per_layer(_each(lambda z: jnp.mean(z * z, axis=0), zs), width, depth),
        "saturation": _per_layer(_each(
            lambda z: jnp.mean(jnp.abs(dphi(z)) < SATURATION_THRESHOLD, axis=0), zs), width,
            depth),
        "dead": _per_layer(_each(lambda z: jnp.all(phi(z) == 0, axis=0).astype(jnp.float32),
                                 zs), width, depth),
    }


def jacobian_probes(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                    width=None, n_in=None, edges: jax.Array = LOG_SIGMA_EDGES
                    ) -> dict[str, jax.Array]:
    """The input-output Jacobian's ``jac_mean_sq`` [], ``jac_max`` [] and ``jac_log_hist``
    [K] over the points ``x`` (see :func:`singular_values`, :func:`spectrum_summary`)."""
    jac = input_output_jacobian(layers, x, activation, depth=depth, width=width)
    s, valid = singular_values(jac, n_in=x.shape[-1] if n_in is None else n_in,
                               n_out=jac.shape[-2] if width is None else width)
    summ = spectrum_summary(s, valid, edges)
    return {"jac_mean_sq": summ["mean_sq"], "jac_max": summ["max"],
            "jac_log_hist": summ["log_hist"]}


def signal_probes(layers: Layers, x: jax.Array, activation: Activation, *, depth=None,
                  width=None, n_in=None, edges: jax.Array = LOG_SIGMA_EDGES
                  ) -> dict[str, jax.Array]:
    """Every probe at once (one forward pass for the per-layer ones):

    ``q`` [L], ``saturation`` [L], ``dead`` [L] (NaN for layers >= depth), and the input-output
    Jacobian's ``jac_mean_sq`` [], ``jac_max`` [] and ``jac_log_hist`` [K]. ``n_in`` is the
    data's real feature count (default ``x.shape[-1]``); the Jacobian's output size is
    ``width`` (default: the last kernel's columns).
    """
    return {**layer_probes(layers, x, activation, depth=depth, width=width),
            **jacobian_probes(layers, x, activation, depth=depth, width=width, n_in=n_in,
                              edges=edges)}
