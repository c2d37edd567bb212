"""The wide-net engine's kernels: minibatch products that stay batched matmuls over runs.

It trains under the one loop of :mod:`vgjax.engines.loop` (:func:`make_wide_train`, per depth
block); its own are a fused step (:func:`_step`: backprop, SGD update and statistics layer
by layer), histograms, evaluation and parameter layout. It computes exactly what
``jax.vmap(vgjax.engines.reference.make_train(config, D, P))`` computes (same initial weights,
shuffles, Keras SGD and history dict; equal to float32 rounding, tested) in the layout that
matmul libraries like: the run axis LEADING, so each layer's minibatch products are
batched plain matmuls: ``[R, B, P] x [R, P, P]`` forward, ``[R, P, P] x [R, P, B]`` backward
in a unit-major layout (XLA:CPU's Eigen dots; cuBLAS batched GEMM on a GPU). Where
:mod:`vgjax.engines.fast` unrolls every product into ``P`` broadcast multiplies (fast at the
tutorial's 5 units, but its program and its work grow with ``P``), this program's size does
not depend on ``P`` or ``D``:

* the hidden layers are a loop over a layer-stacked ``[D-1, R, P, P]`` kernel that runs
  up to the block's deepest run (an unbatched bound), so layers no run of the block has
  cost nothing;
* backprop is written out per layer, and each layer's optimizer update, |g| sum, norm and
  (on histogram epochs) gradient histogram are computed in the same loop iteration while
  the layer's ``[R, P, P]`` gradient is in cache, and written in place into the stacked
  parameters: no gradient pytree is stored and re-read by separate optimizer and
  statistics passes;
* histograms find each entry's bucket from its float32 bit pattern and count with one
  scatter-add (:func:`vgjax.diagnostics.bucket_histogram`); they are traced into the
  histogram epochs' steps only (:attr:`vgjax.engines.loop.Engine.hist_branches`);
* depth-aware blocks (:func:`vgjax.engines.in_depth_blocks`): a chunk's runs are sorted by
  depth inside the program and trained in consecutive blocks, so a depth-4 run never pays
  for layer 32.

Covered: SGD with or without momentum, without test-set gradients, activations in
:data:`WIDE_ACTIVATIONS` (what :mod:`vgjax.engines.fast` covers); other configs use the vmap engine.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vgjax.engines import fast
from vgjax.diagnostics import N_BUCKETS, bucket_histogram
from vgjax.engines.loop import (Engine, Setup, chunk_layers, chunk_start, merge_hist, runs_first,
                        train_loop)
from vgjax.model import N_FEATURES
from vgjax.engines.shuffle import epoch_batches

WIDE_ACTIVATIONS = fast.FAST_ACTIVATIONS


# Whether make_wide_train covers a config (else the vmap engine): what the fast engine covers.
supports = fast.supports


def bytes_per_run(config, max_depth: int, p: int, keep_params: bool = False
                  ) -> tuple[int, int]:
    """Rough device bytes of one run: (its outputs, its working set while it trains)."""
    n_layers, e = max_depth + 1, config.epochs
    h = config.epochs // config.hist_every if config.hist_every > 0 else 0
    outputs = 4 * e * (4 + 3 * n_layers) + 2 * 4 * h * n_layers * (N_BUCKETS + 4)
    outputs += 4 * max_depth * (p + 1) * p if keep_params else 0  # the final parameters
    # params, momentum, per-element init draws and weight-histogram indices ~ 6 words per
    # kernel entry; saved activations of a step; the evaluation pass over the data.
    working = 4 * 6 * max_depth * p * p + 4 * 2 * max_depth * config.batch_size * p
    working += 4 * 3 * config.n_samples * p + outputs
    return outputs, working


def _act_and_grad(name):
    """Activation and its derivative as a function of the activation value ``a`` alone (the
    backward pass keeps only each layer's input and output)."""
    if name == "tanh":
        return jnp.tanh, lambda a: 1.0 - a * a
    if name == "relu":  # relu(z) > 0 exactly when z > 0
        return (lambda z: jnp.maximum(z, 0.0)), (lambda a: (a > 0).astype(a.dtype))
    if name == "sigmoid":
        return jax.nn.sigmoid, lambda a: a * (1.0 - a)
    if name == "linear":
        return (lambda z: z), (lambda a: jnp.ones_like(a))
    raise ValueError(f"activation: {name!r} has no wide path; allowed: {WIDE_ACTIVATIONS}")


# ----------------------------------------------------------------------------------------
# one block of runs: params = (k0 [R, 2, P], b0 [R, P]), hidden (kh [D-1, R, P, P],
# bh [D-1, R, P]), output (ko [R, P], bo [R]); momentum traces of the same shapes;
# activations [R, B, P].

def _first_layer(x, k0, b0):
    """x [R, B, 2] (or [1, N, 2] shared) -> pre-activation [R, B, P]: two broadcast FMAs."""
    return x[..., 0:1] * k0[:, None, 0, :] + x[..., 1:2] * k0[:, None, 1, :] + b0[:, None, :]


def _index(a, i):
    return jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False)


