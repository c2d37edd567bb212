"""The wide-net engine's kernels: minibatch products that stay batched matmuls over runs.

It trains under the one loop of :mod:`vgjax.engines.loop` (:func:`make_wide_train`, per depth
block); its own are the step (:func:`_step`: backprop, Keras SGD update and statistics fused
layer by layer; :func:`_optax_step`: backprop into the gradient pytree, then any optax
optimizer over it), histograms, evaluation and parameter layout. It computes exactly what
``jax.vmap(vgjax.engines.reference.make_train(config, D, P))`` computes (same initial weights,
shuffles, optimizer and history dict; equal to float32 rounding, tested) in the layout that
matmul libraries like: the run axis LEADING, so each layer's minibatch products are
batched plain matmuls: ``[R, B, P] x [R, P, P]`` forward, ``[R, P, P] x [R, P, B]`` backward
in a unit-major layout (XLA:CPU's Eigen dots; cuBLAS batched GEMM on a GPU). Where
:mod:`vgjax.engines.fast` unrolls every product into ``P`` broadcast multiplies (fast at the
tutorial's 5 units, but its program and its work grow with ``P``), this program's size does
not depend on ``P`` or ``D``:

* the hidden layers are a loop over a layer-stacked ``[D-1, R, P, P]`` kernel that runs
  up to the block's deepest run (an unbatched bound), so layers no run of the block has
  cost nothing;
* backprop is written out per layer, and each layer's |g| sum, norm and (on histogram
  epochs) gradient histogram are computed in the same loop iteration while the layer's
  ``[R, P, P]`` gradient is in cache; with Keras SGD (``optimizer="sgd"``) so is its update,
  written in place into the stacked parameters (no gradient pytree is stored and re-read).
  Any other optimizer (``"adam"``, an optax ``GradientTransformation`` or a factory ``lr ->
  GradientTransformation``) is applied after the backward pass to the gradient pytree in
  the reference engine's padded layout, vmapped over runs with each run's traced learning
  rate (:func:`vgjax.engines.loop.apply_optimizer`), so it sees exactly the pytree it sees
  there, layers a run lacks included;
* any elementwise activation: the four of :data:`WIDE_ACTIVATIONS` with derivatives of the
  activation value, any other (named or a callable) with ``jax.grad`` of the scalar
  function at the pre-activations the forward pass then keeps;
* histograms find each entry's bucket from its float32 bit pattern and count with one
  scatter-add (:func:`vgjax.diagnostics.bucket_histogram`); they are traced into the
  histogram epochs' steps only (:attr:`vgjax.engines.loop.Engine.hist_branches`);
* depth-aware blocks (:func:`vgjax.engines.in_depth_blocks`): a chunk's runs are sorted by
  depth inside the program and trained in consecutive blocks, so a depth-4 run never pays
  for layer 32.

Covered (:func:`supports`): any optimizer and activation, any data (F input features, C
classes: one logit and the binary cross-entropy for two classes, C logits and the softmax
cross-entropy otherwise, or for ``loss="softmax_ce"``), residual connections and
normalisation as per-run values (:func:`_arch_forward`, :func:`_block_vjp`), no test-set
gradients; other configs (a user loss, test-set gradients) use the vmap engine.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vgjax.diagnostics import bucket_histogram
from vgjax.model import activation_fn
from vgjax.probes import SATURATION_THRESHOLD, singular_values, spectrum_summary
from vgjax.theory import derivative_fn
from vgjax.engines import fast
from vgjax.engines.loop import (Acc, Engine, Memory, Setup, history_bytes, apply_optimizer, chunk_layers, chunk_start,
                                init_optimizer, merge_hist, runs_first, spec_arch, train_loop)
from vgjax.model import (Arch, BlockParams, Features, arch_block, features_of,
                         init_architecture, init_batch_stats)
from vgjax.engines.shuffle import epoch_batches
from vgjax.step import (ADAM_B1, ADAM_B2, ADAM_EPS, OptimizerFactory, bce, n_outputs_for,
                        optimizer_factory, softmax_ce)

# Activations whose derivative is written as a function of the activation value alone (the
# backward pass then keeps only each layer's output); any other activation, named or a
# callable, keeps its pre-activations too and takes its derivative from jax.grad.
WIDE_ACTIVATIONS = fast.FAST_ACTIVATIONS


def dims(config) -> tuple[int, int]:
    """(input width F, logits per example C') of the config's data: C' = 1 (sigmoid, binary
    cross-entropy) for two classes, else the number of classes (softmax cross-entropy)."""
    from vgjax.data import data_dims
    f, c = data_dims(config)
    return f, n_outputs_for(config, c)


def supports(config) -> bool:
    """Whether :func:`make_wide_train` covers ``config`` (else the vmap engine): any
    optimizer and activation, any data, the default loss (binary cross-entropy on one logit,
    softmax cross-entropy on several) or ``"bce"`` / ``"softmax_ce"`` by name, and no
    test-set gradients."""
    if config.test_gradients or config.loss not in (None, "bce", "softmax_ce"):
        return False
    return config.loss != "bce" or dims(config)[1] == 1


def fused(config) -> bool:
    """Whether the wide engine fuses the optimizer into its layer loop: Keras SGD and Keras
    Adam by name (``"sgd"``, ``"adam"``). Any other optimizer is applied to the whole
    gradient pytree, vmapped over runs, after the backward pass (:func:`_optax_step`)."""
    return _fused_rule(config) is not None


def memory(config, max_depth: int, p: int, keep_params: bool = False) -> Memory:
    """Rough device bytes of one run: its outputs, and its working set while it trains."""
    outputs = history_bytes(config, max_depth, p, keep_params)
    # params, optimizer state, per-element init draws and weight-histogram indices ~ 6 words
    # per kernel entry (+ a second moment for Adam, + a gradient and the optimizer's state
    # for optax); saved activations of a step; the evaluation pass over the data (hidden
    # activations, and C logits and their softmax per point); an epoch's gathered
    # minibatches (F inputs per training point).
    f, c = dims(config)
    words = 6 if config.optimizer == "sgd" else 8
    working = 4 * words * max_depth * p * p + 4 * 2 * max_depth * config.batch_size * p
    working += 4 * config.n_samples * (3 * p + 2 * c) + 4 * config.n_train * (f + 1) + outputs
    return Memory(outputs, working)


def _act_and_grad(activation) -> tuple[Callable, Callable, bool]:
    """(activation, its derivative ``(z, a) -> φ'(z)``, whether the derivative reads the
    pre-activation z). For :data:`WIDE_ACTIVATIONS` the derivative is a function of the
    activation value ``a`` alone; otherwise it is ``jax.grad`` of the scalar function
    (:func:`vgjax.theory.derivative_fn`), traced once."""
    if activation == "tanh":
        return jnp.tanh, lambda z, a: 1.0 - a * a, False
    if activation == "relu":  # relu(z) > 0 exactly when z > 0
        return (lambda z: jnp.maximum(z, 0.0)), (lambda z, a: (a > 0).astype(a.dtype)), False
    if activation == "sigmoid":
        return jax.nn.sigmoid, lambda z, a: a * (1.0 - a), False
    if activation == "linear":
        return (lambda z: z), (lambda z, a: jnp.ones_like(a)), False
    dphi = derivative_fn(activation)
    return activation_fn(activation), (lambda z, a: dphi(z)), True


class WideContext(NamedTuple):
    """A block's constants: x_train [N, F], y_train [N], x_all [N+M, F] and y_all [N+M]
    (train then test points, evaluated in one pass), n_train (int), shuffle_keys [R],
    mask [D, R] (run has hidden layer l), unit [R, P] float32 and unit_b [R, P] bool
    (unit < width), lr [R], mask0 [R, F, P] and omask [R, P] (or [R, P, C]: real first-layer
    and output kernel entries), depth [] (the block's deepest run: bounds its layer loops),
    run_depth and run_width [R] (each run's own: the signal probe, the architectures), and
    arch (each run's :class:`vgjax.model.Arch` [R]; None for a plain program)."""

    x_train: jax.Array
    y_train: jax.Array
    x_all: jax.Array
    y_all: jax.Array
    n_train: int
    shuffle_keys: jax.Array
    mask: jax.Array
    unit: jax.Array
    unit_b: jax.Array
    lr: jax.Array
    mask0: jax.Array
    omask: jax.Array
    depth: jax.Array
    run_depth: jax.Array
    run_width: jax.Array
    arch: Arch | None = None


class Net(NamedTuple):
    """A block's parameters as the forward pass reads them: first layer (k0 [R, F, P],
    b0 [R, P]), ``hidden(l) -> (kernel [R, P, P], bias [R, P])`` of hidden layer l >= 1,
    output (ko [R, P], bo [R]; with C > 1 logits ko [R, P, C], bo [R, C]); in a program
    with residual or normalised runs ``block(l) -> BlockParams`` of layer l >= 0 ([R]
    leading: ReZero's alpha, norm scale and offset, BatchNorm's running averages)."""

    k0: jax.Array
    b0: jax.Array
    hidden: Callable
    ko: jax.Array
    bo: jax.Array
    block: Callable | None = None


# ----------------------------------------------------------------------------------------
# one block of runs. Fused SGD: params = (k0 [R, F, P], b0 [R, P]), hidden (kh [D-1, R, P, P],
# bh [D-1, R, P]), output (ko [R, P], bo [R]; or [R, P, C], [R, C]), momentum traces of the
# same shapes. Optax:
# params = the reference engine's padded dict, run axis leading (kernels [R, D, P, P],
# biases [R, D, P], out_kernel [R, P] or [R, P, C], out_bias [R] or [R, C]), and the optimizer
# state of each run stacked over runs. Activations [R, B, P].

def _first_layer(x, k0, b0):
    """x [R, B, F] (or [1, N, F] shared) -> pre-activation [R, B, P]: for F <= 2 inputs
    broadcast FMAs, else a batched matmul."""
    if k0.shape[1] > 2:
        return jnp.matmul(x, k0) + b0[:, None, :]
    z = x[..., 0:1] * k0[:, None, 0, :]
    if k0.shape[1] == 2:
        z = z + x[..., 1:2] * k0[:, None, 1, :]
    return z + b0[:, None, :]


def _index(a, i, axis=0):
    return jax.lax.dynamic_index_in_dim(a, i, axis, keepdims=False)


def _put(a, v, i, axis=0):
    return jax.lax.dynamic_update_index_in_dim(a, v, i, axis)


def _stacked_net(params, stats=None) -> Net:
    """The fused-SGD layout's :class:`Net`: hidden layer l is entry l - 1 of the stacks;
    a residual / normalised program's extra parameters are a 7th entry, a dict of
    layer-major stacks (res_alpha [D, R], norm_scale / norm_offset [D, R, P])."""
    k0, b0, kh, bh, ko, bo = params[:6]
    block = None
    if len(params) > 6:
        extra = params[6]
        block = lambda l: _block_params(extra, stats, l, 0)
    return Net(k0, b0, lambda l: (_index(kh, l - 1), _index(bh, l - 1)), ko, bo, block)


def _dict_net(params, n_features: int, stats=None, arch: bool = False) -> Net:
    """The optax layout's :class:`Net` (the reference's padded dict, run axis leading;
    ``arch``: a program with residual / normalised runs)."""
    k, b = params["kernels"], params["biases"]
    block = None
    if arch:
        block = lambda l: _block_params(params, stats, l, 1)
    return Net(k[:, 0, :n_features], b[:, 0], lambda l: (_index(k, l, 1), _index(b, l, 1)),
               params["out_kernel"], params["out_bias"], block)


# The extra parameters of residual / normalised runs, by their names in the padded dict,
# and the BlockParams fields they fill.
_EXTRA = {"res_alpha": "alpha", "norm_scale": "scale", "norm_offset": "offset"}


def _block_params(extra: dict, stats: dict | None, l, axis: int) -> BlockParams:
    """Layer l's :class:`BlockParams` [R, ...] from the extra parameters (layer axis
    ``axis``) and BatchNorm's running averages (layer-major [D, R, P]; None: none)."""
    got = {f: _index(extra[k], l, axis) for k, f in _EXTRA.items() if k in extra}
    if stats is not None:
        got |= {"mean": _index(stats["mean"], l), "var": _index(stats["var"], l)}
    return BlockParams(**got)


class Saved(NamedTuple):
    """What the backward pass reads, unit-major: every hidden layer's masked output
    hs [D, R, P, B] (layer l's input is entry l-1, its output entry l) and, for an
    activation whose derivative needs it, its pre-activation zs [D, R, P, B] (else None)."""

    hs: jax.Array
    zs: jax.Array | None


def _forward(net: Net, max_depth: int, x, c: WideContext, act, keep: bool, keep_z: bool = False,
             probe: "_Probe | None" = None):
    """Logits [R, B] (or [R, B, C]), the last hidden activation [R, B, P], and (when ``keep``) the
    :class:`Saved` activations for the backward pass; with ``probe`` instead of the saved
    activations a :class:`Probed` (the signal probe's per-layer statistics of the first
    ``probe.rows`` points, and each run's last real pre-activation).

    Only the block's own layers run: a loop up to its deepest run (``c.depth``, unbatched).
    """
    unit = c.unit[:, None, :]
    z = _first_layer(x, net.k0, net.b0)
    h = act(z) * unit
    hs = zs = None
    if keep:
        hs = _put(jnp.zeros((max_depth,) + _t(h).shape, h.dtype), _t(h), 0)
        if keep_z:
            zs = _put(jnp.zeros_like(hs), _t(z), 0)
    seen = None
    if probe is not None:  # stats [D, 3, R] of the layers run so far, last pre-activation
        seen = Probed(None if probe.rows == 0 else _put(
            jnp.full((max_depth, 3, z.shape[0]), jnp.nan, z.dtype), _layer_signal(probe, z, c),
            0), z)
    if max_depth > 1:
        def layer(l, carry):
            h, hs, zs, seen = carry
            k, b = net.hidden(l)
            z = jnp.einsum("rbp,rpq->rbq", h, k) + b[:, None, :]
            a = act(z) * unit
            on = _index(c.mask, l)
            h = jnp.where(on[:, None, None], a, h)
            if seen is not None:
                seen = Probed(None if seen.stats is None else
                              _put(seen.stats, _layer_signal(probe, z, c), l),
                              jnp.where(on[:, None, None], z, seen.last_z))
            return (h, None if hs is None else _put(hs, _t(h), l),
                    None if zs is None else _put(zs, _t(z), l), seen)

        h, hs, zs, seen = jax.lax.fori_loop(1, c.depth, layer, (h, hs, zs, seen))
    logits = _readout(net, h)
    return logits, h, (Saved(hs, zs) if keep else seen)


def _readout(net: Net, h):
    """The output layer: logits [R, B] (one logit) or [R, B, C] from h [R, B, P]."""
    if net.ko.ndim == 2:
        return jnp.einsum("rbp,rp->rb", h, net.ko) + net.bo[:, None]
    return jnp.einsum("rbp,rpc->rbc", h, net.ko) + net.bo[:, None, :]


class _Probe(NamedTuple):
    """The signal probe's static parts: the activation φ and its derivative φ' as
    :mod:`vgjax.probes` computes them, and how many leading points of the forward pass it
    summarises (the training points of the evaluation pass; 0: none, only the last
    pre-activation is wanted)."""

    phi: Callable
    dphi: Callable
    rows: int


class Probed(NamedTuple):
    """What a probed forward pass gives besides the logits: stats [D, 3, R] (q^l, saturated
    and dead share of each hidden layer l over the probed points, NaN for layers the block
    does not run; None when no point is probed) and last_z [R, B, P], each run's last real layer's pre-activation."""

    stats: jax.Array
    last_z: jax.Array


def _layer_signal(probe: _Probe, z, c: WideContext):
    """[3, R] q^l, saturated share and dead share of one layer's pre-activations z [R, B, P]
    over its first ``probe.rows`` points and each run's real units: the values of
    :func:`vgjax.probes.layer_probes` (per-unit means over the points, then the mean over
    the run's units), from a pre-activation the forward pass has anyway."""
    z = z[:, :probe.rows]
    per_unit = jnp.stack([jnp.mean(z * z, axis=1),
                          jnp.mean(jnp.abs(probe.dphi(z)) < SATURATION_THRESHOLD, axis=1),
                          jnp.all(probe.phi(z) == 0, axis=1).astype(z.dtype)])  # [3, R, P]
    real = c.unit_b[None]
    n = jnp.maximum(jnp.sum(c.unit_b, axis=1), 1)
    return jnp.sum(jnp.where(real, per_unit, 0.0), axis=2) / n[None, :]


def _signal_of(probed: Probed, c: WideContext):
    """[3, D, R] per-layer probe (:data:`vgjax.result.SIGNAL_LAYER_STATS` rows), NaN for
    each run's layers >= its depth."""
    d = probed.stats.shape[0]
    own = (jnp.arange(d)[:, None] < c.run_depth[None, :])[:, None, :]      # [D, 1, R]
    return jnp.moveaxis(jnp.where(own, probed.stats, jnp.nan), 1, 0)


def _t(a):
    """[R, B, P] <-> [R, P, B]."""
    return jnp.swapaxes(a, 1, 2)


# ----------------------------------------------------------------------------------------
# residual and normalised runs: each hidden layer is the Dense product, as in the plain
# path, then vgjax.model.arch_block (normalisation, activation, residual branch) vmapped
# over runs, whose backward pass comes from jax.vjp at the saved pre-activations and
# inputs; the products' backward stays written out.

def _blocks(st: "_Static", c: WideContext, z, h, bp: BlockParams, first: bool, train: bool,
            w):
    """:func:`vgjax.model.arch_block` of every run: z, h [R, B, P] -> (out [R, B, P],
    running (mean, var) [R, P] each)."""
    def one(z, h, bp, arch, depth, width):
        return arch_block(z, h, bp, arch, depth, width, activation=st.block_act,
                          features=st.features, first=first, train=train, weight=w)
    return jax.vmap(one)(z, h, bp, c.arch, c.run_depth, c.run_width)


def _arch_forward(st: "_Static", net: Net, x, c: WideContext, stats, keep: bool,
                  train: bool, w):
    """:func:`_forward` of a program with residual / normalised runs: logits, the last
    hidden activation, the :class:`Saved` activations (pre-activations always) when
    ``keep``, and BatchNorm's running averages [D, R, P] after this pass (moved when
    ``train``; None without BatchNorm)."""
    z = _first_layer(x, net.k0, net.b0)
    h, running = _blocks(st, c, z, jnp.zeros_like(z), net.block(0), True, train, w)
    if stats is not None:
        stats = {k: _put(stats[k], v, 0) for k, v in zip(("mean", "var"), running)}
    hs = zs = None
    if keep:
        hs = _put(jnp.zeros((st.max_depth,) + _t(h).shape, h.dtype), _t(h), 0)
        zs = _put(jnp.zeros_like(hs), _t(z), 0)
    if st.max_depth > 1:
        def layer(l, carry):
            h, hs, zs, stats = carry
            k, b = net.hidden(l)
            z = jnp.einsum("rbp,rpq->rbq", h, k) + b[:, None, :]
            a, running = _blocks(st, c, z, h, net.block(l), False, train, w)
            m = _index(c.mask, l)
            h = jnp.where(m[:, None, None], a, h)
            if stats is not None:
                stats = {k: _put(stats[k], jnp.where(m[:, None], v, _index(stats[k], l)), l)
                         for k, v in zip(("mean", "var"), running)}
            return (h, None if hs is None else _put(hs, _t(h), l),
                    None if zs is None else _put(zs, _t(z), l), stats)

        h, hs, zs, stats = jax.lax.fori_loop(1, c.depth, layer, (h, hs, zs, stats))
    logits = _readout(net, h)
    return logits, h, (Saved(hs, zs) if keep else None), stats


def _block_vjp(st: "_Static", c: WideContext, saved: Saved, bp: BlockParams, l, first: bool,
               dout, w):
    """The backward pass of layer l's block (:func:`_blocks` in training mode) at the saved
    activations: from the gradient at its output dout [R, P, B] (unit-major), the gradients
    at its pre-activations dz and input dh [R, P, B] and at its extra parameters
    (:class:`BlockParams` of [R, ...] gradients; None where the program has none)."""
    z = _t(_index(saved.zs, l))
    h = jnp.zeros_like(z) if first else _t(_index(saved.hs, l - 1))
    learnt = BlockParams(bp.alpha, bp.scale, bp.offset)

    def f(z, h, learnt):
        return _blocks(st, c, z, h, learnt._replace(mean=bp.mean, var=bp.var), first,
                       True, w)[0]
    _, back = jax.vjp(f, z, h, learnt)
    dz, dh, dlearnt = back(_t(dout))
    return _t(dz), _t(dh), dlearnt


def _row_sums(g):
    """[R, ...] -> sum |g| [R] and sum g^2 [R], reduced over one flat minor axis."""
    g = g.reshape(g.shape[0], -1)
    return jnp.sum(jnp.abs(g), axis=1), jnp.einsum("rk,rk->r", g, g)


class _Static(NamedTuple):
    """The step's static parts: activation, its derivative ``(z, a) -> φ'(z)``, whether that
    reads z (then the forward pass keeps pre-activations), D, the data's input width F, and
    the optimizer: a fused rule (``rate``, ``update``: :func:`_fused_rule`) or an optax
    factory (``optimizer``); the residual / normalised variants of the program's runs
    (``features``, :class:`vgjax.model.Features`) and the activation their blocks apply
    (``block_act``: the model's own, so :func:`jax.vjp` differentiates what the reference
    engine differentiates)."""

    act: Callable
    dact: Callable
    keep_z: bool
    max_depth: int
    n_features: int
    rate: Callable | None = None
    update: Callable | None = None
    optimizer: OptimizerFactory | None = None
    features: Features = Features()
    block_act: Callable | None = None


def _dact(st: _Static, saved: Saved, l):
    """φ' of hidden layer l's pre-activation [R, P, B], from what the forward pass saved."""
    return st.dact(None if saved.zs is None else _index(saved.zs, l), _index(saved.hs, l))


def _sgd(w, g, m, lr, momentum):
    """optax.sgd: trace t = g + momentum t; w += -lr t. Returns (w, t)."""
    if momentum > 0:
        m = g + momentum * m
        g = m
    return w + (-lr) * g, m


class Fused(NamedTuple):
    """The state of an optimizer fused into the layer loop: steps taken (int32 []) and its
    per-parameter slots, each a tuple shaped like the parameters (SGD: (momentum,); Adam:
    (first moment, second moment))."""

    count: jax.Array
    slots: tuple


def _fused_rule(config) -> tuple[Callable, Callable, int] | None:
    """The fused optimizer of ``config``, or None (then optax over the whole pytree):
    ``(rate(lr [R], count) -> per-run step size [R], update(w, g, slots, rate) -> (w,
    slots), number of slots)``. Keras SGD (``"sgd"``) and Keras Adam (``"adam"``,
    :func:`vgjax.step.keras_adam`'s formulas). Both leave a parameter with zero gradient and
    zero slots exactly as it is, so the layers no run of a block has are skipped outright,
    as the layer loop skips them (the reference engine updates them by zero)."""
    opt = config.optimizer
    if not isinstance(opt, str):
        return None
    if opt == "sgd":
        def sgd(w, g, slots, lr):
            w, m = _sgd(w, g, slots[0], lr, config.momentum)
            return w, (m,)
        return (lambda lr, count: lr), sgd, 1
    if opt == "adam":
        b1, b2, eps = ADAM_B1, ADAM_B2, ADAM_EPS

        def rate(lr, count):
            t = (count + 1).astype(jnp.float32)
            return lr * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)

        def adam(w, g, slots, lr_t):
            m, v = slots
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            return w + (-lr_t) * m / (jnp.sqrt(v) + eps), (m, v)
        return rate, adam, 2
    return None


def _record(l, g, mask, acc: Acc, hist_now: bool) -> Acc:
    """Layer ``l``'s gradient g [R, ...] statistics, written in place into the accumulator.
    The histogram is counted when ``hist_now``, a Python bool: the loop traces a histogram
    epoch's steps apart (:attr:`vgjax.engines.loop.Engine.hist_branches`), so no step of
    another epoch carries a ``cond`` per layer (measured: that cond cost more than the
    histograms)."""
    sa, ss, gacc = acc
    a, q = _row_sums(g)
    sa, ss = _put(sa, _index(sa, l) + a, l), _put(ss, _index(ss, l) + jnp.sqrt(q), l)
    if gacc is not None and hist_now:
        r = g.shape[0]
        new = tuple(x.T for x in bucket_histogram(g.reshape(r, -1), mask.reshape(r, -1)))
        old = tuple(_index(x, l)[None] for x in gacc)
        merged = merge_hist(old, tuple(x[None] for x in new))
        gacc = tuple(_put(x, v[0], l) for x, v in zip(gacc, merged))
    return Acc(sa, ss, gacc)


def _layer_backward(st: _Static, dh, saved: Saved, k, l, c: WideContext, block=None):
    """Backprop through hidden layer l >= 1 (kernel k [R, P, P]), unit-major: the gradient
    into its input dh [R, P, B], its kernel and bias gradients gk [R, P, P] and gb [R, P],
    the runs that have the layer (mask [R, 1, 1]), and its extra parameters' gradients
    (:class:`BlockParams`; None for a plain program). ``block``: (layer l's
    :class:`BlockParams`, the minibatch's example weights [B]) in a program with residual /
    normalised runs, whose block's backward pass is :func:`_block_vjp`."""
    m = _index(c.mask, l)[:, None, None]
    h_in = _index(saved.hs, l - 1)
    if block is None:
        dz = jnp.where(m, dh, 0.0) * c.unit[:, :, None] * _dact(st, saved, l)
        dh_in, dlearnt = None, None
    else:
        dz, dh_in, dlearnt = _block_vjp(st, c, saved, block[0], l, False,
                                        jnp.where(m, dh, 0.0), block[1])
    gk = jnp.einsum("rpb,rqb->rpq", h_in, dz)
    gb = jnp.sum(dz, axis=2)
    back = jnp.einsum("rpq,rqb->rpb", k, dz)
    if dh_in is not None:  # the residual path
        back = back + dh_in
    return jnp.where(m, back, dh), gk, gb, m, dlearnt


def _put_learnt(gx: dict | None, dlearnt: BlockParams | None, l) -> dict | None:
    """Layer l's extra-parameter gradients written into the layer-major stacks ``gx``."""
    if gx is None:
        return None
    return {k: _put(v, getattr(dlearnt, _EXTRA[k]), l) for k, v in gx.items()}


def _hidden_backward(st: _Static, dh, saved: Saved, params, slots, rate, c: WideContext, acc,
                     hist_now, net: Net | None = None, w=None, gx=None):
    """Backward through hidden layers l = depth-1 ... 1 of the block, each layer's fused
    optimizer update (``st.update`` at step size ``rate`` [R]) and statistics done while its
    gradient is hot. ``dh`` [R, P, B] and the saved activations are unit-major (see
    :func:`_step`). With residual / normalised runs, ``net`` (its ``block``), the
    minibatch weights ``w`` and the extra parameters' gradient stacks ``gx`` (filled here,
    applied after the loop). Returns (dh, kh, bh, the hidden slots' new stacks, acc, gx)."""
    ub = c.unit_b
    n = len(slots)

    def layer(i, carry):
        dh, stacks, pending, acc, gx = carry
        # The previous layer's update is written first, so every read of the stacks
        # below depends on that write: XLA then updates them in place (a write that
        # is independent of some read makes it copy the whole stack each layer).
        stacks = tuple(_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1]))
        kh, bh = stacks[:2]
        l = c.depth - i
        k = _index(kh, l - 1)
        block = None if net is None or net.block is None else (net.block(l), w)
        dh, gk, gb, m, dlearnt = _layer_backward(st, dh, saved, k, l, c, block)
        gx = _put_learnt(gx, dlearnt, l)
        k, sk = st.update(k, gk, tuple(_index(a, l - 1) for a in stacks[2:2 + n]),
                          rate[:, None, None])
        b, sb = st.update(_index(bh, l - 1), gb, tuple(_index(a, l - 1) for a in stacks[2 + n:]),
                          rate[:, None])
        pending = (k, b, *sk, *sb, l - 1)
        acc = _record(l, gk, ub[:, :, None] & ub[:, None, :] & m, acc, hist_now)
        return dh, stacks, pending, acc, gx

    stacks = (params[2], params[3], *(s[2] for s in slots), *(s[3] for s in slots))
    first = c.depth - 2  # a no-op write of the first layer's own values
    pending = tuple(_index(a, first) for a in stacks) + (first,)
    dh, stacks, pending, acc, gx = jax.lax.fori_loop(1, c.depth, layer,
                                                     (dh, stacks, pending, acc, gx))
    stacks = tuple(_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1]))
    return dh, stacks[0], stacks[1], stacks[2:2 + n], stacks[2 + n:], acc, gx


