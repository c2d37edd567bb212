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
upper    [L − 1, …]  layers 2..L of a stacked net (:class:`LayerParams`, each leaf
                     with a leading layer axis: wx [L − 1, N, G N], ...); None for a single layer
=======  ==========  ===========================================================

**Stacked layers** (the depth axis): layer l > 1 reads layer l − 1's h_t as its input
(input kernel Glorot with D = N), the readout reads the top layer, and every layer is
initialised by the run's :class:`InitSpec`. The leaves above are layer 1's and the readout;
layers 2..L sit in ``upper`` on a leading layer axis rather than all layers on one axis,
because layer 1's input kernel has D rows and the others N: one axis would need layer 1's
kernel padded to N rows, which changes its products (and so a single-layer run's numbers),
while ``upper = None`` adds no leaf, so a single-layer net's pytree, optimizer state and
compiled program are the ones of a net without stacking.

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

The carry is ``(h, c)`` for every cell (``c`` stays zero for rnn and gru), so every cell
steps through the same :func:`jax.lax.scan`; :func:`run_layers` masks the steps past a run's
length (the carry is held), so a run of length ``T`` inside a scan of ``T_max`` steps
computes exactly what a run of ``T`` steps computes.
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


class LayerParams(NamedTuple):
    """One layer's cell parameters: wx [D or N, G N], wh [N, G N], b [G N], bh [N] (the
    module docstring; :attr:`CellParams.upper` holds layers 2..L with a leading layer axis)."""

    wx: jax.Array
    wh: jax.Array
    b: jax.Array
    bh: jax.Array


class CellParams(NamedTuple):
    """One run's parameters (shapes in the module docstring): layer 1's cell, the readout of
    the top layer, and layers 2..L of a stacked net (``upper``; None for one layer)."""

    wx: jax.Array
    wh: jax.Array
    b: jax.Array
    bh: jax.Array
    wo: jax.Array
    bo: jax.Array
    upper: LayerParams | None = None


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


def _init_layer(kx: jax.Array, kh: jax.Array, kb: jax.Array, cell: str, n_inputs: int,
                width: int, spec: InitSpec) -> LayerParams:
    g = GATES[cell]
    wx = _glorot_uniform(kx, n_inputs, width, g)
    wh = _recurrent_kernel(kh, width, g, spec)
    b = jax.random.normal(kb, (g * width,), jnp.float32) * jnp.sqrt(spec.bias_var)
    if cell == "lstm":
        forget = jnp.arange(g * width) // width == LSTM_FORGET_BLOCK
        b = b + jnp.where(forget, spec.forget_bias, 0.0)
    return LayerParams(wx, wh, b, jnp.zeros((width,), jnp.float32))


def init_cell(key: jax.Array, cell: str, *, n_inputs: int, width: int, n_outputs: int,
              spec: InitSpec, layers: int = 1) -> CellParams:
    """One run's :class:`CellParams` from ``key`` (vmap over runs: ``spec`` may be traced).

    Args:
      key: the run's init key; cell: one of :data:`CELLS` (static); n_inputs D, width N,
      n_outputs C: static sizes; spec: the run's :class:`InitSpec`, every layer's;
      layers: L >= 1 stacked layers (static).

    Layer 1 and the readout draw from ``key`` as a single-layer net does (so they do not
    depend on ``layers``); layers 2..L from ``fold_in(key, 1)``, split per layer.
    """
    check_cell(cell)
    kx, kh, kb, ko = jax.random.split(key, 4)
    upper = None
    if layers > 1:
        keys = jax.random.split(jax.random.fold_in(key, 1), (layers - 1, 3))
        upper = jax.vmap(lambda k: _init_layer(k[0], k[1], k[2], cell, width, width,
                                               spec))(keys)
    return CellParams(*_init_layer(kx, kh, kb, cell, n_inputs, width, spec),
                      wo=_glorot_uniform(ko, width, n_outputs, 1),
                      bo=jnp.zeros((n_outputs,), jnp.float32), upper=upper)


def n_layers(params: CellParams) -> int:
    """L, the number of stacked layers of ``params`` (static: read from shapes)."""
    return 1 if params.upper is None else 1 + params.upper.wh.shape[-3]


def layer(params: CellParams, index: int) -> LayerParams:
    """Layer ``index``'s cell parameters (0: the first layer; static index)."""
    if index == 0:
        return LayerParams(params.wx, params.wh, params.b, params.bh)
    return jax.tree.map(lambda a: a[index - 1], params.upper)


def zero_carry(batch: int, width: int) -> Carry:
    """The initial state: h = c = 0, each [batch, width]."""
    z = jnp.zeros((batch, width), jnp.float32)
    return Carry(z, z)


def _rows(v: jax.Array, like: jax.Array) -> jax.Array:
    # A bias [K] shaped to add to rows [..., K] (rank promotion is explicit in vgjax).
    return v.reshape((1,) * (like.ndim - 1) + v.shape)


def cell_step(cell: str, activation: str, params: LayerParams, carry: Carry,
              x: jax.Array) -> tuple[Carry, jax.Array]:
    """One time step of one layer (:func:`layer`; a :class:`CellParams` is its first layer):
    carry (h, c each [B, N]) and input x [B, D] -> (new carry, gate [B, N]).

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


def masked_step(cell: str, activation: str, params: LayerParams, carry: Carry, x: jax.Array,
                active: jax.Array) -> tuple[Carry, jax.Array]:
    """:func:`cell_step` where ``active`` (a bool scalar) holds, else the carry unchanged."""
    new, gate = cell_step(cell, activation, params, carry, x)
    return Carry(jnp.where(active, new.h, carry.h), jnp.where(active, new.c, carry.c)), gate


class Trajectory(NamedTuple):
    """One layer's states over a run: h [T_max, B, N] after each step, carries [T_max, B, N]
    x 2 before each step (what a backward pass through step t needs), gate [T_max, B, N]
    (see :func:`cell_step`)."""

    h: jax.Array
    before: Carry
    gate: jax.Array


def run_layers(cell: str, activation: str, params: CellParams, xs: jax.Array,
               n_steps: jax.Array, perturb: tuple[jax.Array, ...] | None = None,
               ) -> tuple[Trajectory, ...]:
    """One run over a sequence: one ``lax.scan`` over xs [T_max, B, D], every layer stepped
    bottom up inside each time step (layer l's input is layer l − 1's new h_t), steps
    ``t >= n_steps`` masked (every carry held), from the zero state. Returns each layer's
    :class:`Trajectory`, first layer first.

    ``perturb`` (optional): one [T_max, B, N] per layer, added to that layer's h_t after
    step t (inside the run's length), before the layer above and the next step read it: the
    gradient of a loss with respect to a zero perturbation is the total ∂L/∂h_t^l.
    """
    t_max, batch = xs.shape[:2]
    width = params.wh.shape[0]
    cells = [layer(params, i) for i in range(n_layers(params))]
    if perturb is None:
        perturb = tuple(jnp.zeros((t_max, batch, width), jnp.float32) for _ in cells)

    def body(carries, inp):
        t, x, es = inp
        active = t < n_steps
        new_carries, outs = [], []
        for p, carry, e in zip(cells, carries, es):
            new, gate = masked_step(cell, activation, p, carry, x, active)
            new = Carry(new.h + jnp.where(active, e, 0.0), new.c)
            new_carries.append(new)
            outs.append(Trajectory(new.h, carry, gate))
            x = new.h
        return tuple(new_carries), tuple(outs)

    zero = tuple(zero_carry(batch, width) for _ in cells)
    _, trajs = jax.lax.scan(body, zero, (jnp.arange(t_max), xs, tuple(perturb)))
    return trajs


def run(cell: str, activation: str, params: CellParams, xs: jax.Array,
        n_steps: jax.Array) -> Trajectory:
    """The top layer's :class:`Trajectory` (what the readout reads) of :func:`run_layers`."""
    return run_layers(cell, activation, params, xs, n_steps)[-1]


def readout(params: CellParams, hs: jax.Array) -> jax.Array:
    """The linear readout of states hs [..., N] -> [..., C]."""
    return hs @ params.wo + _rows(params.bo, hs)
