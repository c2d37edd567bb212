"""The fast CPU engine: a whole grid of runs in a "runs-last" layout, backprop by hand.

Computes exactly what ``jax.vmap(vgjax.train.make_train(config, D, P))`` computes (same
initial weights, same shuffles, same Keras SGD, same per-epoch outputs; equal to float32
rounding, tested), but is written for XLA:CPU, where a program of many tiny ops is slow:

* every array carries the run axis LAST ([..., R]), so each elementwise op vectorises over
  runs instead of over 5 units;
* [B, P] x [P, P] products are unrolled sums of P broadcast multiplies, and every small
  reduction (over the batch, over units) is an unrolled tree of adds: XLA:CPU's reduce
  emitter is slow for reductions over non-minor axes;
* the backward pass is written out by hand (no autodiff bookkeeping);
* each hidden layer sits in its own ``lax.cond``: a hard fusion boundary (otherwise XLA fuses
  the backward chain across layers and recomputes it) that also skips layers no run of the
  chunk has;
* shuffles use a single-operand sort of packed (key bits | index) words, bit-identical to
  ``jax.random.permutation`` but ~3x cheaper than its two-operand sort;
* evaluation is one forward pass over train and test points together.

The run axis is leading at the boundary, as in :mod:`vgjax.sweep`. Covered: SGD (with or
without momentum) and the activations in :data:`FAST_ACTIVATIONS`; everything else (Adam,
test-set gradients, other activations) uses the vmapped reference engine. On XLA:CPU, turn
off YNNPACK fusions (``--xla_cpu_experimental_ynn_fusion_type=``), which are several times
slower than XLA's own loop fusions on these tiny tensors; the ``vgjax`` CLI does.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# The only vgjax imports: the Keras-faithful initialiser (run once, outside the hot loop) and
# the histogram edges. Everything in the epoch loop is below.
from vgjax.model import init_params
from vgjax.diagnostics import HIST_EDGES, N_BUCKETS, divergence

N_FEATURES = 2


# ----------------------------------------------------------------------------------------
# activations and their derivatives (expressed like JAX's own JVP rules, so results match)

def _act_and_grad(name):
    """Activation and its derivative as a function of (pre-activation z, activation a),
    written as JAX's own JVP rules are, so results match the autodiff reference."""
    if name == "tanh":
        return jnp.tanh, lambda z, a: 1.0 - a * a
    if name == "relu":
        return (lambda z: jnp.maximum(z, 0.0)), (lambda z, a: (z > 0).astype(z.dtype))
    if name == "sigmoid":
        return jax.nn.sigmoid, lambda z, a: a * (1.0 - a)
    if name == "linear":
        return (lambda z: z), (lambda z, a: jnp.ones_like(z))
    raise ValueError(f"activation: {name!r} has no fast path; allowed: {FAST_ACTIVATIONS}")


FAST_ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")


def supports(config) -> bool:
    """Whether :func:`make_fast_train` covers ``config`` (else use the vmap engine): named
    SGD, a named activation of :data:`FAST_ACTIVATIONS`, the default binary cross-entropy on
    two-feature, two-class data, no test-set gradients."""
    from vgjax.data import data_dims
    named = lambda v: isinstance(v, str)
    return (named(config.optimizer) and config.optimizer == "sgd" and not config.test_gradients
            and named(config.activation) and config.activation in FAST_ACTIVATIONS
            and config.loss in (None, "bce") and data_dims(config) == (N_FEATURES, 2))


def _log_sigmoid(x):
    return -jax.nn.softplus(-x)


def _bce(logits, labels):
    # optax.sigmoid_binary_cross_entropy
    return -labels * _log_sigmoid(logits) - (1.0 - labels) * _log_sigmoid(-logits)


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


