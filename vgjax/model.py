"""The MLP: activations, Keras-faithful initialisers and a masked, stacked Flax model.

One parameter layout serves every run of a grid. With ``D`` the grid's largest depth, ``F``
the data's input width and ``P >= max(largest width, F)`` (inputs are zero-padded from ``F``
to ``P`` features):

=============  ===============  ==================================================
leaf           shape            meaning
=============  ===============  ==================================================
kernels        [D, P, P]        hidden layer i maps P -> P (layer 0 reads the input)
biases         [D, P]
out_kernel     [P] or [P, C]    the output Dense kernel: one logit for two classes,
                                ``C`` logits for ``C > 2`` classes
out_bias       [] or [C]        its bias
=============  ===============  ==================================================

A run of depth ``d`` and width ``w`` uses hidden layers ``0..d-1``; the others are masked to
the exact identity.

Residual connections and normalisation (``Config.residual``, ``Config.norm``, per run in a
grid: :class:`Arch`; see :class:`MaskedMLP`) add leaves in the same layout, only when some
run of the program has them (:class:`Features`): ``res_alpha`` [D]
(ReZero's learnable branch scales; entry 0 unused), ``norm_scale`` and ``norm_offset`` [D, P]
(the normalisation's learnt scale and offset), and BatchNorm's running averages, which are
not parameters but the ``batch_stats`` collection: ``mean`` and ``var`` [D, P]
(:func:`init_architecture`, :func:`init_batch_stats`). Units ``>= w`` are masked to zero and their kernel entries start at zero,
so they receive zero gradient and change nothing: the run computes exactly what a model built
with ``d`` layers of ``w`` units computes (:class:`ExactMLP`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vgjax.config import RANDOM_WALK_ACTIVATIONS

N_FEATURES = 2
# Per-element PRNG streams are indexed as fold_in(layer_key, row * _ROW_STRIDE + col), so a
# run's draws do not depend on how far the grid pads its layers.
_ROW_STRIDE = 1 << 16
_OUTPUT_LAYER_TAG = 1 << 20
# Keras's truncated-normal variance scaling divides by the std of a unit normal truncated to
# [-2, 2], so the truncated draws keep the intended variance.
_TRUNC_STD = 0.87962566103423978

Params = dict[str, jax.Array]

Activation = Callable[[jax.Array], jax.Array]

ACTIVATION_FNS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    # Keras's gelu is the exact (erf) form by default.
    "gelu": partial(jax.nn.gelu, approximate=False),
    # Keras LeakyReLU's default slope.
    "leaky_relu": partial(jax.nn.leaky_relu, negative_slope=0.3),
    "linear": lambda z: z,
}


def activation_fn(activation: "str | Activation") -> Activation:
    """The activation called ``activation`` (see :data:`ACTIVATION_FNS`), or the callable itself.

    Raises a one-line ``ValueError`` for an unknown name."""
    if callable(activation):
        return activation
    if activation not in ACTIVATION_FNS:
        raise ValueError(f"activation: {activation!r} is not known; allowed: "
                         f"{', '.join(ACTIVATION_FNS)} or a JAX-traceable callable")
    return ACTIVATION_FNS[activation]


# Every initialiser is a function of ONE uniform [0, 1) draw per kernel entry: u =
# jax.random.uniform(entry_key), so a whole run's draws take one batched hash (plus two for
# the keys), not one per initialiser, layer and leaf: the random code was a third of a fast
# grid program's compile time. The normal draws below apply to u what jax.random.normal /
# truncated_normal apply to the key's own uniform draw; tests check them bit for bit.
_SQRT2 = np.float32(np.sqrt(2.0))


def _uniform_range(u, lo, hi):
    """The uniform on [lo, hi) that jax.random's normal draws start from, given u."""
    lo, hi = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    return jnp.maximum(lo, u * (hi - lo) + lo)


def _normal(u):
    """jax.random.normal(key, (), float32) from u = jax.random.uniform(key)."""
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    return _SQRT2 * jax.lax.erf_inv(_uniform_range(u, lo, np.float32(1.0)))


def _truncated_normal(u, lower: float, upper: float):
    """jax.random.truncated_normal(key, lower, upper, (), float32) from u."""
    lower, upper = jnp.float32(lower), jnp.float32(upper)
    a, b = jax.lax.erf(lower / _SQRT2), jax.lax.erf(upper / _SQRT2)
    out = _SQRT2 * jax.lax.erf_inv(_uniform_range(u, a, b))
    return jnp.clip(out, jnp.nextafter(lower, jnp.float32(np.inf)),
                    jnp.nextafter(upper, jnp.float32(-np.inf)))