def _output_backward(net: Net, logits, hD, y, w):
    """The output layer's gradients (g_ko [R, P], g_bo [R]; with C logits [R, P, C] and
    [R, C]) and the gradient flowing into the last hidden layer, unit-major [R, P, B]: the
    weighted-mean binary cross-entropy's (sigmoid - y) on one logit, the softmax
    cross-entropy's (softmax - one_hot(y)) on several."""
    if net.ko.ndim == 2:
        dlogit = (jax.nn.sigmoid(logits) - y) * (w / jnp.sum(w))[None, :]  # [R, B]
        g_ko = jnp.einsum("rbp,rb->rp", hD, dlogit)
        g_bo = jnp.sum(dlogit, axis=1)
        return g_ko, g_bo, net.ko[:, :, None] * dlogit[:, None, :]
    c = logits.shape[-1]
    onehot = jax.nn.one_hot(y.astype(jnp.int32), c, dtype=logits.dtype)
    dlogit = (jax.nn.softmax(logits, axis=-1) - onehot) * (w / jnp.sum(w))[None, :, None]
    g_ko = jnp.einsum("rbp,rbc->rpc", hD, dlogit)
    g_bo = jnp.sum(dlogit, axis=1)
    return g_ko, g_bo, jnp.einsum("rpc,rbc->rpb", net.ko, dlogit)