def forward(params, x, depth_mask, unit, act, need, keep=True):
    """Forward pass over runs-last arrays.

    Args:
      params: (K [D, P, P, R], b [D, P, R], ko [P, R], bo [R]).
      x: [B, 2, R], or [N, 2, 1] for inputs shared by every run.
      depth_mask: [D, R] bool, layer l active for run r; unit: [P, R] float, unit < width.
      need: [D] bool, some run of the chunk has layer l (others are skipped outright).
    Returns:
      logits [B, R], the last hidden activations [B, P, R], and what the backward pass
      needs: (x, a0, z0, [(h, a, z) per layer 1..D-1]) when ``keep``.
    """
    K, b, ko, bo = params
    D = K.shape[0]
    z0 = _dense(x, K[0, :N_FEATURES], b[0])  # layer 1 reads only the 2 real features
    a0 = act(z0) * unit[None]

    h, saved = a0, []
    for l in range(1, D):
        def run(h, K, b, m, l=l):
            z = _dense(h, K[l], b[l])
            a = act(z) * unit[None]
            return jnp.where(m[None, None, :], a, h), ((h, a, z) if keep else None)

        def skip(h, K, b, m):
            return h, ((h, h, h) if keep else None)

        # A cond per layer: a fusion boundary, and a skip when no run has the layer.
        h, o = jax.lax.cond(need[l], run, skip, h, K, b, depth_mask[l])
        saved.append(o)
    logits = _sum_axis(h * ko[None], 1) + bo[None]
    return logits, h, (x, a0, z0, saved)


def loss_and_grads(params, x, y, w, depth_mask, unit, act, dact, need):
    """Weighted-mean BCE and its gradient w.r.t. every parameter (hand-written backprop).

    x [B, 2, R], y [B, R], w [B] (shared by all runs). Returns (loss [R], grads tuple).
    """
    K, b, ko, bo = params
    D, P = K.shape[0], K.shape[1]
    logits, hD, (x0, a0, z0, ys) = forward(params, x, depth_mask, unit, act, need)
    wsum = jnp.sum(w)
    loss = _sum_axis(_bce(logits, y) * w[:, None], 0) / wsum
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
    for l in reversed(range(1, D)):
        h, a, z = ys[l - 1]
        run = lambda dh, K, m, h, a, z, l=l: back(dh, (K[l], m, h, a, z))
        skip = lambda dh, K, m, h, a, z: (dh, zeros)
        dh, outs[l - 1] = jax.lax.cond(need[l], run, skip, dh, K, depth_mask[l], h, a, z)
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


_INNER_EDGES = np.asarray(HIST_EDGES[1:-1], np.float32)


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
    edges = jnp.asarray(_INNER_EDGES)
    # ge[l, k, r] = #{e real : v >= edge_k}
    ge = jnp.sum((vals[:, None] >= edges[None, :, None, None]) & mask[:, None],
                 axis=2, dtype=jnp.int32)                                    # [L, K-1, R]
    n = jnp.sum(mask, axis=1, dtype=jnp.int32)                               # [L, R]
    upper = jnp.concatenate([n[:, None], ge], axis=1)                        # [L, K, R]
    lower = jnp.concatenate([ge, jnp.zeros_like(n)[:, None]], axis=1)
    counts = upper - lower
    stats = jnp.stack([
        jnp.min(jnp.where(mask, vals, jnp.inf), axis=1),
        jnp.max(jnp.where(mask, vals, -jnp.inf), axis=1),
        jnp.sum(jnp.where(mask, vals, 0.0), axis=1),
        jnp.sum(jnp.where(mask, vals * vals, 0.0), axis=1),
    ], axis=1)                                                               # [L, 4, R]
    return counts, stats


def _empty_hist(n_layers, n_runs):
    """Counts [L, K, R] int32 zeros and stats [L, 4, R] (min=+inf, max=-inf, sums 0)."""
    stats = jnp.broadcast_to(jnp.array([jnp.inf, -jnp.inf, 0.0, 0.0], jnp.float32)[None, :, None],
                             (n_layers, 4, n_runs))
    return jnp.zeros((n_layers, N_BUCKETS, n_runs), jnp.int32), stats


def _merge_stats(a, b):
    return jnp.stack([jnp.minimum(a[:, 0], b[:, 0]), jnp.maximum(a[:, 1], b[:, 1]),
                      a[:, 2] + b[:, 2], a[:, 3] + b[:, 3]], axis=1)


# ----------------------------------------------------------------------------------------
# shuffles: bit-identical to jax.random.permutation(key, n) (one stable sort of 32-bit random
# keys, for n < 2**20), 5x cheaper on XLA:CPU: a single-operand sort of packed
# (top key bits | index) words instead of a two-operand key/value sort, then an exact
# fix-up of the (rare) neighbours whose top key bits tie.

def _random_sort_keys(key, n):
    _, sub = jax.random.split(key)            # as jax._src.random._shuffle (1 round, n < 2**20)
    return jax.random.bits(sub, (n,), jnp.uint32)


