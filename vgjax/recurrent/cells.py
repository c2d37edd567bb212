"""Recurrent cells as pure functions over one run's parameters: ``rnn``, ``lstm``, ``gru``.

One run's parameters (:class:`CellParams`) for a cell with ``G`` gate blocks (rnn 1, lstm 4,
gru 3), hidden width ``N``, ``D`` input features and ``C`` outputs:

=======  ==========  ===========================================================
leaf     shape       meaning
=======  ==========  ===========================================================
wx       [D, G N]    input kernels, one [D, N] block per gate (Glorot uniform)
wh       [N, G N]    recurrent kernels, one [N, N] block per gate
b        [G N]       biases of the gate blocks (LSTM: forget block = forget_bias)
bh       [N]         GRU only: the bias inside r * (h W_hn + b_hn); zero otherwise
wo       [N, C]      linear readout (Glorot uniform)
bo       [C]         readout bias (zero)
=======  ==========  ===========================================================

Gate blocks are in Flax's order, so a run is the net Flax builds with the same weights:

* ``rnn``  h' = φ(x W_x + b + h W_h)                           (``nn.SimpleCell``)
* ``lstm`` i, f, g, o = σ, σ, tanh, σ of (x W_x + h W_h + b);
           c' = f c + i g, h' = o tanh(c')                     (``nn.LSTMCell``)
* ``gru``  r, z = σ(x W_x + b + h W_h) on blocks 0, 1;
           n = tanh(x W_xn + b_n + r (h W_hn + b_h)); h' = (1 − z) n + z h  (``nn.GRUCell``)

The recurrent kernel's initialisation is a per-run value (:data:`INITS`), so one compiled
program holds Gaussian, orthogonal and identity (IRNN) runs side by side: ``normal`` draws
each block N(0, σ_w²/N) with ``scale`` = σ_w², ``orthogonal`` and ``identity`` multiply an
orthogonal (:func:`orthogonal`, no LAPACK call) or identity block by ``scale`` = the gain.

The carry is ``(h, c)`` for every cell (``c`` stays zero for rnn and gru), so every cell steps
through the same :func:`jax.lax.scan`; :func:`run` masks the steps past a run's length (the
carry is held), so a run of length ``T`` inside a scan of ``T_max`` steps computes exactly
what a run of ``T`` steps computes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vgjax.model import activation_fn, orthonormal_columns

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
INITS = ("normal", "orthogonal", "identity")
LSTM_FORGET_BLOCK = 1   # i, f, g, o
GRU_UPDATE_BLOCK = 1    # r, z, n


class CellParams(NamedTuple):
    """One run's parameters (shapes in the module docstring); a leading run axis when stacked."""

    wx: jax.Array
    wh: jax.Array
    b: jax.Array
    bh: jax.Array
    wo: jax.Array
    bo: jax.Array


class Carry(NamedTuple):
    """The recurrent state: h [..., N] and c [..., N] (c is zero for rnn and gru)."""

    h: jax.Array
    c: jax.Array


class InitSpec(NamedTuple):
    """One run's initialisation, every field a (possibly traced) scalar: init index into
    :data:`INITS`, scale (σ_w² for normal, the gain otherwise), forget_bias (LSTM's forget
    block bias, Keras's ``unit_forget_bias`` = 1), bias_var (biases N(0, bias_var); 0: zero)."""

    init: jax.Array
    scale: jax.Array
    forget_bias: jax.Array
    bias_var: jax.Array


def check_cell(cell: str) -> None:
    """ValueError unless ``cell`` is one of :data:`CELLS`."""
    if cell not in CELLS:
        raise ValueError(f"cell: {cell!r} is not known; allowed: {', '.join(CELLS)}")


def _glorot_uniform(key: jax.Array, fan_in: int, fan_out: int, blocks: int) -> jax.Array:
    # Glorot per gate block, as Flax's per-gate Dense layers see it: [fan_in, blocks*fan_out].
    limit = jnp.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, (fan_in, blocks * fan_out), jnp.float32, -limit, limit)


def orthogonal(key: jax.Array, n: int) -> jax.Array:
    """A random orthogonal [n, n] matrix, the one ``jax.nn.initializers.orthogonal()(key,
    (n, n))`` draws (Q of the QR of an N(0, 1) matrix, signs making diag(R) positive: Haar
    distributed), without LAPACK (:func:`vgjax.model.orthonormal_columns`: a batched
    ``geqrf`` in each cell group deadlocked XLA:CPU's thread pool); Q with diag(R) > 0 is
    unique, so it is the initializer's matrix to float32 rounding."""
    return orthonormal_columns(jax.random.normal(key, (n, n), jnp.float32))


def _recurrent_kernel(key: jax.Array, n: int, blocks: int, spec: InitSpec) -> jax.Array:
    k_normal, k_orth = jax.random.split(key)
    normal = jax.random.normal(k_normal, (blocks, n, n), jnp.float32) * jnp.sqrt(spec.scale / n)
    orth = jax.vmap(lambda k: orthogonal(k, n))(jax.random.split(k_orth, blocks)) * spec.scale
    eye = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (blocks, n, n)) * spec.scale
    w = jnp.where(spec.init == 0, normal, jnp.where(spec.init == 1, orth, eye))
    return jnp.concatenate(list(w), axis=1)   # [N, blocks*N], block g = columns g*N..(g+1)*N