def _uniform(u, lo, hi):
    # Keras's uniform initialisers: RandomUniform(0, 1) scaled to [lo, hi).
    return u * (hi - lo) + lo


def _truncated(u, std):
    return _truncated_normal(u, -2.0, 2.0) * (std / _TRUNC_STD)


# One kernel entry's value, from its uniform draw u and the layer's *real* fan-in/fan-out.
_SCALAR_INITS = {
    "uniform": lambda u, fi, fo: _uniform(u, 0.0, 1.0),  # Keras RandomUniform(0, 1)
    "he_uniform": lambda u, fi, fo: _uniform(u, -jnp.sqrt(6.0 / fi), jnp.sqrt(6.0 / fi)),
    "lecun_uniform": lambda u, fi, fo: _uniform(u, -jnp.sqrt(3.0 / fi), jnp.sqrt(3.0 / fi)),
    "glorot_uniform": lambda u, fi, fo: _uniform(
        u, -jnp.sqrt(6.0 / (fi + fo)), jnp.sqrt(6.0 / (fi + fo))),
    "he_normal": lambda u, fi, fo: _truncated(u, jnp.sqrt(2.0 / fi)),
    "lecun_normal": lambda u, fi, fo: _truncated(u, jnp.sqrt(1.0 / fi)),
    "glorot_normal": lambda u, fi, fo: _truncated(u, jnp.sqrt(2.0 / (fi + fo))),
    "orthogonal": lambda u, fi, fo: _normal(u),
    # Variance-scaling schemes of signal-propagation studies: Var = sigma_w^2 / fan_in once
    # scaled by sqrt(weight_var) (see init_params).
    "normal": lambda u, fi, fo: _normal(u) / jnp.sqrt(fi),
    "symmetric_uniform": lambda u, fi, fo: _uniform(u, -jnp.sqrt(3.0 / fi), jnp.sqrt(3.0 / fi)),
    # Sussillo & Abbott's random walk: the "normal" draw times random_walk_gain (applied in
    # _kernel_from, since the gain depends on the activation as well as the fan-in).
    "random_walk": lambda u, fi, fo: _normal(u) / jnp.sqrt(fi),
}


def random_walk_gain(activation: str, fan_in) -> jax.Array:
    """Sussillo & Abbott's (2014) gain g of random-walk initialisation: kernel entries are
    N(0, g^2 / N) with N the fan-in (std g / sqrt(N), not g / N).

    ``linear``: g = exp(1 / (2N)), which cancels the drift of ln||delta|| per layer to
    O(1/N^2) (see :func:`vgjax.theory.random_walk_increment`); ``relu``: g = sqrt(2) *
    exp(1.2 / (max(N, 6) - 2.4)), their fitted formula; ``tanh``: g = 1.13, the value their
    code uses (no formula is given). ``fan_in`` may be traced (scalar or array); returns
    float32 of its shape. One-line ``ValueError`` for any other activation.
    """
    n = jnp.asarray(fan_in, jnp.float32)
    if activation == "linear":
        return jnp.exp(0.5 / n)
    if activation == "relu":
        return jnp.sqrt(jnp.float32(2.0)) * jnp.exp(1.2 / (jnp.maximum(n, 6.0) - 2.4))
    if activation == "tanh":
        return jnp.full_like(n, 1.13)
    raise ValueError(f"activation: {activation!r} has no random-walk gain; allowed: "
                     f"{', '.join(RANDOM_WALK_ACTIVATIONS)}")
_BIAS_TAG = 1 << 21


def _entry_uniforms(parents: jax.Array, owner: jax.Array, index: jax.Array) -> jax.Array:
    """[N] float32: jax.random.uniform(fold_in(parents[owner[n]], index[n])) for every n, as
    two batched hashes (the entry keys, then their draws) whatever the entries' layers."""
    keys = jax.vmap(lambda o, i: jax.random.fold_in(parents[o], i))(owner, index)
    return jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)


def _entry_index(rows: int, cols: int) -> jax.Array:
    """[rows * cols] stream index of entry (i, j): i * _ROW_STRIDE + j (row-major)."""
    return (jnp.arange(rows)[:, None] * _ROW_STRIDE + jnp.arange(cols)[None, :]).reshape(-1)


def _kernel_from(u: jax.Array, init: str, fan_in, fan_out, activation=None) -> jax.Array:
    """One [P, P] kernel from its entries' uniform draws [P, P]: real block [fan_in,
    fan_out], padding zero. ``activation`` (a name) is read by ``random_walk`` only."""
    p = u.shape[0]
    draws = _SCALAR_INITS[init](u, fan_in, fan_out)
    if init == "random_walk":
        draws = draws * random_walk_gain(activation, fan_in)
    if init == "orthogonal":
        draws = _orthogonal(draws, fan_in, fan_out)
    i = jnp.arange(p)
    real = (i[:, None] < fan_in) & (i[None, :] < fan_out)
    return jnp.where(real, draws, 0.0)