def _first_backward(st: _Static, dh, saved: Saved, x, c: WideContext, net: Net | None = None,
                    w=None, gx=None):
    """The first layer's gradients: g_k0 [R, F, P] and g_b0 [R, P] (and with residual /
    normalised runs, its extra parameters' written into the stacks ``gx``)."""
    if net is None or net.block is None:
        dz0 = dh * c.unit[:, :, None] * _dact(st, saved, 0)                 # [R, P, B]
    else:
        dz0, _, dlearnt = _block_vjp(st, c, saved, net.block(0), 0, True, dh, w)
        gx = _put_learnt(gx, dlearnt, 0)
    return jnp.einsum("rbi,rqb->riq", x, dz0), jnp.sum(dz0, axis=2), gx


def _per_run(v, a):
    """Per-run values v [R] shaped to broadcast against a [R, ...]."""
    return v.reshape(v.shape + (1,) * (a.ndim - 1))


def _step(st: _Static, state, batch, c: WideContext, acc: Acc, hist_now):
    """One step of a block with a fused optimizer (:func:`_fused_rule`): forward, then
    backprop layer by layer with each layer's update and statistics (:func:`_record`) fused
    in. ``(state, acc) -> (state, acc)``.

    The forward pass is batch-major ([R, B, P]: ``h K`` is a plain matmul), the backward
    pass unit-major ([R, P, B]): its product ``K dz`` is then a plain matmul too, where
    ``dz K^T`` in the batch-major layout ran 4x slower on XLA:CPU at width 512 (1.06 vs
    0.26 ms per layer for 2 runs); the weight gradient costs the same either way.

    With residual / normalised runs the state is ``(params, Fused, BatchNorm's running
    averages or None)``, the params carry the extra parameters (:func:`_stacked_net`),
    whose gradients are gathered layer by layer and applied after the backward pass."""
    (params, opt, *stats), (x, y, w) = state, batch
    k0, b0, kh, bh, ko, bo = params[:6]
    slot = lambda j: tuple(s[j] for s in opt.slots)
    rate = st.rate(c.lr, opt.count)                                           # [R]
    arch = not st.features.plain
    stats = stats[0] if stats else None
    net = _stacked_net(params, stats)
    if arch:
        logits, hD, saved, stats = _arch_forward(st, net, x, c, stats, True, True, w)
        gx = jax.tree.map(jnp.zeros_like, params[6])
    else:
        logits, hD, saved = _forward(net, st.max_depth, x, c, st.act, keep=True,
                                     keep_z=st.keep_z)
        gx = None
    g_ko, g_bo, dh = _output_backward(net, logits, hD, y, w)
    ko, sko = st.update(ko, g_ko, slot(4), _per_run(rate, ko))
    bo, sbo = st.update(bo, g_bo, slot(5), _per_run(rate, bo))
    skh, sbh = slot(2), slot(3)
    if st.max_depth > 1:
        dh, kh, bh, skh, sbh, acc, gx = _hidden_backward(
            st, dh, saved, params, opt.slots, rate, c, acc, hist_now,
            net if arch else None, w, gx)
    g_k0, g_b0, gx = _first_backward(st, dh, saved, x, c, net if arch else None, w, gx)
    k0, sk0 = st.update(k0, g_k0, slot(0), rate[:, None, None])
    b0, sb0 = st.update(b0, g_b0, slot(1), rate[:, None])
    r = g_k0.shape[0]
    acc = _record(0, g_k0.reshape(r, -1), c.mask0.reshape(r, -1), acc, hist_now)
    acc = _record(st.max_depth, g_ko, c.omask, acc, hist_now)
    slots = [sk0, sb0, skh, sbh, sko, sbo]
    new = (k0, b0, kh, bh, ko, bo)
    if not arch:
        return (new, Fused(opt.count + 1, tuple(zip(*slots)))), acc
    # the extra parameters: [D, R] and [D, R, P] stacks, the run axis second
    extra, sx = {}, {}
    for name, g in gx.items():
        v = params[6][name]
        extra[name], sx[name] = st.update(v, g, tuple(s[name] for s in slot(6)),
                                          rate.reshape((1, r) + (1,) * (v.ndim - 2)))
    slots.append(tuple({k: sx[k][j] for k in sx} for j in range(len(opt.slots))))
    return ((*new, extra), Fused(opt.count + 1, tuple(zip(*slots))), stats), acc