def init_cell(key: jax.Array, cell: str, *, n_inputs: int, width: int, n_outputs: int,
              spec: InitSpec) -> CellParams:
    """One run's :class:`CellParams` from ``key`` (vmap over runs: ``spec`` may be traced).

    Args:
      key: the run's init key; cell: one of :data:`CELLS` (static); n_inputs D, width N,
      n_outputs C: static sizes; spec: the run's :class:`InitSpec`.
    """
    check_cell(cell)
    g = GATES[cell]
    kx, kh, kb, ko = jax.random.split(key, 4)
    wx = _glorot_uniform(kx, n_inputs, width, g)
    wh = _recurrent_kernel(kh, width, g, spec)
    b = jax.random.normal(kb, (g * width,), jnp.float32) * jnp.sqrt(spec.bias_var)
    if cell == "lstm":
        forget = jnp.arange(g * width) // width == LSTM_FORGET_BLOCK
        b = b + jnp.where(forget, spec.forget_bias, 0.0)
    return CellParams(wx=wx, wh=wh, b=b, bh=jnp.zeros((width,), jnp.float32),
                      wo=_glorot_uniform(ko, width, n_outputs, 1),
                      bo=jnp.zeros((n_outputs,), jnp.float32))


def zero_carry(batch: int, width: int) -> Carry:
    """The initial state: h = c = 0, each [batch, width]."""
    z = jnp.zeros((batch, width), jnp.float32)
    return Carry(z, z)


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
    # A bias [K] shaped to add to rows [..., K] (rank promotion is explicit in vgjax).
    return v.reshape((1,) * (like.ndim - 1) + v.shape)


def cell_step(cell: str, activation: str, params: CellParams, carry: Carry,
              x: jax.Array) -> tuple[Carry, jax.Array]:
    """One time step: carry (h, c each [B, N]) and input x [B, D] -> (new carry, gate [B, N]).

    ``gate`` is the LSTM's forget gate or the GRU's update gate z (the gates whose saturation
    says whether memory is held), and φ′'s argument (the pre-activation) for rnn.
    ``activation`` is φ of the rnn (any name of :data:`vgjax.model.ACTIVATION_FNS`); gated
    cells use σ and tanh as Flax does.
    """
    n = carry.h.shape[-1]
    pre_x = x @ params.wx + _rows(params.b, x)   # [B, G N]
    pre_h = carry.h @ params.wh               # [B, G N]
    if cell == "rnn":
        u = pre_x + pre_h
        return Carry(activation_fn(activation)(u), carry.c), u
    if cell == "lstm":
        pre = pre_x + pre_h
        i, f, g, o = (pre[..., k * n:(k + 1) * n] for k in range(4))
        i, f, o, g = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o), jnp.tanh(g)
        c = f * carry.c + i * g
        return Carry(o * jnp.tanh(c), c), f
    if cell == "gru":
        r = jax.nn.sigmoid(pre_x[..., :n] + pre_h[..., :n])
        z = jax.nn.sigmoid(pre_x[..., n:2 * n] + pre_h[..., n:2 * n])
        cand = jnp.tanh(pre_x[..., 2 * n:] + r * (pre_h[..., 2 * n:] + _rows(params.bh, x)))
        return Carry((1.0 - z) * cand + z * carry.h, carry.c), z
    raise ValueError(f"cell: {cell!r} is not known; allowed: {', '.join(CELLS)}")


def masked_step(cell: str, activation: str, params: CellParams, carry: Carry, x: jax.Array,
                active: jax.Array) -> tuple[Carry, jax.Array]:
    """:func:`cell_step` where ``active`` (a bool scalar) holds, else the carry unchanged."""
    new, gate = cell_step(cell, activation, params, carry, x)
    return Carry(jnp.where(active, new.h, carry.h), jnp.where(active, new.c, carry.c)), gate


class Trajectory(NamedTuple):
    """A run's states: h [T_max, B, N] after each step, carries [T_max, B, N] x 2 before each
    step (what a backward pass through step t needs), gate [T_max, B, N] (see
    :func:`cell_step`)."""

    h: jax.Array
    before: Carry
    gate: jax.Array


def run(cell: str, activation: str, params: CellParams, xs: jax.Array, n_steps: jax.Array,
        perturb: jax.Array | None = None) -> Trajectory:
    """One run over a sequence: ``lax.scan`` over xs [T_max, B, D], steps ``t >= n_steps``
    masked (the carry held), from the zero state.

    ``perturb`` [T_max, B, N] (optional) is added to h_t after step t (inside the run's
    length): the gradient of a loss with respect to a zero perturbation is ∂L/∂h_t.
    """
    t_max, batch = xs.shape[:2]
    width = params.wh.shape[0]
    if perturb is None:
        perturb = jnp.zeros((t_max, batch, width), jnp.float32)

    def body(carry, inp):
        t, x, e = inp
        active = t < n_steps
        new, gate = masked_step(cell, activation, params, carry, x, active)
        new = Carry(new.h + jnp.where(active, e, 0.0), new.c)
        return new, (new.h, carry, gate)

    _, (hs, before, gates) = jax.lax.scan(
        body, zero_carry(batch, width), (jnp.arange(t_max), xs, perturb))
    return Trajectory(hs, before, gates)


def readout(params: CellParams, hs: jax.Array) -> jax.Array:
    """The linear readout of states hs [..., N] -> [..., C]."""
    return hs @ params.wo + _rows(params.bo, hs)