def orthonormal_columns(a: jax.Array) -> jax.Array:
    """Q [m, n] of the QR of ``a`` [m, n] with diag(R) >= 0 (the Q that ``jnp.linalg.qr``
    gives once its columns are multiplied by sign(diag(R))), zero columns of ``a`` giving
    zero columns, by Gram-Schmidt in lax ops.

    No LAPACK call: XLA:CPU runs a batched ``geqrf`` by splitting the batch over its
    intra-op thread pool and waiting on a pool thread, so two such calls at once (the
    shards of a grid sharded over the CPU devices, or independent groups of one program)
    can take every pool thread and wait for each other forever. Each column is
    orthogonalised against the earlier ones twice (classical Gram-Schmidt with
    re-orthogonalisation), which keeps QᵀQ = I to float32 rounding for full-rank ``a``.
    """
    n = a.shape[-1]

    def column(j, q):
        # q's columns j.. are still zero, so projecting on all of q projects on the first j
        v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        v = v - q @ (v @ q)
        v = v - q @ (v @ q)
        norm = jnp.sqrt(jnp.sum(v * v))
        v = v / jnp.where(norm > 0, norm, 1.0)
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=1)

    return jax.lax.fori_loop(0, n, column, jnp.zeros(a.shape, a.dtype))


def _orthogonal(draws: jax.Array, fan_in, fan_out) -> jax.Array:
    """Keras ``Orthogonal`` of the real [fan_in, fan_out] block of padded normal draws [P, P].

    Keras draws a normal [max(fi, fo), min(fi, fo)] matrix, takes Q of its QR with the signs of
    diag(R), and transposes when fi < fo. The padding rows/columns are zero, so they stay zero
    in Q (:func:`orthonormal_columns`) and the real block's Q is unchanged.
    """
    p = draws.shape[0]
    r_real = jnp.maximum(fan_in, fan_out)
    c_real = jnp.minimum(fan_in, fan_out)
    i = jnp.arange(p)
    a = jnp.where((i[:, None] < r_real) & (i[None, :] < c_real), draws, 0.0)
    q = orthonormal_columns(a)
    return jnp.where(fan_in >= fan_out, q, q.T)


def _run_uniforms(key: jax.Array, D: int, P: int, C: int) -> tuple[jax.Array, ...]:
    """A run's uniform draws, one per parameter entry, in three batched hashes: hidden
    kernels [D, P, P], output kernel [P, C], biases [D, P], output bias [C].

    The streams: hidden kernel l's entry (i, j) from ``fold_in(fold_in(key, l), i * 2**16 +
    j)``, the output kernel's from ``fold_in(key, 2**20)`` likewise, bias l's entry j from
    ``fold_in(fold_in(key, 2**21 + l), j)`` and the output bias's from ``fold_in(key, 2**21 +
    2**20)``.
    """
    layers = jnp.arange(D)
    # parent streams: hidden kernels 0..D-1, output kernel D, biases D+1..2D, output bias 2D+1
    tags = jnp.concatenate([layers, jnp.array([_OUTPUT_LAYER_TAG]), _BIAS_TAG + layers,
                            jnp.array([_BIAS_TAG + _OUTPUT_LAYER_TAG])])
    parents = jax.vmap(lambda t: jax.random.fold_in(key, t))(tags)
    owner = jnp.concatenate([jnp.repeat(layers, P * P), jnp.full((P * C,), D),
                             D + 1 + jnp.repeat(layers, P), jnp.full((C,), 2 * D + 1)])
    index = jnp.concatenate([jnp.tile(_entry_index(P, P), D), _entry_index(P, C),
                             jnp.tile(jnp.arange(P), D), jnp.arange(C)])
    shapes = ((D, P, P), (P, C), (D, P), (C,))
    u = jnp.split(_entry_uniforms(parents, owner, index),
                  np.cumsum([np.prod(s) for s in shapes])[:-1])
    return tuple(x.reshape(s) for x, s in zip(u, shapes))


def init_kernel(key: jax.Array, p: int, init: str, fan_in, fan_out, *,
                activation: str | None = None) -> jax.Array:
    """One [P, P] kernel whose real block is [fan_in, fan_out]; padding entries are zero.

    ``fan_in`` and ``fan_out`` may be traced (they differ between runs of one grid) and are
    the layer's real sizes, never the padded ``P``. Entry (i, j) is drawn from
    ``fold_in(key, i * 2**16 + j)``, so it does not depend on ``P``. ``activation``: the
    name whose gain ``random_walk`` uses (:func:`random_walk_gain`); other inits ignore it.
    """
    u = _entry_uniforms(key[None], jnp.zeros((p * p,), jnp.int32), _entry_index(p, p))
    return _kernel_from(u.reshape(p, p), init, fan_in, fan_out, activation)


