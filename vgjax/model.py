"""The MLP: activations, Keras-faithful initialisers and a masked, stacked Flax model.

One parameter layout serves every run of a grid. With ``D`` the grid's largest depth and
``P = max(largest width, 2)`` (inputs are zero-padded from 2 to ``P`` features):

=============  ==========  ==================================================
leaf           shape       meaning
=============  ==========  ==================================================
kernels        [D, P, P]   hidden layer i maps P -> P (layer 0 reads the input)
biases         [D, P]
out_kernel     [P]         the output Dense(1) kernel
out_bias       []          its bias
=============  ==========  ==================================================

A run of depth ``d`` and width ``w`` uses hidden layers ``0..d-1``; the others are masked to
the exact identity. Units ``>= w`` are masked to zero and their kernel entries start at zero,
so they receive zero gradient and change nothing: the run computes exactly what a model built
with ``d`` layers of ``w`` units computes (:class:`ExactMLP`).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

N_FEATURES = 2
# Per-element PRNG streams are indexed as fold_in(layer_key, row * _ROW_STRIDE + col), so a
# run's draws do not depend on how far the grid pads its layers.
_ROW_STRIDE = 1 << 16
_OUTPUT_LAYER_TAG = 1 << 20
# Keras's truncated-normal variance scaling divides by the std of a unit normal truncated to
# [-2, 2], so the truncated draws keep the intended variance.
_TRUNC_STD = 0.87962566103423978

Params = dict[str, jax.Array]

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
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


def _uniform(key, lo, hi):
    return jax.random.uniform(key, (), jnp.float32, 0.0, 1.0) * (hi - lo) + lo


def _truncated(key, std):
    return jax.random.truncated_normal(key, -2.0, 2.0, (), jnp.float32) * (std / _TRUNC_STD)


# Scalar draw for one kernel entry, given its key and the layer's *real* fan-in/fan-out.
_SCALAR_INITS = {
    "uniform": lambda k, fi, fo: _uniform(k, 0.0, 1.0),  # Keras RandomUniform(0, 1)
    "he_uniform": lambda k, fi, fo: _uniform(k, -jnp.sqrt(6.0 / fi), jnp.sqrt(6.0 / fi)),
    "lecun_uniform": lambda k, fi, fo: _uniform(k, -jnp.sqrt(3.0 / fi), jnp.sqrt(3.0 / fi)),
    "glorot_uniform": lambda k, fi, fo: _uniform(
        k, -jnp.sqrt(6.0 / (fi + fo)), jnp.sqrt(6.0 / (fi + fo))),
    "he_normal": lambda k, fi, fo: _truncated(k, jnp.sqrt(2.0 / fi)),
    "lecun_normal": lambda k, fi, fo: _truncated(k, jnp.sqrt(1.0 / fi)),
    "glorot_normal": lambda k, fi, fo: _truncated(k, jnp.sqrt(2.0 / (fi + fo))),
    "orthogonal": lambda k, fi, fo: jax.random.normal(k, (), jnp.float32),
}


def _entry_draws(key: jax.Array, rows: int, cols: int, init: str, fan_in, fan_out) -> jax.Array:
    """[rows, cols] draws where entry (i, j) depends only on (key, i, j)."""
    idx = jnp.arange(rows)[:, None] * _ROW_STRIDE + jnp.arange(cols)[None, :]
    keys = jax.vmap(jax.vmap(lambda i: jax.random.fold_in(key, i)))(idx)
    draw = _SCALAR_INITS[init]
    return jax.vmap(jax.vmap(lambda k: draw(k, fan_in, fan_out)))(keys)


def _orthogonal(draws: jax.Array, fan_in, fan_out) -> jax.Array:
    """Keras ``Orthogonal`` of the real [fan_in, fan_out] block of padded normal draws [P, P].

    Keras draws a normal [max(fi, fo), min(fi, fo)] matrix, takes Q of its QR with the signs of
    diag(R), and transposes when fi < fo. The padding rows/columns are zero, so Householder QR
    leaves the real block's Q unchanged; sign(0) = 0 zeroes the padding columns.
    """
    p = draws.shape[0]
    r_real = jnp.maximum(fan_in, fan_out)
    c_real = jnp.minimum(fan_in, fan_out)
    i = jnp.arange(p)
    a = jnp.where((i[:, None] < r_real) & (i[None, :] < c_real), draws, 0.0)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return jnp.where(fan_in >= fan_out, q, q.T)


def init_kernel(key: jax.Array, p: int, init: str, fan_in, fan_out) -> jax.Array:
    """One [P, P] kernel whose real block is [fan_in, fan_out]; padding entries are zero.

    ``fan_in`` and ``fan_out`` may be traced (they differ between runs of one grid) and are
    the layer's real sizes, never the padded ``P``.
    """
    draws = _entry_draws(key, p, p, init, fan_in, fan_out)
    if init == "orthogonal":
        draws = _orthogonal(draws, fan_in, fan_out)
    i = jnp.arange(p)
    real = (i[:, None] < fan_in) & (i[None, :] < fan_out)
    return jnp.where(real, draws, 0.0)


def init_params(key: jax.Array, depth, width, *, max_depth: int, p: int, init: str,
                output_init: str) -> Params:
    """Initialise one run's parameters in the padded layout (see module docstring).

    Args:
      key: the run's init key.
      depth, width: the run's real depth (1..max_depth) and width (1..p); may be traced.
      max_depth, p: the grid's padded sizes D and P.
      init, output_init: initialiser names for the hidden layers and the output layer.
    Returns:
      dict with kernels [D, P, P], biases [D, P], out_kernel [P], out_bias [] (float32);
      biases start at zero (Keras's default).
    """
    layers = jnp.arange(max_depth)
    fan_in = jnp.where(layers == 0, N_FEATURES, width)
    layer_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(layers)
    kernels = jax.vmap(lambda k, fi: init_kernel(k, p, init, fi, width))(layer_keys, fan_in)
    kernels = jnp.where((layers < depth)[:, None, None], kernels, 0.0)
    out_key = jax.random.fold_in(key, _OUTPUT_LAYER_TAG)
    out_kernel = init_kernel(out_key, p, output_init, width, 1)[:, 0]
    return {
        "kernels": kernels,
        "biases": jnp.zeros((max_depth, p), jnp.float32),
        "out_kernel": out_kernel,
        "out_bias": jnp.zeros((), jnp.float32),
    }


def kernel_mask(depth, width, *, max_depth: int, p: int) -> tuple[jax.Array, jax.Array]:
    """Which kernel entries are real for a run: ([D, P, P] bool hidden, [P] bool output)."""
    layers = jnp.arange(max_depth)
    i = jnp.arange(p)
    fan_in = jnp.where(layers == 0, N_FEATURES, width)
    hidden = ((i[None, :, None] < fan_in[:, None, None]) & (i[None, None, :] < width)
              & (layers < depth)[:, None, None])
    return hidden, i < width


class MaskedMLP(nn.Module):
    """The stacked MLP of a grid: ``max_depth`` hidden layers of ``p`` units, then Dense(1).

    ``__call__(x [B, 2], depth, width) -> logits [B]``; ``depth`` and ``width`` may be traced,
    so one compiled program serves every run of a grid. Parameters come from
    :func:`init_params` (the declared initialisers only fix shapes).
    """

    max_depth: int
    p: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array, depth, width) -> jax.Array:
        zeros = nn.initializers.zeros
        kernels = self.param("kernels", zeros, (self.max_depth, self.p, self.p))
        biases = self.param("biases", zeros, (self.max_depth, self.p))
        out_kernel = self.param("out_kernel", zeros, (self.p,))
        out_bias = self.param("out_bias", zeros, ())
        act = ACTIVATION_FNS[self.activation]
        unit = (jnp.arange(self.p) < width).astype(x.dtype)
        h = jnp.pad(x, ((0, 0), (0, self.p - x.shape[-1])))
        # Unrolled: D is small and static, and XLA fuses across the unrolled layers.
        for i in range(self.max_depth):
            a = act(h @ kernels[i] + biases[i][None, :]) * unit[None, :]
            h = jnp.where(i < depth, a, h)
        return h @ out_kernel + out_bias


class ExactMLP(nn.Module):
    """Reference model built exactly as Keras builds it: ``depth`` x Dense(width), Dense(1).

    ``__call__(x [B, 2]) -> logits [B]``. Used to check that the masked stack equals it.
    """

    depth: int
    width: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATION_FNS[self.activation]
        for i in range(self.depth):
            x = act(nn.Dense(self.width, name=f"dense_{i + 1}")(x))
        return nn.Dense(1, name=f"dense_{self.depth + 1}")(x)[:, 0]


def to_exact_params(params: Params, depth: int, width: int) -> dict:
    """Slice one run's padded parameters into :class:`ExactMLP`'s parameter tree."""
    out = {}
    for i in range(depth):
        fan_in = N_FEATURES if i == 0 else width
        out[f"dense_{i + 1}"] = {"kernel": params["kernels"][i, :fan_in, :width],
                                 "bias": params["biases"][i, :width]}
    out[f"dense_{depth + 1}"] = {"kernel": params["out_kernel"][:width, None],
                                 "bias": params["out_bias"][None]}
    return {"params": out}