def _optax_step(st: _Static, state, batch, c: WideContext, acc: Acc, hist_now):
    """One step of a block with any optax optimizer: forward, backprop layer by layer into
    a gradient pytree of the reference engine's padded layout (statistics recorded while
    each layer's gradient is hot), then the optimizer over that whole pytree, vmapped over
    runs, each with its own (traced) learning rate (:func:`apply_optimizer`). Layers no
    run of the block has keep zero gradients, as in the reference engine, and the
    optimizer sees them as it does there. With residual / normalised runs the pytree has
    their extra parameters too (run axis leading, as in the reference engine), and the
    state BatchNorm's running averages third."""
    (params, opt_state, *stats), (x, y, w) = state, batch
    arch = not st.features.plain
    stats = stats[0] if stats else None
    net = _dict_net(params, st.n_features, stats, arch)
    if arch:
        logits, hD, saved, stats = _arch_forward(st, net, x, c, stats, True, True, w)
        gx = {k: jnp.zeros_like(jnp.moveaxis(params[k], 1, 0)) for k in _EXTRA if k in params}
    else:
        logits, hD, saved = _forward(net, st.max_depth, x, c, st.act, keep=True,
                                     keep_z=st.keep_z)
        gx = None
    g_ko, g_bo, dh = _output_backward(net, logits, hD, y, w)
    gk_all = jnp.zeros_like(params["kernels"])                               # [R, D, P, P]
    gb_all = jnp.zeros_like(params["biases"])                                # [R, D, P]
    ub = c.unit_b
    if st.max_depth > 1:
        def layer(i, carry):
            dh, gk_all, gb_all, acc, gx = carry
            l = c.depth - i
            block = (net.block(l), w) if arch else None
            dh, gk, gb, m, dlearnt = _layer_backward(st, dh, saved, net.hidden(l)[0], l, c,
                                                     block)
            acc = _record(l, gk, ub[:, :, None] & ub[:, None, :] & m, acc, hist_now)
            return (dh, _put(gk_all, gk, l, 1), _put(gb_all, gb, l, 1), acc,
                    _put_learnt(gx, dlearnt, l))

        dh, gk_all, gb_all, acc, gx = jax.lax.fori_loop(1, c.depth, layer,
                                                        (dh, gk_all, gb_all, acc, gx))
    g_k0, g_b0, gx = _first_backward(st, dh, saved, x, c, net if arch else None, w, gx)
    gk_all = jax.lax.dynamic_update_slice(gk_all, g_k0[:, None], (0, 0, 0, 0))
    gb_all = _put(gb_all, g_b0, 0, 1)
    r = g_k0.shape[0]
    acc = _record(0, g_k0.reshape(r, -1), c.mask0.reshape(r, -1), acc, hist_now)
    acc = _record(st.max_depth, g_ko, c.omask, acc, hist_now)
    grads = {"kernels": gk_all, "biases": gb_all, "out_kernel": g_ko, "out_bias": g_bo}
    if not arch:
        return apply_optimizer(st.optimizer, c.lr, params, grads, opt_state), acc
    grads |= {k: jnp.moveaxis(v, 0, 1) for k, v in gx.items()}
    return (*apply_optimizer(st.optimizer, c.lr, params, grads, opt_state), stats), acc