def init_params(key: jax.Array, depth, width, *, max_depth: int, p: int, init: str,
                output_init: str, n_features: int = N_FEATURES, n_outputs: int = 1,
                weight_var=1.0, bias_var=0.0, activation: str | None = None) -> Params:
    """Initialise one run's parameters in the padded layout (see module docstring).

    Args:
      key: the run's init key.
      depth, width: the run's real depth (1..max_depth) and width (1..p); may be traced.
      max_depth, p: the grid's padded sizes D and P.
      init, output_init: initialiser names for the hidden layers and the output layer.
      n_features: the data's input width F (<= p); n_outputs: 1 (two classes, one logit) or
        the number of classes C (<= p).
      weight_var: sigma_w^2, may be traced. For ``normal`` and ``symmetric_uniform`` kernel
        entries have variance sigma_w^2 / fan_in; every other initialiser is multiplied by
        sqrt(sigma_w^2) (a gain: ``orthogonal`` with gain sqrt(sigma_w^2)); 1 changes nothing.
      bias_var: sigma_b^2, may be traced: biases drawn N(0, sigma_b^2); 0 keeps Keras's zeros.
      activation: the hidden activation's name, read only by ``random_walk``
        (:func:`random_walk_gain`); a ``random_walk`` output layer takes the linear gain, as
        no activation follows it.
    Returns:
      dict with kernels [D, P, P], biases [D, P], out_kernel [P] (or [P, C]), out_bias []
      (or [C]), float32.

    Every entry has its own stream (:func:`_run_uniforms`), so a run's draws do not depend on
    the grid's padding, and sigma_b^2 > 0 leaves the kernels' draws unchanged.
    """
    D, P, C = max_depth, p, n_outputs
    layers = jnp.arange(D)
    u_k, u_o, u_b, u_ob = _run_uniforms(key, D, P, C)
    fan_in = jnp.where(layers == 0, n_features, width)
    kernels = jax.vmap(lambda u, fi: _kernel_from(u, init, fi, width, activation))(u_k, fan_in)
    kernels = jnp.where((layers < depth)[:, None, None], kernels, 0.0)
    # The output kernel's real block is [width, C]; only its first C columns are drawn (the
    # orthogonal initialiser's QR reads no other column).
    out_kernel = _kernel_from(jnp.pad(u_o, ((0, 0), (0, P - C))), output_init, width, C,
                              "linear")[:, :C]
    gain = jnp.sqrt(jnp.asarray(weight_var, jnp.float32))
    i = jnp.arange(P)
    b_std = jnp.sqrt(jnp.asarray(bias_var, jnp.float32))
    biases = _normal(u_b) * b_std
    biases = jnp.where((layers < depth)[:, None] & (i < width)[None, :], biases, 0.0)
    out_bias = _normal(u_ob) * b_std
    if n_outputs == 1:
        out_kernel, out_bias = out_kernel[:, 0], out_bias[0]
    return {
        "kernels": kernels * gain,
        # sigma_b^2 = 0 gives exact zeros (not -0.0 or NaN) whatever the draws.
        "biases": jnp.where(b_std > 0, biases, 0.0),
        "out_kernel": out_kernel * gain,
        "out_bias": jnp.where(b_std > 0, out_bias, 0.0),
    }


def kernel_mask(depth, width, *, max_depth: int, p: int, n_features: int = N_FEATURES,
                n_outputs: int = 1) -> tuple[jax.Array, jax.Array]:
    """Which kernel entries are real for a run: ([D, P, P] bool hidden, [P] (or [P, C]) bool
    output)."""
    layers = jnp.arange(max_depth)
    i = jnp.arange(p)
    fan_in = jnp.where(layers == 0, n_features, width)
    hidden = ((i[None, :, None] < fan_in[:, None, None]) & (i[None, None, :] < width)
              & (layers < depth)[:, None, None])
    out = i < width
    return hidden, (out if n_outputs == 1 else jnp.broadcast_to(out[:, None], (p, n_outputs)))


# Keras's BatchNormalization momentum and the epsilon of its BatchNormalization and
# LayerNormalization (Flax's defaults are smaller epsilons; the tests' Flax nets pass these).
NORM_EPS = 1e-3
BN_MOMENTUM = 0.99

# A run's architecture as numbers, so the runs of one compiled program may differ in it
# (:class:`Arch`): the residual branch's kind, and the normalisation's index in NORMS.
RESIDUAL_NONE, RESIDUAL_FIXED, RESIDUAL_INV_SQRT_DEPTH, RESIDUAL_REZERO = range(4)
NORM_NONE, NORM_LAYER, NORM_BATCH = range(3)
_NORM_CODES = {"none": NORM_NONE, "layer": NORM_LAYER, "batch": NORM_BATCH}