def _put(a, v, i):
    return jax.lax.dynamic_update_index_in_dim(a, v, i, 0)


def _forward(params, x, c, act, keep):
    """Logits [R, B], the last hidden activation [R, B, P], and (when ``keep``) every hidden
    layer's masked output stacked unit-major [D, R, P, B] for the backward pass (layer l's
    input is entry l-1, its output entry l).

    Only the block's own layers run: a loop up to its deepest run (``c["depth"]``, unbatched).
    """
    k0, b0, kh, bh, ko, bo = params
    unit = c["unit"][:, None, :]
    h = act(_first_layer(x, k0, b0)) * unit
    hs = None
    if keep:
        hs = _put(jnp.zeros((kh.shape[0] + 1,) + _t(h).shape, h.dtype), _t(h), 0)
    if kh.shape[0] > 0:
        def layer(l, carry):
            h, hs = carry
            a = act(jnp.einsum("rbp,rpq->rbq", h, _index(kh, l - 1))
                    + _index(bh, l - 1)[:, None, :]) * unit
            h = jnp.where(_index(c["mask"], l)[:, None, None], a, h)
            return h, (None if hs is None else _put(hs, _t(h), l))

        h, hs = jax.lax.fori_loop(1, c["depth"], layer, (h, hs))
    logits = jnp.einsum("rbp,rp->rb", h, ko) + bo[:, None]
    return logits, h, hs


def _t(a):
    """[R, B, P] <-> [R, P, B]."""
    return jnp.swapaxes(a, 1, 2)


def _row_sums(g):
    """[R, ...] -> sum |g| [R] and sum g^2 [R], reduced over one flat minor axis."""
    g = g.reshape(g.shape[0], -1)
    return jnp.sum(jnp.abs(g), axis=1), jnp.einsum("rk,rk->r", g, g)


class _Static(NamedTuple):
    """The step's static parts: activation, its derivative (of the output), momentum, D."""

    act: Callable
    dact: Callable
    momentum: float
    max_depth: int


def _sgd(w, g, m, lr, momentum):
    """optax.sgd: trace t = g + momentum t; w += -lr t. Returns (w, t)."""
    if momentum > 0:
        m = g + momentum * m
        g = m
    return w + (-lr) * g, m