def _layers(params, n_features: int):
    """(k0 [R, F, P], kh [D-1, R, P, P], ko [R, P] or [R, P, C]) of either layout."""
    if isinstance(params, dict):
        k = params["kernels"]
        return k[:, 0, :n_features], jnp.moveaxis(k[:, 1:], 1, 0), params["out_kernel"]
    return params[0], params[2], params[4]


def _weight_hist(p, params, c: WideContext):
    """Counts [L, K, R] and stats [L, 4, R] of every layer's kernel: one histogram call, the
    first and output kernels zero-padded (masked) to the hidden layers' P*P entries."""
    k0, kh, ko = _layers(params, c.mask0.shape[1])
    r, ub = ko.shape[0], c.unit_b
    flat = lambda a, m: (jnp.pad(a.reshape(r, -1), ((0, 0), (0, p * p - a[0].size)))[None],
                         jnp.pad(m.reshape(r, -1), ((0, 0), (0, p * p - a[0].size)))[None])
    vals, masks = zip(flat(k0, c.mask0), flat(ko, c.omask))
    if kh.shape[0] > 0:
        hmask = ub[None, :, :, None] & ub[None, :, None, :] & c.mask[1:, :, None, None]
        vals = (vals[0], kh.reshape(kh.shape[0], r, -1), vals[1])
        masks = (masks[0], hmask.reshape(kh.shape[0], r, -1), masks[1])
    # vmapped over layers (not flattened into [L*R, ...], which would mix the unsharded
    # layer axis into the sharded run axis and cost a cross-device exchange)
    counts, stats = jax.vmap(bucket_histogram)(jnp.concatenate(vals),
                                               jnp.concatenate(masks))
    return jnp.moveaxis(counts, 1, -1), jnp.moveaxis(stats, 1, -1)