class Arch(NamedTuple):
    """One run's architecture as traced values ([] each; [R] when stacked over runs):
    ``residual`` int32 (:data:`RESIDUAL_NONE`, ``_FIXED``, ``_INV_SQRT_DEPTH``,
    ``_REZERO``), ``alpha`` float32 (the fixed branch scale of ``RESIDUAL_FIXED``, else 0)
    and ``norm`` int32 (:data:`NORM_NONE`, ``NORM_LAYER``, ``NORM_BATCH``)."""

    residual: jax.Array
    alpha: jax.Array
    norm: jax.Array


def arch_codes(residual: "str | float", norm: str) -> tuple[int, float, int]:
    """The host numbers (residual kind, fixed alpha, norm code) of a ``Config.residual``
    value ("none", a fixed alpha > 0, "inv_sqrt_depth", "rezero") and ``Config.norm``."""
    kinds = {"none": RESIDUAL_NONE, "inv_sqrt_depth": RESIDUAL_INV_SQRT_DEPTH,
             "rezero": RESIDUAL_REZERO}
    if isinstance(residual, str):
        return kinds[residual], 0.0, _NORM_CODES[norm]
    return RESIDUAL_FIXED, float(residual), _NORM_CODES[norm]


def arch_of(residual: "str | float", norm: str) -> Arch:
    """:func:`arch_codes` as an :class:`Arch` of JAX scalars."""
    kind, alpha, code = arch_codes(residual, norm)
    return Arch(jnp.int32(kind), jnp.float32(alpha), jnp.int32(code))


class Features(NamedTuple):
    """What the runs of one compiled program use (static): a residual branch, ReZero's
    learnable alpha (the ``res_alpha`` leaf), LayerNorm, BatchNorm (the ``norm_scale`` /
    ``norm_offset`` leaves with either, BatchNorm's running averages). All False: the plain
    MLP, computed by the plain code, unchanged."""

    residual: bool = False
    rezero: bool = False
    layer: bool = False
    batch: bool = False

    @property
    def norm(self) -> bool:
        """Some run normalises its pre-activations."""
        return self.layer or self.batch

    @property
    def plain(self) -> bool:
        """Every run is the plain MLP."""
        return not (self.residual or self.norm)


def features_of(architectures) -> Features:
    """The :class:`Features` of the (residual, norm) pairs ``architectures`` (Config values)."""
    pairs = list(architectures)
    return Features(residual=any(r != "none" for r, _ in pairs),
                    rezero=any(r == "rezero" for r, _ in pairs),
                    layer=any(n == "layer" for _, n in pairs),
                    batch=any(n == "batch" for _, n in pairs))


def init_architecture(max_depth: int, p: int, features: Features) -> Params:
    """The extra parameters of a residual or normalised stack, padded layout ({} for the
    plain MLP): ``res_alpha`` [D] zeros where some run is ReZero (its branch scales; entry
    0, the input projection, has no branch and stays unused), ``norm_scale`` [D, P] ones and
    ``norm_offset`` [D, P] zeros where some run normalises (the initial values of Flax's and
    Keras's LayerNorm / BatchNorm). Deterministic: no key."""
    out: Params = {}
    if features.rezero:
        out["res_alpha"] = jnp.zeros((max_depth,), jnp.float32)
    if features.norm:
        out["norm_scale"] = jnp.ones((max_depth, p), jnp.float32)
        out["norm_offset"] = jnp.zeros((max_depth, p), jnp.float32)
    return out


def init_batch_stats(max_depth: int, p: int) -> Params:
    """BatchNorm's running averages before training: ``mean`` [D, P] zeros and ``var``
    [D, P] ones (Keras's and Flax's moving mean and variance)."""
    return {"mean": jnp.zeros((max_depth, p), jnp.float32),
            "var": jnp.ones((max_depth, p), jnp.float32)}


class BlockParams(NamedTuple):
    """One layer's parameters besides its Dense kernel and bias (None where no run of the
    program uses them): ReZero's alpha [], the normalisation's scale and offset [P], and
    BatchNorm's running mean and var [P]."""

    alpha: jax.Array | None = None
    scale: jax.Array | None = None
    offset: jax.Array | None = None
    mean: jax.Array | None = None
    var: jax.Array | None = None


