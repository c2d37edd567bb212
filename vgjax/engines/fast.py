"""The fast CPU engine's kernels: a whole chunk of runs in a "runs-last" layout, backprop by
hand.

It trains under the one loop of :mod:`vgjax.engines.loop` (:func:`make_fast_train`); what is its
own is a drop-in ``loss_and_grads`` with Keras SGD or any optax optimizer applied to the
gradient pytree vmapped over runs (:func:`fast_engine`'s ``train_step``),
the per-layer sums, histograms and evaluation in its layout. It computes exactly what the
reference ``jax.vmap(vgjax.engines.reference.make_train(config, D, P))`` computes (same initial weights,
same shuffles, same optimizer, same per-epoch outputs; equal to float32 rounding, tested),
but is written for XLA:CPU, where a program of many tiny ops is slow:

* every array carries the run axis LAST ([..., R]), so each elementwise op vectorises over
  runs instead of over 5 units;
* [B, P] x [P, P] products are unrolled sums of P broadcast multiplies, and every small
  reduction (over the batch, over units) is an unrolled tree of adds: XLA:CPU's reduce
  emitter is slow for reductions over non-minor axes;
* the backward pass is written out by hand (no autodiff bookkeeping);
* each hidden layer sits in its own ``lax.cond``: a hard fusion boundary (otherwise XLA fuses
  the backward chain across layers and recomputes it) that also skips layers no run of the
  chunk has;
* shuffles (:mod:`vgjax.engines.shuffle`) use a single-operand sort of packed (key bits | index)
  words, bit-identical to ``jax.random.permutation`` but ~3x cheaper than its two-operand
  sort;
* evaluation is one forward pass over train and test points together.

The run axis is leading at the boundary, as in :mod:`vgjax.run.chunks`. Covered
(:func:`supports`): any optimizer, any elementwise activation (those off
:data:`FAST_ACTIVATIONS` differentiated by ``jax.grad``), the binary cross-entropy on
two-feature binary data; test-set gradients and other losses or data use the vmapped
reference engine. On XLA:CPU, turn
off YNNPACK fusions (``--xla_cpu_experimental_ynn_fusion_type=``), which are several times
slower than XLA's own loop fusions on these tiny tensors; the ``vgjax`` CLI does.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vgjax.diagnostics import INNER_EDGES, value_stats
from vgjax.engines.loop import (PARAM_KEYS, Engine, Setup, apply_optimizer, chunk_layers,
                                chunk_start, grads_step, init_optimizer, runs_first, train_loop)
from vgjax.engines.reference import chunk_probes
from vgjax.engines.shuffle import epoch_batches
from vgjax.model import activation_fn, kernel_mask
from vgjax.probes import SATURATION_THRESHOLD
from vgjax.step import bce, optimizer_factory
from vgjax.theory import derivative_fn

N_FEATURES = 2


# ----------------------------------------------------------------------------------------
# activations and their derivatives (expressed like JAX's own JVP rules, so results match)

def act_and_grad(activation):
    """Activation and its derivative as a function of (pre-activation z, activation a).
    For :data:`FAST_ACTIVATIONS` written as JAX's own JVP rules are, so results match the
    autodiff reference; for any other activation (a name of
    :data:`vgjax.config.ACTIVATIONS` or a callable) ``jax.grad`` of the scalar function
    (:func:`vgjax.theory.derivative_fn`), traced once."""
    if activation == "tanh":
        return jnp.tanh, lambda z, a: 1.0 - a * a
    if activation == "relu":
        return (lambda z: jnp.maximum(z, 0.0)), (lambda z, a: (z > 0).astype(z.dtype))
    if activation == "sigmoid":
        return jax.nn.sigmoid, lambda z, a: a * (1.0 - a)
    if activation == "linear":
        return (lambda z: z), (lambda z, a: jnp.ones_like(z))
    dphi = derivative_fn(activation)
    return activation_fn(activation), lambda z, a: dphi(z)


# Activations with a derivative written by hand (others: jax.grad of the scalar function).
FAST_ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")


def supports(config) -> bool:
    """Whether :func:`make_fast_train` (and the wide engine) cover ``config`` (else the vmap
    engine): any optimizer (named, an optax ``GradientTransformation`` or a factory) and
    any elementwise activation (named or a callable), with the default binary cross-entropy
    on two-feature, two-class data and no test-set gradients."""
    from vgjax.data import data_dims
    return (not config.test_gradients and config.loss in (None, "bce")
            and data_dims(config) == (N_FEATURES, 2))


def fused_sgd(config) -> bool:
    """Whether the step applies Keras SGD itself (``optimizer="sgd"``); any other optimizer
    is applied by optax to the gradient pytree, vmapped over runs
    (:func:`vgjax.engines.loop.apply_optimizer`)."""
    return isinstance(config.optimizer, str) and config.optimizer == "sgd"


# ----------------------------------------------------------------------------------------
# the runs-last building blocks.  Shapes: K [D,P,P,R], b [D,P,R], ko [P,R], bo [R];
# activations [B, P, R]; first layer reads [B, 2, R] (or [N, 2, 1] for shared eval inputs).

def _tree_sum(xs):
    xs = list(xs)
    while len(xs) > 1:
        xs = [xs[i] + xs[i + 1] if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]
    return xs[0]


def _sum_axis(x, axis):
    """Sum over a small axis as unrolled elementwise adds (XLA:CPU's reduce emitter is slow
    for reductions over non-minor axes; an add chain becomes one vectorised loop fusion)."""
    return _tree_sum(jax.lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis]))


def _count_axis(x, axis):
    """Sum of 0/1 values over an axis (exact in float32 in any order, so no order to keep):
    a tree of strided halves, log2(n) ops instead of the n slices of :func:`_sum_axis`,
    which over the 500 evaluation points made up a large part of the program."""
    while x.shape[axis] > 1:
        n = x.shape[axis]
        half = (jax.lax.slice_in_dim(x, 0, n - 1, stride=2, axis=axis)
                + jax.lax.slice_in_dim(x, 1, n, stride=2, axis=axis))
        if n % 2:
            half = jnp.concatenate([half, jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)
        x = half
    return jax.lax.index_in_dim(x, 0, axis, keepdims=False)


def _dense(h, k, b):
    """h [B, I, R|1] x k [I, J, R] + b [J, R] -> [B, J, R], as an unrolled broadcast sum."""
    z = b[None]
    for i in range(h.shape[1]):
        z = z + h[:, i, None, :] * k[i][None]
    return z


def _dense_t(dz, k):
    """dz [B, J, R] x k[I, J, R]^T -> [B, I, R]."""
    return _tree_sum(dz[:, j, None, :] * k[None, :, j, :] for j in range(dz.shape[1]))


def _outer_sum(h, dz):
    """sum_b h[b,i,r] dz[b,j,r] -> [I, J, R]."""
    return _tree_sum(h[b, :, None, :] * dz[b, None, :, :] for b in range(h.shape[0]))


def forward(params, x, depth_mask, unit, act, need, keep=True, probe=None):
    """Forward pass over runs-last arrays.

    Args:
      params: (K [D, P, P, R], b [D, P, R], ko [P, R], bo [R]).
      x: [B, 2, R], or [N, 2, 1] for inputs shared by every run.
      depth_mask: [D, R] bool, layer l active for run r; unit: [P, R] float, unit < width.
      need: [D] bool, some run of the chunk has layer l (others are skipped outright).
      probe: None, or ``(φ, φ', rows)``: then each layer's signal-probe statistics over
        the first ``rows`` points are computed in the same pass (:func:`layer_signal`).
    Returns:
      logits [B, R], the last hidden activations [B, P, R], and what the backward pass
      needs: (x, a0, z0, [(h, a, z) per layer 1..D-1]) when ``keep``; with ``probe``
      instead the statistics [D, 3, R] (NaN for layers no run of the chunk has).
    """
    K, b, ko, bo = params
    D = K.shape[0]
    z0 = _dense(x, K[0, :N_FEATURES], b[0])  # layer 1 reads only the 2 real features
    a0 = act(z0) * unit[None]

    h, saved = a0, []
    stats = [] if probe is None else [layer_signal(probe, z0, unit)]

    def run(h, k, b, m):
        z = _dense(h, k, b)
        a = act(z) * unit[None]
        out = ((h, a, z) if keep else None) if probe is None else layer_signal(probe, z, unit)
        return jnp.where(m[None, None, :], a, h), out

    def skip(h, k, b, m):
        if probe is not None:
            return h, jnp.full((3,) + h.shape[2:], jnp.nan, h.dtype)
        return h, ((h, h, h) if keep else None)

    for l in range(1, D):
        # A cond per layer: a fusion boundary, and a skip when no run has the layer. The
        # layer's own parameters go in as operands, so every layer's branch is the same
        # computation and XLA compiles its kernels once, not once per layer.
        h, o = jax.lax.cond(need[l], run, skip, h, K[l], b[l], depth_mask[l])
        (saved if probe is None else stats).append(o)
    logits = _sum_axis(h * ko[None], 1) + bo[None]
    return logits, h, ((x, a0, z0, saved) if probe is None else jnp.stack(stats))


def layer_signal(probe, z, unit):
    """[3, R] q^l, saturated share and dead share of one layer's pre-activations z [B, P, R]
    over the first ``rows`` points of ``probe = (φ, φ', rows)`` and each run's real units
    (``unit`` [P, R]): the values of :func:`vgjax.probes.layer_probes` (per-unit means over
    the points, then the mean over the run's units), with this engine's reductions."""
    phi, dphi, rows = probe
    z = z[:rows]
    f32 = lambda v: v.astype(z.dtype)
    # the three sums over the points as one product with a ones vector: a single dot, where
    # reductions over the leading axis were slow and compiled slowly in every layer's branch
    sums = jnp.tensordot(jnp.ones((rows,), z.dtype), jnp.stack(
        [z * z, f32(jnp.abs(dphi(z)) < SATURATION_THRESHOLD), f32(phi(z) != 0)], axis=1),
        axes=(0, 0))                                                        # [3, P, R]
    per_unit = jnp.stack([sums[0] / rows, sums[1] / rows, f32(sums[2] == 0)])
    real = unit[None] > 0
    n = jnp.maximum(_sum_axis(unit, 0), 1.0)
    return _sum_axis(jnp.where(real, per_unit, 0.0), 1) / n[None]


def loss_and_grads(params, x, y, w, depth_mask, unit, act, dact, need):
    """Weighted-mean BCE and its gradient w.r.t. every parameter (hand-written backprop).

    x [B, 2, R], y [B, R], w [B] (shared by all runs). Returns (loss [R], grads tuple).
    """
    K, b, ko, bo = params
    D, P = K.shape[0], K.shape[1]
    logits, hD, (x0, a0, z0, ys) = forward(params, x, depth_mask, unit, act, need)
    wsum = jnp.sum(w)
    loss = _sum_axis(bce(logits, y) * w[:, None], 0) / wsum
    dlogit = (jax.nn.sigmoid(logits) - y) * (w / wsum)[:, None]        # [B, R]
    g_bo = _sum_axis(dlogit, 0)
    g_ko = _sum_axis(hD * dlogit[:, None, :], 0)                       # [P, R]
    dh = dlogit[:, None, :] * ko[None]                                 # [B, P, R]

    def back(dh, xs):
        k, m, h, a, z = xs
        active = m[None, None, :]
        dz = jnp.where(active, dh, 0.0) * unit[None] * dact(z, a)
        gb = _sum_axis(dz, 0)
        gk = _outer_sum(h, dz)
        dh = jnp.where(active, _dense_t(dz, k), dh)
        return dh, (gk, gb)

    outs = [None] * (D - 1)
    zeros = (jnp.zeros((P, P) + dh.shape[2:], dh.dtype), jnp.zeros((P,) + dh.shape[2:], dh.dtype))
    run = lambda dh, k, m, h, a, z: back(dh, (k, m, h, a, z))
    skip = lambda dh, k, m, h, a, z: (dh, zeros)
    for l in reversed(range(1, D)):
        h, a, z = ys[l - 1]
        dh, outs[l - 1] = jax.lax.cond(need[l], run, skip, dh, K[l], depth_mask[l], h, a, z)
    dz0 = dh * unit[None] * dact(z0, a0)
    gk0 = _outer_sum(x0, dz0)                                          # [2, P, R]
    gk0 = jnp.concatenate([gk0, jnp.zeros((P - N_FEATURES,) + gk0.shape[1:], gk0.dtype)])
    gb0 = _sum_axis(dz0, 0)
    if D > 1:
        gk, gb = (jnp.stack(t) for t in zip(*outs))
        gK, gB = jnp.concatenate([gk0[None], gk]), jnp.concatenate([gb0[None], gb])
    else:
        gK, gB = gk0[None], gb0[None]
    return loss, (gK, gB, g_ko, g_bo)


def layer_abs_sq(kern, ko):
    """[L, R] sum |k| and sum k^2 of each layer's kernel (hidden [D,P,P,R] + output [P,R])."""
    s2 = lambda x: _sum_axis(_sum_axis(x, 1), 1)
    a = jnp.concatenate([s2(jnp.abs(kern)), _sum_axis(jnp.abs(ko), 0)[None]])
    s = jnp.concatenate([s2(kern * kern), _sum_axis(ko * ko, 0)[None]])
    return a, s


def histogram(kern, ko, hmask, omask):
    """Counts [L, K, R] int32 and stats [L, 4, R] over the real kernel entries.

    Same buckets as vgjax.diagnostics.histogram (bucket = number of inner edges <= value),
    computed as counts of (value >= edge) per edge, differenced.
    """
    D, P = kern.shape[0], kern.shape[1]
    R = kern.shape[-1]
    vals = jnp.concatenate([kern.reshape(D, P * P, R),
                            jnp.pad(ko, ((0, P * P - P), (0, 0)))[None]])   # [L, E, R]
    mask = jnp.concatenate([hmask.reshape(D, P * P, R),
                            jnp.pad(omask, ((0, P * P - P), (0, 0)))[None]])
    mask = mask & ~jnp.isnan(vals)  # NaN is in no bucket, as in numpy.histogram
    edges = jnp.asarray(INNER_EDGES)
    # ge[l, k, r] = #{e real : v >= edge_k}
    ge = jnp.sum((vals[:, None] >= edges[None, :, None, None]) & mask[:, None],
                 axis=2, dtype=jnp.int32)                                    # [L, K-1, R]
    n = jnp.sum(mask, axis=1, dtype=jnp.int32)                               # [L, R]
    upper = jnp.concatenate([n[:, None], ge], axis=1)                        # [L, K, R]
    lower = jnp.concatenate([ge, jnp.zeros_like(n)[:, None]], axis=1)
    return upper - lower, value_stats(vals, mask)                           # [L, K|4, R]


# ----------------------------------------------------------------------------------------
# the engine's kernels for vgjax.engines.loop

class FastContext(NamedTuple):
    """A chunk's constants, run axis last: xtr [N, 2], ytr [N], xall [N+M, 2] and yall [N+M]
    (train then test points, evaluated in one pass), n_train (int), shuffle_keys [R],
    depth_mask [D, R], unit [P, R] float32 (unit < width), lr [R], hmask [D, P, P, R] and
    omask [P, R] (real kernel entries), need [D] (some run has layer l), run_depth and
    run_width [R] (each run's own, for the signal probe)."""

    xtr: jax.Array
    ytr: jax.Array
    xall: jax.Array
    yall: jax.Array
    n_train: int
    shuffle_keys: jax.Array
    depth_mask: jax.Array
    unit: jax.Array
    lr: jax.Array
    hmask: jax.Array
    omask: jax.Array
    need: jax.Array
    run_depth: jax.Array
    run_width: jax.Array


def fast_engine(config, max_depth: int, p: int) -> Engine:
    """The fast engine's kernels over a chunk of runs, run axis last (see the module doc)."""
    if not supports(config):
        raise ValueError(f"config: the fast engine covers two-feature binary data with the "
                         f"default loss and no test_gradients; got loss {config.loss!r}, "
                         f"test_gradients={config.test_gradients}")
    B, n = config.batch_size, config.n_train
    act, dact = act_and_grad(config.activation)
    factory = None if fused_sgd(config) else optimizer_factory(config)

    def minibatches(c, e):
        # the same shuffles as vgjax.engines.reference.batch_indices, for every run -> [S, B, R]
        idx, w = epoch_batches(c.shuffle_keys, e, n, B)
        idx = jnp.moveaxis(idx, 0, -1)                                     # [S, B, R]
        return jnp.moveaxis(c.xtr[idx], -1, -2), c.ytr[idx], w      # [S, B, 2, R], ...

    def train_step(state, batch, c):
        """loss_and_grads, then Keras SGD (optax.sgd's momentum trace) or the optax
        optimizer: ((params, momentum or optimizer state), g)."""
        (params, mom), (x, y, wb) = state, batch
        _, g = loss_and_grads(params, x, y, wb, c.depth_mask, c.unit, act, dact,
                              need=c.need)
        if factory is not None:  # the reference's per-run pytree, run axis last
            as_dict = lambda t: dict(zip(PARAM_KEYS, t))
            new, mom = apply_optimizer(factory, c.lr, as_dict(params), as_dict(g), mom,
                                       axis=-1)
            return (tuple(new[k] for k in PARAM_KEYS), mom), g
        if config.momentum > 0:
            mom = jax.tree.map(lambda m, gg: gg + config.momentum * m, mom, g)
            upd = mom
        else:
            upd = g
        return (jax.tree.map(lambda p_, u: p_ + (-c.lr) * u, params, upd), mom), g

    def grad_sums(g, c):
        a, s = layer_abs_sq(g[0], g[2])
        return a, jnp.sqrt(s)

    def evaluate(state, c, probe=None):
        (kern, _, ko, _), _ = state
        loss, acc, stats = _eval_split(state[0], c, act, probe)
        out = jnp.stack([loss[0], loss[1], acc[0], acc[1]]), layer_abs_sq(kern, ko)[0]
        if probe is None:
            return out
        own = jnp.arange(stats.shape[0])[:, None] < c.run_depth[None, :]     # [D, R]
        return (*out, jnp.moveaxis(jnp.where(own[:, None], stats, jnp.nan), 1, 0))

    probed = {}
    if "signal" in config.probes:
        # the per-layer probe of every epoch from the evaluation pass's training points; at
        # initialisation and on histogram epochs (the Jacobian) the reference's kernels on
        # the padded stack, which compile smaller than a second copy of the layer conds
        probe = (activation_fn(config.activation), derivative_fn(config.activation),
                 config.n_train)
        signal, jacobian = chunk_probes(config, axis=-1)
        on_stack = lambda fn: lambda state, c: fn(dict(zip(PARAM_KEYS, state[0])), c.xtr,
                                                  c.run_depth, c.run_width)
        probed = dict(evaluate_signal=functools.partial(evaluate, probe=probe),
                      signal=on_stack(signal), jacobian=on_stack(jacobian))
    return Engine(
        **probed,
        init=functools.partial(_init, config, max_depth, p), minibatches=minibatches,
        step=grads_step(train_step, grad_sums,
                        lambda g, c: histogram(g[0], g[2], c.hmask, c.omask)),
        evaluate=evaluate,
        weight_hist=lambda state, c: histogram(state[0][0], state[0][2], c.hmask, c.omask),
        params=lambda state: dict(zip(PARAM_KEYS, state[0])))


def make_fast_train(config, max_depth: int, p: int, *, keep_params: bool = False):
    """Build ``train(spec, data) -> dict`` for a whole chunk of runs (``spec`` fields [R]):
    :func:`vgjax.engines.loop.train_loop` with :func:`fast_engine`'s kernels.

    Returns the same dict, shapes and dtypes as
    ``jax.vmap(vgjax.engines.reference.make_train(config, max_depth, p, keep_params=...), in_axes=(0, None))``.
    """
    engine = fast_engine(config, max_depth, p)

    def train(spec, data):
        # Runs-last arrays broadcast per-run scalars ([R]) against [..., R] on purpose.
        with jax.numpy_rank_promotion("allow"):
            return runs_first(train_loop(engine, config, spec, data, keep_params=keep_params))

    return train


def _init(config, max_depth: int, p: int, spec, data) -> Setup:
    """Initial (params, momentum) in the runs-last layout, and the chunk's masks and data."""
    D, P = max_depth, p
    p0, shuffle_keys = chunk_start(config, D, P, spec)
    params = (jnp.moveaxis(p0["kernels"], 0, -1), jnp.moveaxis(p0["biases"], 0, -1),
              jnp.moveaxis(p0["out_kernel"], 0, -1), p0["out_bias"])
    depth_mask = jnp.arange(D)[:, None] < spec.depth[None, :]                 # [D, R]
    unit = (jnp.arange(P)[:, None] < spec.width[None, :]).astype(jnp.float32)  # [P, R]
    hmask, omask = jax.vmap(lambda d, w: kernel_mask(d, w, max_depth=D, p=P))(spec.depth,
                                                                             spec.width)
    counts, present = chunk_layers(spec, D)                                  # [L, R] each
    c = FastContext(
        xtr=data.x_train, ytr=data.y_train,
        xall=jnp.concatenate([data.x_train, data.x_test]),
        yall=jnp.concatenate([data.y_train, data.y_test]),
        n_train=data.x_train.shape[0], shuffle_keys=shuffle_keys,
        depth_mask=depth_mask, unit=unit,
        lr=jnp.broadcast_to(jnp.asarray(spec.lr, jnp.float32), spec.depth.shape),
        hmask=jnp.moveaxis(hmask, 0, -1), omask=omask.T,                # [D,P,P,R], [P,R]
        # layers some run needs: computed once, so no per-step cross-device
        # reduction feeds the per-layer conds when the run axis is sharded
        need=jnp.any(depth_mask, axis=1), run_depth=spec.depth, run_width=spec.width)
    if fused_sgd(config):
        opt = jax.tree.map(jnp.zeros_like, params)
    else:
        lr = jnp.broadcast_to(jnp.asarray(spec.lr, jnp.float32), spec.depth.shape)
        opt = init_optimizer(optimizer_factory(config), lr, dict(zip(PARAM_KEYS, params)),
                             axis=-1)
    return Setup((params, opt), c, counts, present)


def _eval_split(params, c, act, probe=None):
    """Loss and accuracy on train and test: one forward over the concatenated points (and
    with ``probe`` the signal probe's per-layer statistics [D, 3, R] of the training
    points, else None)."""
    xe = c.xall[:, :, None]
    logits, _, stats = forward(params, xe, c.depth_mask, c.unit, act, c.need,
                               keep=False, probe=probe)                      # [N+M, R]
    y = c.yall[:, None]
    ce = bce(logits, y)
    hit = ((logits > 0).astype(jnp.float32) == y).astype(jnp.float32)
    n = c.n_train
    m = ce.shape[0] - n
    loss = jnp.stack([jnp.mean(ce[:n], 0), jnp.mean(ce[n:], 0)])
    acc = jnp.stack([_count_axis(hit[:n], 0) / n, _count_axis(hit[n:], 0) / m])
    return loss, acc, (stats if probe is not None else None)