def _record(l, g, mask, acc, hist_now: bool):
    """Layer ``l``'s gradient g [R, ...] statistics, written in place into the accumulator
    (|g| sums [L, R], norm sums [L, R], histogram [L, K, R] and [L, 4, R] or None). The
    histogram is counted when ``hist_now``, a Python bool: the loop traces a histogram
    epoch's steps apart (:attr:`vgjax.engines.loop.Engine.hist_branches`), so no step of another
    epoch carries a ``cond`` per layer (measured: that cond cost more than the histograms)."""
    sa, ss, gacc = acc
    a, q = _row_sums(g)
    sa, ss = _put(sa, _index(sa, l) + a, l), _put(ss, _index(ss, l) + jnp.sqrt(q), l)
    if gacc is not None and hist_now:
        r = g.shape[0]
        new = tuple(x.T for x in bucket_histogram(g.reshape(r, -1), mask.reshape(r, -1)))
        old = tuple(_index(x, l)[None] for x in gacc)
        merged = merge_hist(old, tuple(x[None] for x in new))
        gacc = tuple(_put(x, v[0], l) for x, v in zip(gacc, merged))
    return sa, ss, gacc


def _hidden_backward(st: _Static, dh, hs, params, moms, c, acc, hist_now):
    """Backward through hidden layers l = depth-1 ... 1 of the block, each layer's SGD update
    and statistics done while its gradient is hot. ``dh`` [R, P, B] and ``hs`` [D, R, P, B]
    are unit-major (see :func:`_step`). Returns (dh, kh, bh, mkh, mbh, acc)."""
    unit, ub, lr = c["unit"][:, :, None], c["unit_b"], c["lr"]

    def layer(i, carry):
        dh, stacks, pending, acc = carry
        # The previous layer's update is written first, so every read of the stacks
        # below depends on that write: XLA then updates them in place (a write that
        # is independent of some read makes it copy the whole stack each layer).
        stacks = tuple(_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1]))
        kh, bh, mkh, mbh = stacks
        l = c["depth"] - i
        m = _index(c["mask"], l)[:, None, None]
        k = _index(kh, l - 1)
        dz = jnp.where(m, dh, 0.0) * unit * st.dact(_index(hs, l))
        gk = jnp.einsum("rpb,rqb->rpq", _index(hs, l - 1), dz)
        gb = jnp.sum(dz, axis=2)
        dh = jnp.where(m, jnp.einsum("rpq,rqb->rpb", k, dz), dh)
        k, mk = _sgd(k, gk, _index(mkh, l - 1), lr[:, None, None], st.momentum)
        b, mb = _sgd(_index(bh, l - 1), gb, _index(mbh, l - 1), lr[:, None], st.momentum)
        pending = (k, b, mk, mb, l - 1)
        acc = _record(l, gk, ub[:, :, None] & ub[:, None, :] & m, acc, hist_now)
        return dh, stacks, pending, acc

    stacks = (params[2], params[3], moms[2], moms[3])
    first = c["depth"] - 2  # a no-op write of the first layer's own values
    pending = tuple(_index(a, first) for a in stacks) + (first,)
    dh, stacks, pending, acc = jax.lax.fori_loop(1, c["depth"], layer,
                                                 (dh, stacks, pending, acc))
    return (dh, *(_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1])), acc)