def _net(st: _Static, state) -> Net:
    params = state[0]
    stats = state[2] if len(state) > 2 else None
    return (_dict_net(params, st.n_features, stats, not st.features.plain)
            if isinstance(params, dict) else _stacked_net(params, stats))


def _evaluate(st: _Static, state, c: WideContext, probe: _Probe | None = None):
    """Curves [4, R] (train/test loss, train/test accuracy) and weight L1 [L, R]; with
    ``probe`` (plain MLPs only) also the signal probe's per-layer statistics [3, D, R] of the
    training points, from the same forward pass (:func:`_signal_of`)."""
    params = state[0]
    net = _net(st, state)
    if st.features.plain:
        logits, _, probed = _forward(net, st.max_depth, c.x_all[None], c, st.act,
                                     keep=False, probe=probe)
    else:  # BatchNorm: the running averages, so every point is evaluated on its own
        logits = _arch_forward(st, net, c.x_all[None], c, state[2], False, False, None)[0]
    y = c.y_all[None]                                                       # [1, N+M]
    if logits.ndim == 2:                                                    # [R, N+M]
        ce = bce(logits, y)
        hit = ((logits > 0).astype(jnp.float32) == y).astype(jnp.float32)
    else:                                                                   # [R, N+M, C]
        ce = softmax_ce(logits, jnp.broadcast_to(y, logits.shape[:2]))
        hit = (jnp.argmax(logits, axis=-1).astype(jnp.float32) == y).astype(jnp.float32)
    nt = c.n_train
    curves = jnp.stack((jnp.mean(ce[:, :nt], 1), jnp.mean(ce[:, nt:], 1),
                        jnp.mean(hit[:, :nt], 1), jnp.mean(hit[:, nt:], 1)))
    if isinstance(params, dict):
        l1 = jnp.concatenate([jnp.abs(params["kernels"]).sum((2, 3)).T,
                              _l1(params["out_kernel"])[None]])
    else:
        k0, kh, ko = _layers(params, st.n_features)
        l1 = jnp.concatenate([jnp.abs(k0).sum((1, 2))[None], jnp.abs(kh).sum((2, 3)),
                              _l1(ko)[None]])                                 # [L, R]
    return (curves, l1) if probe is None else (curves, l1, _signal_of(probed, c))