def permutations(keys, n):
    """[R, n] int32: row r equals jax.random.permutation(keys[r], n)."""
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    if rounds != 1 or n > (1 << 16):
        return jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    bits = jax.vmap(lambda k: _random_sort_keys(k, n))(keys)             # [R, n] uint32
    ib = max(1, int(np.ceil(np.log2(n))))
    hi_mask = jnp.uint32((0xFFFFFFFF >> ib) << ib)
    iota = jnp.arange(n, dtype=jnp.uint32)
    packed = jax.lax.sort((bits & hi_mask) | iota[None], dimension=1)     # stable by (hi, idx)
    idx = (packed & jnp.uint32((1 << ib) - 1)).astype(jnp.int32)
    hi = packed & hi_mask
    tie = jnp.any((hi[:, 1:] == hi[:, :-1]).reshape(-1))

    def fix(idx):
        # the order must be by (full key, index); only neighbours with equal top bits can be
        # out of order: odd-even transposition passes until nothing moves (exact).
        k = jnp.take_along_axis(bits, idx, axis=1)

        pos = jnp.arange(n)

        def shifted(x, d):  # x[:, p + d] (edge values repeated; never selected there)
            if d > 0:
                return jnp.concatenate([x[:, d:], x[:, -d:]], axis=1)
            return jnp.concatenate([x[:, :-d], x[:, :d]], axis=1)

        def one_pass(k, i, start):
            # pairs (p, p+1) with p - start even; elementwise, no scatter
            first = ((pos - start) % 2 == 0) & (pos + 1 < n) & (pos >= start)
            second = ((pos - start) % 2 == 1) & (pos >= start + 1)
            nk, ni = shifted(k, 1), shifted(i, 1)        # right neighbour
            pk, pi = shifted(k, -1), shifted(i, -1)      # left neighbour
            out_of_order_r = (nk < k) | ((nk == k) & (ni < i))   # for first elements
            out_of_order_l = (k < pk) | ((k == pk) & (i < pi))   # for second elements
            sw1 = first[None] & out_of_order_r
            sw2 = second[None] & out_of_order_l
            k2 = jnp.where(sw1, nk, jnp.where(sw2, pk, k))
            i2 = jnp.where(sw1, ni, jnp.where(sw2, pi, i))
            return k2, i2, jnp.any(sw1.reshape(-1))

        def body(c):
            k, i, _ = c
            k, i, s0 = one_pass(k, i, 0)
            k, i, s1 = one_pass(k, i, 1)
            return k, i, s0 | s1

        _, idx, _ = jax.lax.while_loop(lambda c: c[2], body, (k, idx, jnp.array(True)))
        return idx

    return jax.lax.cond(tie, fix, lambda i: i, idx)


# ----------------------------------------------------------------------------------------
# the whole training program