def arch_block(z: jax.Array, h: jax.Array, bp: BlockParams, arch: Arch, depth, width, *,
               activation: Activation, features: Features, first, train: bool,
               weight: jax.Array) -> tuple[jax.Array, tuple]:
    """One hidden layer of a residual and/or normalised run after its Dense product:
    ``phi(Norm(z))`` for the input projection (``first``), ``h + alpha * phi(Norm(z))``
    for a later layer with a residual branch, ``phi(Norm(z))`` without one; padding units
    (``>= width``) are zero.

    Args:
      z: the layer's pre-activations ``h_in W + b`` [B, P]; h: its input [B, P].
      bp: the layer's :class:`BlockParams`; arch: the run's :class:`Arch` (traced);
        depth, width: the run's real sizes (may be traced); first: a bool (may be traced).
      features: what the program's runs use (static): the branches it traces.
      train: BatchNorm normalises with the batch's statistics (examples weighted by
        ``weight`` [B], 0 for padding examples) and moves its running averages by Keras's
        momentum; else with the running averages.
    Returns:
      The layer's output [B, P], and its running (mean, var) [P] each after this step
      (as given unless the run is BatchNorm in training; (None, None) without BatchNorm).
    """
    unit = (jnp.arange(z.shape[-1]) < width).astype(z.dtype)
    running = (bp.mean, bp.var)
    if features.norm:
        mu = var = None
        if features.layer:  # each example over the run's real units
            n = jnp.asarray(width, z.dtype)
            mu = (z * unit[None, :]).sum(-1, keepdims=True) / n                # [B, 1]
            var = (jnp.square(z - mu) * unit[None, :]).sum(-1, keepdims=True) / n
        if features.batch:  # each unit over the batch, or the running averages
            if train:
                w = weight[:, None]
                n = weight.sum()
                mu_u = (z * w).sum(0) / n                                       # [P]
                var_u = (jnp.square(z - mu_u[None, :]) * w).sum(0) / n
                moved = tuple(BN_MOMENTUM * r + (1.0 - BN_MOMENTUM) * s
                              for r, s in zip(running, (mu_u, var_u)))
                keep = (arch.norm == NORM_BATCH) & (unit > 0)
                running = tuple(jnp.where(keep, m, r) for m, r in zip(moved, running))
            else:
                mu_u, var_u = running
            is_batch = arch.norm == NORM_BATCH
            mu = mu_u[None, :] if mu is None else jnp.where(is_batch, mu_u[None, :], mu)
            var = var_u[None, :] if var is None else jnp.where(is_batch, var_u[None, :], var)
        normed = (z - mu) * jax.lax.rsqrt(var + NORM_EPS) * bp.scale[None, :] + bp.offset[None, :]
        z = jnp.where(arch.norm != NORM_NONE, normed, z)
    f = activation(z) * unit[None, :]
    if features.residual:
        alpha = jnp.where(arch.residual == RESIDUAL_INV_SQRT_DEPTH,
                          jax.lax.rsqrt(jnp.asarray(depth, jnp.float32)), arch.alpha)
        if features.rezero:
            alpha = jnp.where(arch.residual == RESIDUAL_REZERO, bp.alpha, alpha)
        f = jnp.where(jnp.logical_not(first) & (arch.residual != RESIDUAL_NONE), h + alpha * f, f)
    return f, running


def architecture_stack(h: jax.Array, layers: dict, depth, width, *, activation: Activation,
                       features: Features, arch: Arch, train: bool,
                       weight: jax.Array | None = None) -> tuple[jax.Array, dict | None]:
    """The hidden stack of a residual and/or normalised MLP, padded layout, as one
    ``lax.scan`` over the D layers (one layer's program, not D unrolled copies).

    Layer i computes ``F_i(h) = phi(Norm(h W_i + b_i))`` (F: one Dense, the normalisation,
    the activation; :func:`arch_block`); layer 0 (the input projection) sets ``h = F_0(x)``,
    every later layer is a block ``h = h + alpha * F_i(h)`` with residual connections,
    ``h = F_i(h)`` without. Layers ``>= depth`` are the identity and units ``>= width`` stay
    zero, as in the plain stack.

    Args:
      h: the zero-padded input [B, P].
      layers: kernels [D, P, P], biases [D, P], and as ``features`` need res_alpha [D],
        norm_scale / norm_offset [D, P] (:func:`init_architecture`), BatchNorm's running
        mean / var [D, P] (:func:`init_batch_stats`).
      depth, width: the run's real sizes (may be traced).
      features: what the program's runs use (static); arch: this run's :class:`Arch`.
      train: BatchNorm normalises with the batch's statistics (weighted by ``weight`` [B],
        default ones) and updates its running averages; else with the running averages.
    Returns:
      h [B, P] after the stack, and BatchNorm's new running averages (``{"mean", "var"}``
      [D, P], unchanged for absent layers, padding units and runs without BatchNorm; None
      where no run has BatchNorm).
    """
    d_max = layers["kernels"].shape[0]
    weight = jnp.ones(h.shape[:1], h.dtype) if weight is None else weight
    xs = {"i": jnp.arange(d_max), "kernel": layers["kernels"], "bias": layers["biases"]}
    for leaf, name in (("res_alpha", "alpha"), ("norm_scale", "scale"),
                       ("norm_offset", "offset"), ("mean", "mean"), ("var", "var")):
        if leaf in layers:
            xs[name] = layers[leaf]

    def layer(h, x):
        z = h @ x["kernel"] + x["bias"][None, :]
        bp = BlockParams(*(x.get(k) for k in BlockParams._fields))
        f, running = arch_block(z, h, bp, arch, depth, width, activation=activation,
                                features=features, first=x["i"] == 0, train=train,
                                weight=weight)
        present = x["i"] < depth
        if features.batch:
            running = tuple(jnp.where(present, new, old)
                            for new, old in zip(running, (x["mean"], x["var"])))
        return jnp.where(present, f, h), running

    h, running = jax.lax.scan(layer, h, xs)
    return h, ({"mean": running[0], "var": running[1]} if features.batch else None)