def _step(st: _Static, state, batch, c, acc, hist_now):
    """One SGD step of a block: forward, then backprop layer by layer with each layer's
    update and statistics (:func:`_record`) fused in. ``(state, acc) -> (state, acc)``.

    The forward pass is batch-major ([R, B, P]: ``h K`` is a plain matmul), the backward
    pass unit-major ([R, P, B]): its product ``K dz`` is then a plain matmul too, where
    ``dz K^T`` in the batch-major layout ran 4x slower on XLA:CPU at width 512 (1.06 vs
    0.26 ms per layer for 2 runs); the weight gradient costs the same either way."""
    (params, moms), (x, y, w) = state, batch
    k0, b0, kh, bh, ko, bo = params
    mk0, mb0, mkh, mbh, mko, mbo = moms
    unit, lr = c["unit"][:, :, None], c["lr"]                               # [R, P, 1]
    logits, hD, hs = _forward(params, x, c, st.act, keep=True)
    dlogit = (jax.nn.sigmoid(logits) - y) * (w / jnp.sum(w))[None, :]      # [R, B]
    g_ko = jnp.einsum("rbp,rb->rp", hD, dlogit)
    g_bo = jnp.sum(dlogit, axis=1)
    dh = ko[:, :, None] * dlogit[:, None, :]                                # [R, P, B]
    ko, mko = _sgd(ko, g_ko, mko, lr[:, None], st.momentum)
    bo, mbo = _sgd(bo, g_bo, mbo, lr, st.momentum)
    if st.max_depth > 1:
        dh, kh, bh, mkh, mbh, acc = _hidden_backward(st, dh, hs, params, moms, c, acc,
                                                     hist_now)
    dz0 = dh * unit * st.dact(hs[0])                                         # [R, P, B]
    g_k0 = jnp.einsum("rbi,rqb->riq", x, dz0)                               # [R, 2, P]
    g_b0 = jnp.sum(dz0, axis=2)
    k0, mk0 = _sgd(k0, g_k0, mk0, lr[:, None, None], st.momentum)
    b0, mb0 = _sgd(b0, g_b0, mb0, lr[:, None], st.momentum)
    r = g_k0.shape[0]
    acc = _record(0, g_k0.reshape(r, -1), c["mask0"].reshape(r, -1), acc, hist_now)
    acc = _record(st.max_depth, g_ko, c["omask"], acc, hist_now)
    return ((k0, b0, kh, bh, ko, bo), (mk0, mb0, mkh, mbh, mko, mbo)), acc


def _weight_hist(p, params, c):
    """Counts [L, K, R] and stats [L, 4, R] of every layer's kernel: one histogram call, the
    first and output kernels zero-padded (masked) to the hidden layers' P*P entries."""
    k0, _, kh, _, ko, _ = params
    r, ub = ko.shape[0], c["unit_b"]
    flat = lambda a, m: (jnp.pad(a.reshape(r, -1), ((0, 0), (0, p * p - a[0].size)))[None],
                         jnp.pad(m.reshape(r, -1), ((0, 0), (0, p * p - a[0].size)))[None])
    vals, masks = zip(flat(k0, c["mask0"]), flat(ko, c["omask"]))
    if kh.shape[0] > 0:
        hmask = ub[None, :, :, None] & ub[None, :, None, :] & c["mask"][1:, :, None, None]
        vals = (vals[0], kh.reshape(kh.shape[0], r, -1), vals[1])
        masks = (masks[0], hmask.reshape(kh.shape[0], r, -1), masks[1])
    # vmapped over layers (not flattened into [L*R, ...], which would mix the unsharded
    # layer axis into the sharded run axis and cost a cross-device exchange)
    counts, stats = jax.vmap(bucket_histogram)(jnp.concatenate(vals),
                                               jnp.concatenate(masks))
    return jnp.moveaxis(counts, 1, -1), jnp.moveaxis(stats, 1, -1)


def _evaluate(act, state, c):
    """Curves [4, R] (train/test loss, train/test accuracy) and weight L1 [L, R]."""
    params = state[0]
    logits, _, _ = _forward(params, c["xall"][None], c, act, keep=False)   # [R, N+M]
    y = c["yall"][None]
    ce = fast._bce(logits, y)
    hit = ((logits > 0).astype(jnp.float32) == y).astype(jnp.float32)
    nt = c["n_train"]
    curves = jnp.stack((jnp.mean(ce[:, :nt], 1), jnp.mean(ce[:, nt:], 1),
                        jnp.mean(hit[:, :nt], 1), jnp.mean(hit[:, nt:], 1)))
    k0, _, kh, _, ko, _ = params
    return curves, jnp.concatenate([jnp.abs(k0).sum((1, 2))[None], jnp.abs(kh).sum((2, 3)),
                                    jnp.abs(ko).sum(1)[None]])               # [L, R]


def _params(p, state):
    """The block's parameters in the padded layout, run axis last (kernels [D, P, P, R])."""
    k0, b0, kh, bh, ko, bo = state[0]
    k0 = jnp.pad(k0, ((0, 0), (0, p - k0.shape[1]), (0, 0)))[None]          # [1, R, P, P]
    return {"kernels": jnp.moveaxis(jnp.concatenate([k0, kh]), 1, -1),
            "biases": jnp.moveaxis(jnp.concatenate([b0[None], bh]), 1, -1),
            "out_kernel": ko.T, "out_bias": bo}