def _jacobian(st: _Static, probe: _Probe, state, c: WideContext):
    """The input-output Jacobian's summary over the training points: (mean σ² [R], max σ
    [R], log10 σ counts [K, R]) as :func:`vgjax.engines.reference.signal_jacobian` gives
    them, with J = ∂h_L/∂x [R, N, P, F] by forward mode through this engine's own forward
    pass (one tangent per input feature for all points at once: the points are
    independent), so only the block's layers run."""
    net, f = _net(st, state), st.n_features
    last_z = lambda x: _forward(net, st.max_depth, x[None], c, st.act, keep=False,
                                probe=probe._replace(rows=0))[2].last_z                       # [R, N, P]
    x = c.x_train
    basis = jnp.eye(f, dtype=x.dtype)[:, None, :] * jnp.ones_like(x)[None]   # [F, N, F]
    tangents = jax.vmap(lambda t: jax.jvp(last_z, (x,), (t,))[1])(basis)    # [F, R, N, P]
    jac = jnp.moveaxis(tangents, 0, -1)                                      # [R, N, P, F]

    def summary(j, width):
        s, valid = singular_values(j, n_in=f, n_out=width)
        out = spectrum_summary(s, valid)
        return out["mean_sq"], out["max"], out["log_hist"]
    m, mx, counts = jax.vmap(summary)(jac, c.run_width)
    return m, mx, counts.T


def _l1(a):
    """[R, ...] -> sum |a| per run [R]."""
    return jnp.abs(a.reshape(a.shape[0], -1)).sum(1)


def _params(p, state):
    """The block's parameters in the padded layout, run axis last (kernels [D, P, P, R]),
    with residual / normalised runs their extra parameters and BatchNorm's running
    averages too (:data:`vgjax.engines.loop.ARCH_PARAM_KEYS`)."""
    out = {}
    if len(state) > 2 and state[2] is not None:
        out = {"batch_" + k: jnp.moveaxis(v, 1, -1) for k, v in state[2].items()}
    if isinstance(state[0], dict):
        return {k: jnp.moveaxis(v, 0, -1) for k, v in state[0].items()} | out
    k0, b0, kh, bh, ko, bo = state[0][:6]
    k0 = jnp.pad(k0, ((0, 0), (0, p - k0.shape[1]), (0, 0)))[None]          # [1, R, P, P]
    if len(state[0]) > 6:
        out |= {k: jnp.moveaxis(v, 1, -1) for k, v in state[0][6].items()}
    return {"kernels": jnp.moveaxis(jnp.concatenate([k0, kh]), 1, -1),
            "biases": jnp.moveaxis(jnp.concatenate([b0[None], bh]), 1, -1),
            "out_kernel": jnp.moveaxis(ko, 0, -1), "out_bias": jnp.moveaxis(bo, 0, -1)} | out