def make_fast_train(config, max_depth: int, p: int, *, keep_params: bool = False):
    """Build ``train(spec, data) -> dict`` for a whole chunk of runs (``spec`` fields [R]).

    Returns the same dict, shapes and dtypes as
    ``jax.vmap(vgjax.train.make_train(config, max_depth, p, keep_params=...), in_axes=(0, None))``.
    """
    if not supports(config):
        raise ValueError(f"config: the fast engine covers SGD without test_gradients and "
                         f"activations {FAST_ACTIVATIONS}; got {config.optimizer}, "
                         f"{config.activation}, test_gradients={config.test_gradients}")
    D, P = max_depth, p
    L = D + 1
    S, B = config.steps_per_epoch, config.batch_size
    n = config.n_train
    every = config.hist_every
    E = config.epochs
    act, dact = _act_and_grad(config.activation)

    def epoch_fn(state, e, c):
        """One epoch. state = (params, mom, hists); hists = (gacc, gbuf, wbuf) or None."""
        params, mom, hists = state
        # the same shuffles as vgjax.train.batch_indices, vmapped over runs -> [S, B, R]
        keys = jax.vmap(lambda k: jax.random.fold_in(k, e))(c["shuffle_keys"])
        perm = permutations(keys, n)                                       # [R, n]
        pad = S * B - n
        idx = jnp.pad(perm, ((0, 0), (0, pad))).reshape(-1, S, B)
        idx = jnp.moveaxis(idx, 0, -1)                                     # [S, B, R]
        w = (jnp.arange(S * B) < n).astype(jnp.float32).reshape(S, B)
        xb = jnp.moveaxis(c["xtr"][idx], -1, -2)                           # [S, B, 2, R]
        yb = c["ytr"][idx]                                                 # [S, B, R]
        R = idx.shape[-1]
        # Histogram epochs share this one compiled body: their extra work sits in conds
        # on the (unbatched) epoch number, so the program holds a single epoch.
        hist_now = ((e + 1) % every == 0) if every > 0 else False

        def step(carry, batch):
            params, mom, sa, ss, gacc = carry
            x, y, wb = batch
            _, g = loss_and_grads(params, x, y, wb, c["depth_mask"], c["unit"], act, dact,
                                  need=c["need"])
            if config.momentum > 0:
                mom = jax.tree.map(lambda m, gg: gg + config.momentum * m, mom, g)
                upd = mom
            else:
                upd = g
            params = jax.tree.map(lambda p_, u: p_ + (-c["lr"]) * u, params, upd)
            a, s = layer_abs_sq(g[0], g[2])
            sa, ss = sa + a, ss + jnp.sqrt(s)
            if gacc is not None:
                def add(h):
                    cnt, st = histogram(g[0], g[2], c["hmask"], c["omask"])
                    return h[0] + cnt, _merge_stats(h[1], st)
                gacc = jax.lax.cond(hist_now, add, lambda h: h, gacc)
            return (params, mom, sa, ss, gacc), None

        zero = jnp.zeros((L, R), jnp.float32)
        gacc0 = None if hists is None else _empty_hist(L, R)
        (params, mom, sa, ss, gacc), _ = jax.lax.scan(
            step, (params, mom, zero, zero, gacc0), (xb, yb, w))

        # one forward over train + test concatenated
        loss, acc = _eval_split(params, c, act)
        wl1, _ = layer_abs_sq(params[0], params[2])
        layers = jnp.stack([sa / (S * jnp.maximum(c["counts"], 1.0)), ss / S, wl1])  # [3, L, R]
        curves = jnp.stack([loss[0], loss[1], acc[0], acc[1]])                       # [4, R]
        if hists is not None:
            def store(bufs):
                gbuf, wbuf = bufs
                h = (e + 1) // every - 1
                wh = histogram(params[0], params[2], c["hmask"], c["omask"])
                put = lambda buf, v: jax.tree.map(
                    lambda bb, vv: jax.lax.dynamic_update_index_in_dim(bb, vv, h, 0), buf, v)
                return put(gbuf, gacc), put(wbuf, wh)
            hists = jax.lax.cond(hist_now, store, lambda bufs: bufs, hists)
        return (params, mom, hists), (curves, layers)

    def train(spec, data):
        # Runs-last arrays broadcast per-run scalars ([R]) against [..., R] on purpose.
        with jax.numpy_rank_promotion("allow"):
            return _train(spec, data)

    def _train(spec, data):
        R = spec.depth.shape[0]
        keys = jax.vmap(jax.random.wrap_key_data)(spec.key)
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        shuffle_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        p0 = jax.vmap(lambda k, d, wd, wv, bv: init_params(
            k, d, wd, max_depth=D, p=P, init=config.init,
            output_init=config.resolved_output_init, weight_var=wv, bias_var=bv))(
            init_keys, spec.depth, spec.width, *jnp.broadcast_arrays(
                jnp.asarray(spec.weight_var, jnp.float32) * jnp.ones((R,), jnp.float32),
                jnp.asarray(spec.bias_var, jnp.float32) * jnp.ones((R,), jnp.float32)))
        # runs-last parameter layout
        params = (jnp.moveaxis(p0["kernels"], 0, -1), jnp.moveaxis(p0["biases"], 0, -1),
                  jnp.moveaxis(p0["out_kernel"], 0, -1), p0["out_bias"])
        mom = jax.tree.map(jnp.zeros_like, params)
        layers_i = jnp.arange(D)
        depth_mask = layers_i[:, None] < spec.depth[None, :]                      # [D, R]
        unit = (jnp.arange(P)[:, None] < spec.width[None, :]).astype(jnp.float32)  # [P, R]
        fan_in = jnp.where(layers_i[:, None] == 0, N_FEATURES, spec.width[None, :])  # [D, R]
        i = jnp.arange(P)
        hmask = ((i[None, :, None, None] < fan_in[:, None, None, :])
                 & (i[None, None, :, None] < spec.width[None, None, None, :])
                 & depth_mask[:, None, None, :])                                  # [D,P,P,R]
        omask = i[:, None] < spec.width[None, :]
        counts = jnp.concatenate([jnp.where(depth_mask, fan_in * spec.width[None], 0),
                                  spec.width[None]]).astype(jnp.float32)         # [L, R]
        present = jnp.concatenate([depth_mask, jnp.ones((1, R), bool)])          # [L, R]
        c = dict(xtr=data.x_train, ytr=data.y_train,
                 xall=jnp.concatenate([data.x_train, data.x_test]),
                 yall=jnp.concatenate([data.y_train, data.y_test]),
                 n_train=data.x_train.shape[0], shuffle_keys=shuffle_keys,
                 depth_mask=depth_mask, unit=unit, lr=spec.lr, hmask=hmask, omask=omask,
                 counts=counts,
                 # layers some run needs: computed once, so no per-step cross-device
                 # reduction feeds the per-layer conds when the run axis is sharded
                 need=jnp.any(depth_mask, axis=1))
        epochs = jnp.arange(E, dtype=jnp.int32)
        out = {}
        n_hist = E // every if every > 0 else 0
        hists = None
        if n_hist > 0:
            buf = lambda: jax.tree.map(lambda a: jnp.zeros((n_hist,) + a.shape, a.dtype),
                                       _empty_hist(L, R))
            hists = (buf(), buf())
        (params, mom, hists), stats = jax.lax.scan(
            lambda s_, e: epoch_fn(s_, e, c), (params, mom, hists), epochs)
        if every > 0:
            gh, wh = hists if n_hist > 0 else (
                jax.tree.map(lambda a: jnp.zeros((0,) + a.shape, a.dtype), _empty_hist(L, R)),) * 2
        curves, layers = stats                    # [E, 4, R], [E, 3, L, R]
        diverged, valid = divergence(curves, layers)                              # [R], [E, R]
        curves = jnp.where(valid[:, None], curves, jnp.nan)
        layer_ok = valid[:, None, :] & present[None]                               # [E, L, R]
        layers = jnp.where(layer_ok[:, None], layers, jnp.nan)
        # back to run-leading layout
        curves = jnp.moveaxis(curves, -1, 0)      # [R, E, 4]
        layers = jnp.moveaxis(layers, -1, 0)      # [R, E, 3, L]
        if keep_params:
            out.update({"param_" + k: jnp.moveaxis(v, -1, 0) for k, v in
                        zip(("kernels", "biases", "out_kernel", "out_bias"), params)})
        out.update(train_loss=curves[..., 0], test_loss=curves[..., 1],
                   train_accuracy=curves[..., 2], test_accuracy=curves[..., 3],
                   grad_mean_abs=layers[:, :, 0], grad_norm=layers[:, :, 1],
                   weight_l1=layers[:, :, 2], diverged_epoch=diverged)
        if every > 0:
            hist_ok = valid[every - 1::every][: E // every]                        # [H, R]
            keep = hist_ok[:, None, :] & present[None]                             # [H, L, R]
            for name, (cnt, st) in (("grad_hist", gh), ("weight_hist", wh)):
                # cnt [H, L, K, R], st [H, L, 4, R]
                cnt = jnp.where(keep[:, :, None], cnt, 0)
                st = jnp.where(keep[:, :, None], st, jnp.nan)
                out[name] = jnp.moveaxis(cnt, -1, 0)
                out[name + "_stats"] = jnp.moveaxis(st, -1, 0)
        return out

    return train


def _eval_split(params, c, act):
    """Loss and accuracy on train and test: one forward over the concatenated points."""
    xe = c["xall"][:, :, None]
    logits, *_ = forward(params, xe, c["depth_mask"], c["unit"], act, c["need"], keep=False)                               # [N+M, R]
    y = c["yall"][:, None]
    ce = _bce(logits, y)
    hit = ((logits > 0).astype(jnp.float32) == y).astype(jnp.float32)
    n = c["n_train"]
    m = ce.shape[0] - n
    loss = jnp.stack([jnp.mean(ce[:n], 0), jnp.mean(ce[n:], 0)])
    acc = jnp.stack([_sum_axis(hit[:n], 0) / n, _sum_axis(hit[n:], 0) / m])
    return loss, acc