def _minibatches(config, c, e):
    """The epoch's shuffled minibatches: x [S, R, B, 2], y [S, R, B], weights [S, B]."""
    idx, w = epoch_batches(c["shuffle_keys"], e, config.n_train, config.batch_size)
    return jnp.moveaxis(c["xtr"][idx], 1, 0), jnp.moveaxis(c["ytr"][idx], 1, 0), w


def _init(config, max_depth: int, p: int, spec, data) -> Setup:
    """A block's initial (params, momentum) in the layer-stacked, runs-leading layout and
    its constants."""
    D, P, r = max_depth, p, spec.depth.shape[0]
    p0, shuffle_keys = chunk_start(config, D, P, spec)
    kern = jnp.moveaxis(p0["kernels"], 1, 0)                                # [D, R, P, P]
    bias = jnp.moveaxis(p0["biases"], 1, 0)                                 # [D, R, P]
    params = (kern[0, :, :N_FEATURES], bias[0], kern[1:], bias[1:],
              p0["out_kernel"], p0["out_bias"])
    mask = jnp.arange(D)[:, None] < spec.depth[None, :]                     # [D, R]
    unit_b = jnp.arange(P)[None, :] < spec.width[:, None]                   # [R, P]
    counts, present = chunk_layers(spec, D)                                 # [L, R] each
    c = dict(xtr=data.x_train, ytr=data.y_train,
             xall=jnp.concatenate([data.x_train, data.x_test]),
             yall=jnp.concatenate([data.y_train, data.y_test]),
             n_train=data.x_train.shape[0],
             shuffle_keys=shuffle_keys,
             mask=mask, unit=unit_b.astype(jnp.float32), unit_b=unit_b, lr=spec.lr,
             mask0=jnp.broadcast_to(unit_b[:, None, :], (r, N_FEATURES, P)),
             omask=unit_b,
             # the block's deepest run bounds its layer loops; computed once per block,
             # so no per-step cross-device reduction when the run axis is sharded
             depth=jnp.max(spec.depth))
    return Setup((params, jax.tree.map(jnp.zeros_like, params)), c, counts, present)


def wide_engine(config, max_depth: int, p: int) -> Engine:
    """The wide engine's kernels over one block of runs (see the module doc)."""
    if not supports(config):
        raise ValueError(f"config: the wide engine covers SGD without test_gradients and "
                         f"activations {WIDE_ACTIVATIONS}; got {config.optimizer}, "
                         f"{config.activation}, test_gradients={config.test_gradients}")
    act, dact = _act_and_grad(config.activation)
    st = _Static(act, dact, config.momentum, max_depth)
    return Engine(init=functools.partial(_init, config, max_depth, p),
                  minibatches=functools.partial(_minibatches, config),
                  step=functools.partial(_step, st),
                  evaluate=functools.partial(_evaluate, act),
                  weight_hist=lambda state, c: _weight_hist(p, state[0], c),
                  params=functools.partial(_params, p), hist_branches=True)


def make_wide_train(config, max_depth: int, p: int, *, keep_params: bool = False):
    """Build ``train(spec, data) -> dict`` for a block of runs (``spec`` fields [R]):
    :func:`vgjax.engines.loop.train_loop` with :func:`wide_engine`'s kernels, run axis first.

    Returns the same dict, shapes and dtypes as ``jax.vmap(vgjax.engines.reference.make_train(config,
    max_depth, p, keep_params=...), in_axes=(0, None))``; its layer loops run up to the
    block's deepest run (:func:`vgjax.engines.in_depth_blocks` trains a chunk in blocks).
    """
    engine = wide_engine(config, max_depth, p)

    def train(spec, data):
        return runs_first(train_loop(engine, config, spec, data, keep_params=keep_params))

    return train