class MaskedMLP(nn.Module):
    """The stacked MLP of a grid: ``max_depth`` hidden layers of ``p`` units, then Dense(1).

    ``__call__(x [B, F], depth, width) -> logits [B]`` (or [B, C] with ``n_outputs = C``);
    ``depth`` and ``width`` may be traced, so one compiled program serves every run of a grid.
    ``activation`` is a name of :data:`ACTIVATION_FNS` or any JAX-traceable callable.
    Parameters come from :func:`init_params` (the declared initialisers only fix shapes).

    ``features`` (:class:`Features`, static) says which residual and normalisation variants
    the program's runs use; then :func:`architecture_stack` computes the hidden layers with
    the run's ``arch`` (:class:`Arch`, traced: required), its extra parameters from
    :func:`init_architecture`; BatchNorm keeps its running averages in the ``batch_stats``
    collection (``mean``, ``var`` [D, P]), updated when ``train`` and the collection is
    mutable. ``train`` (BatchNorm: batch statistics) and ``weight`` ([B] example weights, 0
    for padding) matter only with BatchNorm.
    """

    max_depth: int
    p: int
    activation: "str | Activation"
    n_outputs: int = 1
    features: Features = Features()

    @nn.compact
    def __call__(self, x: jax.Array, depth, width, *, train: bool = False,
                 weight: jax.Array | None = None, arch: Arch | None = None) -> jax.Array:
        zeros = nn.initializers.zeros
        kernels = self.param("kernels", zeros, (self.max_depth, self.p, self.p))
        biases = self.param("biases", zeros, (self.max_depth, self.p))
        out_shape = () if self.n_outputs == 1 else (self.n_outputs,)
        out_kernel = self.param("out_kernel", zeros, (self.p,) + out_shape)
        out_bias = self.param("out_bias", zeros, out_shape)
        act = activation_fn(self.activation)
        h = jnp.pad(x, ((0, 0), (0, self.p - x.shape[-1])))
        if self.features.plain:
            unit = (jnp.arange(self.p) < width).astype(x.dtype)
            # Unrolled: D is small and static, and XLA fuses across the unrolled layers.
            for i in range(self.max_depth):
                a = act(h @ kernels[i] + biases[i][None, :]) * unit[None, :]
                h = jnp.where(i < depth, a, h)
        else:
            if arch is None:
                raise ValueError("arch: a residual or normalised stack needs the run's "
                                 "architecture; allowed: a vgjax.model.Arch")
            h = self._architecture(h, kernels, biases, depth, width, act, train, weight, arch)
        return h @ out_kernel + (out_bias if self.n_outputs == 1 else out_bias[None, :])

    def _architecture(self, h, kernels, biases, depth, width, act, train, weight, arch):
        shape = (self.max_depth, self.p)
        layers = {"kernels": kernels, "biases": biases}
        for name, value in init_architecture(*shape, self.features).items():
            layers[name] = self.param(name, lambda _, v=value: v)
        stats = {}
        if self.features.batch:
            start = init_batch_stats(*shape)
            stats = {k: self.variable("batch_stats", k, lambda v=v: v) for k, v in start.items()}
            layers.update({k: v.value for k, v in stats.items()})
        h, running = architecture_stack(h, layers, depth, width, activation=act,
                                        features=self.features, arch=arch, train=train,
                                        weight=weight)
        if running is not None and train and self.is_mutable_collection("batch_stats"):
            for k, v in stats.items():
                v.value = running[k]
        return h