def _minibatches(config, c: WideContext, e):
    """The epoch's shuffled minibatches: x [S, R, B, F], y [S, R, B], weights [S, B]."""
    idx, w = epoch_batches(c.shuffle_keys, e, config.n_train, config.batch_size)
    return jnp.moveaxis(c.x_train[idx], 1, 0), jnp.moveaxis(c.y_train[idx], 1, 0), w


def _init(config, features: Features, max_depth: int, p: int, spec, data) -> Setup:
    """A block's initial state (fused optimizer: layer-stacked params and :class:`Fused`;
    optax: the padded dict, run axis leading, and the optimizer state; with residual /
    normalised runs (``features``) their extra parameters in the params, and BatchNorm's
    running averages [D, R, P] (or None) third) and its constants."""
    D, P, r = max_depth, p, spec.depth.shape[0]
    f, n_out = dims(config)
    p0, shuffle_keys = chunk_start(config, D, P, spec, n_features=f, n_outputs=n_out)
    extra = {k: jnp.broadcast_to(v[:, None], (D, r) + v.shape[1:])         # [D, R, ...]
             for k, v in init_architecture(D, P, features).items()}
    rule = _fused_rule(config)
    if rule is not None:
        kern = jnp.moveaxis(p0["kernels"], 1, 0)                            # [D, R, P, P]
        bias = jnp.moveaxis(p0["biases"], 1, 0)                             # [D, R, P]
        params = (kern[0, :, :f], bias[0], kern[1:], bias[1:],
                  p0["out_kernel"], p0["out_bias"]) + (() if features.plain else (extra,))
        slots = tuple(jax.tree.map(jnp.zeros_like, params) for _ in range(rule[2]))
        state = (params, Fused(jnp.zeros((), jnp.int32), slots))
    else:
        p0 = p0 | {k: jnp.moveaxis(v, 0, 1) for k, v in extra.items()}
        lr = jnp.broadcast_to(jnp.asarray(spec.lr, jnp.float32), (r,))
        state = (p0, init_optimizer(optimizer_factory(config), lr, p0))
    if not features.plain:
        stats = None
        if features.batch:
            stats = {k: jnp.broadcast_to(v[:, None], (D, r, P))
                     for k, v in init_batch_stats(D, P).items()}
        state = state + (stats,)
    mask = jnp.arange(D)[:, None] < spec.depth[None, :]                     # [D, R]
    unit_b = jnp.arange(P)[None, :] < spec.width[:, None]                   # [R, P]
    counts, present = chunk_layers(spec, D, n_features=f, n_outputs=n_out)  # [L, R] each
    c = WideContext(
        x_train=data.x_train, y_train=data.y_train,
        x_all=jnp.concatenate([data.x_train, data.x_test]),
        y_all=jnp.concatenate([data.y_train, data.y_test]),
        n_train=data.x_train.shape[0], shuffle_keys=shuffle_keys,
        mask=mask, unit=unit_b.astype(jnp.float32), unit_b=unit_b,
        lr=jnp.broadcast_to(jnp.asarray(spec.lr, jnp.float32), (r,)),
        mask0=jnp.broadcast_to(unit_b[:, None, :], (r, f, P)),
        omask=unit_b if n_out == 1 else jnp.broadcast_to(unit_b[:, :, None], (r, P, n_out)),
        # the block's deepest run bounds its layer loops; computed once per block,
        # so no per-step cross-device reduction when the run axis is sharded
        depth=jnp.max(spec.depth), run_depth=spec.depth, run_width=spec.width,
        arch=None if features.plain else spec_arch(spec, config))
    return Setup(state, c, counts, present)


def wide_engine(config, max_depth: int, p: int, features: Features | None = None) -> Engine:
    """The wide engine's kernels over one block of runs (see the module doc); ``features``:
    the residual / normalised variants its runs may have (default: the config's), each
    run's own from its spec (:func:`vgjax.engines.loop.spec_arch`)."""
    if not supports(config):
        raise ValueError(f"config: the wide engine covers the binary or softmax "
                         f"cross-entropy and no test_gradients; got loss {config.loss!r}, "
                         f"test_gradients={config.test_gradients}")
    act, dact, keep_z = _act_and_grad(config.activation)
    rule = _fused_rule(config)
    f = dims(config)[0]
    if features is None:
        features = features_of([(config.residual, config.norm)])
    arch = dict(features=features, block_act=activation_fn(config.activation))
    st = (_Static(act, dact, keep_z, max_depth, f, rate=rule[0], update=rule[1], **arch)
          if rule else
          _Static(act, dact, keep_z, max_depth, f, optimizer=optimizer_factory(config), **arch))
    if "signal" in config.probes and not features.plain:
        raise ValueError("probes: the signal probe reads the plain MLP's layers; allowed: no "
                         "probes, or a grid of plain MLPs")
    probed = {}
    if "signal" in config.probes:
        # the per-layer probe from the evaluation pass (its training points), the Jacobian
        # by forward mode through this engine's forward pass: only the block's layers run
        probe = _Probe(activation_fn(config.activation), derivative_fn(config.activation),
                       config.n_train)
        probed = dict(evaluate_signal=functools.partial(_evaluate, st, probe=probe),
                      signal=lambda state, c: _evaluate(st, state, c, probe)[2],
                      jacobian=functools.partial(_jacobian, st, probe))
    return Engine(init=functools.partial(_init, config, features, max_depth, p),
                  minibatches=functools.partial(_minibatches, config),
                  step=functools.partial(_step if rule else _optax_step, st),
                  evaluate=functools.partial(_evaluate, st),
                  weight_hist=lambda state, c: _weight_hist(p, state[0], c),
                  params=functools.partial(_params, p), hist_branches=True, **probed)


def make_wide_train(config, max_depth: int, p: int, *, keep_params: bool = False,
                    features: Features | None = None):
    """Build ``train(spec, data) -> dict`` for a block of runs (``spec`` fields [R]):
    :func:`vgjax.engines.loop.train_loop` with :func:`wide_engine`'s kernels, run axis first.

    Returns the same dict, shapes and dtypes as ``jax.vmap(vgjax.engines.reference.make_train(
    config, max_depth, p, keep_params=...), in_axes=(0, None))``; its layer loops run up to
    the block's deepest run (:func:`vgjax.engines.in_depth_blocks` trains a chunk in blocks).
    ``features``: as :func:`wide_engine`.
    """
    engine = wide_engine(config, max_depth, p, features)

    def train(spec, data):
        return runs_first(train_loop(engine, config, spec, data, keep_params=keep_params))

    return train