class ExactMLP(nn.Module):
    """Reference model built exactly as Keras builds it: ``depth`` x Dense(width), Dense(1).

    ``__call__(x [B, F], train=False) -> logits [B]`` (or [B, C]). Used to check that the
    masked stack equals it. With ``norm`` "layer" / "batch" each Dense is followed by
    ``nn.LayerNorm`` / ``nn.BatchNorm`` (``norm_<i>``; Keras's epsilon and momentum,
    BatchNorm on batch statistics when ``train``), with ``residual`` every hidden layer
    after the first is a block ``x + alpha * phi(Norm(Dense(x)))`` (ReZero's alpha is the
    parameter ``alpha_<i>``).
    """

    depth: int
    width: int
    activation: "str | Activation"
    n_outputs: int = 1
    residual: "str | float" = "none"
    norm: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        for i in range(self.depth):
            z = nn.Dense(self.width, name=f"dense_{i + 1}")(x)
            if self.norm == "layer":
                z = nn.LayerNorm(epsilon=NORM_EPS, name=f"norm_{i + 1}")(z)
            elif self.norm == "batch":
                z = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                 epsilon=NORM_EPS, name=f"norm_{i + 1}")(z)
            f = act(z)
            if i == 0 or self.residual == "none":
                x = f
            elif self.residual == "rezero":
                x = x + self.param(f"alpha_{i + 1}", nn.initializers.zeros, ()) * f
            elif self.residual == "inv_sqrt_depth":
                x = x + f / np.sqrt(self.depth)
            else:
                x = x + float(self.residual) * f
        out = nn.Dense(self.n_outputs, name=f"dense_{self.depth + 1}")(x)
        return out[:, 0] if self.n_outputs == 1 else out


def unpack_run(tree, depth: int, width: int, *, n_features: int = N_FEATURES,
               run: int | None = None) -> dict:
    """One run's exact per-layer pytree from the padded layout of a grid.

    Works for parameters and for gradients (they share the layout), on JAX or NumPy arrays,
    e.g. a row ``r`` of ``sweep(..., keep_params=True).params`` taken with
    ``{k: v[r] for k, v in params.items()}``.

    Args:
      tree: dict with kernels [D, P, P], biases [D, P], out_kernel [P] or [P, C], out_bias []
        or [C] (one run, no run axis).
      depth, width: the run's real depth and width (Python ints).
      n_features: the data's input width F.
      run: index into a leading run axis of every leaf (e.g. a loaded ``params.npz``, or
        ``result.params``); None: ``tree`` is one run's.
    Returns:
      One run's layers as a dict, ``{"dense_1": {"kernel": [F, w], "bias": [w]}, ...}``
      through ``"dense_<depth>"`` (kernels [w, w]), then ``"output": {"kernel": [w, C'],
      "bias": [C']}``, C' = 1 for two classes.
    """
    if run is not None:
        tree = {k: tree[k][run] for k in ("kernels", "biases", "out_kernel", "out_bias")}
    out = {}
    for i in range(depth):
        fan_in = n_features if i == 0 else width
        out[f"dense_{i + 1}"] = {"kernel": tree["kernels"][i, :fan_in, :width],
                                 "bias": tree["biases"][i, :width]}
    ko, bo = tree["out_kernel"], tree["out_bias"]
    out["output"] = {"kernel": ko[:width, None] if ko.ndim == 1 else ko[:width],
                     "bias": bo[None] if bo.ndim == 0 else bo}
    return out


def to_exact_params(params: Params, depth: int, width: int, *, n_features: int = N_FEATURES) -> dict:
    """Slice one run's padded parameters (or gradients) into :class:`ExactMLP`'s parameter
    tree (Keras's names: the output layer is ``dense_<depth + 1>``; a normalisation's scale
    and offset are ``norm_<i>``'s ``scale`` and ``bias``, ReZero's scales ``alpha_<i>``)."""
    out = unpack_run(params, depth, width, n_features=n_features)
    out[f"dense_{depth + 1}"] = out.pop("output")
    for i in range(depth):
        if "norm_scale" in params:
            out[f"norm_{i + 1}"] = {"scale": params["norm_scale"][i, :width],
                                    "bias": params["norm_offset"][i, :width]}
        if "res_alpha" in params and i > 0:
            out[f"alpha_{i + 1}"] = params["res_alpha"][i]
    return {"params": out}


def to_exact_batch_stats(stats: Params, depth: int, width: int) -> dict:
    """One run's padded BatchNorm running averages (``mean``, ``var`` [D, P]) as
    :class:`ExactMLP`'s ``batch_stats`` collection (``norm_<i>``: mean, var [width])."""
    return {"batch_stats": {f"norm_{i + 1}": {k: stats[k][i, :width] for k in ("mean", "var")}
                            for i in range(depth)}}
