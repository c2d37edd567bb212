"""The wide-net engine: a chunk of runs whose minibatch products stay batched matmuls.

Computes exactly what ``jax.vmap(vgjax.train.make_train(config, D, P))`` computes (same
initial weights, same shuffles, same Keras SGD, the same history dict with the same shapes;
equal to float32 rounding, tested) in the layout that matmul libraries like: the run axis
LEADING, so each layer's minibatch step is one batched product ``[R, B, P] x [R, P, P]``
(XLA:CPU's Eigen/YNNPACK dots; cuBLAS batched GEMM on a GPU). Where :mod:`vgjax.fast`
unrolls every product into ``P`` broadcast multiplies (fast at the tutorial's 5 units, but
its program and its work grow with ``P``), this program's size does not depend on ``P`` or
``D``:

* the hidden layers are a loop over a layer-stacked ``[D-1, R, P, P]`` kernel that runs
  up to the block's deepest run (an unbatched bound), so layers no run of the block has
  cost nothing;
* backprop is written out per layer, and each layer's optimizer update, |g| sum, norm and
  (on histogram epochs) gradient histogram are computed in the same loop iteration while
  the layer's ``[R, P, P]`` gradient is in cache, and written in place into the stacked
  parameters: no gradient pytree is stored and re-read by separate optimizer and
  statistics passes;
* histograms find each entry's bucket from its logarithm (checked against the two
  neighbouring edges, so it is exact) and count with one scatter-add: work ~ entries
  instead of entries x K for compare-and-count;
* depth-aware blocks: a chunk's runs are sorted by depth inside the program and trained in
  ``n_blocks`` consecutive blocks (a ``lax.map``), so a depth-4 run never pays for layer 32;
  outputs come back in the chunk's run order.

Covered: SGD with or without momentum, without test-set gradients, activations in
:data:`WIDE_ACTIVATIONS` (what :mod:`vgjax.fast` covers); other configs use the vmap engine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vgjax import fast
from vgjax.diagnostics import HIST_EDGES, N_BUCKETS, divergence
from vgjax.model import N_FEATURES, init_params

WIDE_ACTIVATIONS = fast.FAST_ACTIVATIONS
_INNER_EDGES = np.asarray(HIST_EDGES[1:-1], np.float32)


def supports(config) -> bool:
    """Whether :func:`make_wide_train` covers ``config`` (else use the vmap engine)."""
    return fast.supports(config)


def bytes_per_run(config, max_depth: int, p: int) -> tuple[int, int]:
    """Rough device bytes of one run: (its outputs, its working set while it trains)."""
    n_layers, e = max_depth + 1, config.epochs
    h = config.epochs // config.hist_every if config.hist_every > 0 else 0
    outputs = 4 * e * (4 + 3 * n_layers) + 2 * 4 * h * n_layers * (N_BUCKETS + 4)
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
# histograms: [R, E] values -> [R, K] counts, [R, 4] stats

def histogram(vals: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Counts [R, K] int32 and (min, max, sum, sum of squares) [R, 4] of the masked entries.

    Same buckets as :func:`vgjax.diagnostics.histogram` (bucket = number of inner edges
    <= value): a binary search per entry, then one scatter-add per run.
    """
    r, e = vals.shape
    idx = _bucket(vals)
    flat = (idx + N_BUCKETS * jnp.arange(r, dtype=idx.dtype)[:, None]).reshape(-1)
    counts = jnp.zeros((r * N_BUCKETS,), jnp.int32).at[flat].add(
        mask.reshape(-1).astype(jnp.int32), indices_are_sorted=False, mode="promise_in_bounds")
    stats = jnp.stack([
        jnp.min(jnp.where(mask, vals, jnp.inf), axis=1),
        jnp.max(jnp.where(mask, vals, -jnp.inf), axis=1),
        jnp.sum(jnp.where(mask, vals, 0.0), axis=1),
        jnp.sum(jnp.where(mask, vals * vals, 0.0), axis=1),
    ], axis=1)
    return counts.reshape(r, N_BUCKETS), stats


def _bucket(v: jax.Array) -> jax.Array:
    """Number of inner edges <= v (int32, same shape): the decade quarter from log10, then
    one exact comparison with each neighbouring edge, since the logarithm's rounding can
    put a value on an edge one bucket off (a binary search compiles to far more code)."""
    n_mag = (_INNER_EDGES.size // 2)                      # 52 magnitudes on each side
    a = jnp.abs(v)
    k = jnp.floor(4.0 * (jnp.log10(jnp.maximum(a, 1e-30)) + 10.0))
    below = jnp.minimum(jnp.clip(k, -1.0, n_mag).astype(jnp.int32) + 1, n_mag)  # #{M_j <= a}
    idx = jnp.clip(jnp.where(v >= 0, n_mag + below, n_mag - below), 0, 2 * n_mag)
    edges = jnp.asarray(_INNER_EDGES)
    idx = idx - ((idx > 0) & (edges[jnp.maximum(idx - 1, 0)] > v)).astype(jnp.int32)
    return idx + ((idx < 2 * n_mag) & (edges[jnp.minimum(idx, 2 * n_mag - 1)] <= v)).astype(jnp.int32)


def _merge(acc, new):
    (c0, s0), (c1, s1) = acc, new
    s = jnp.stack([jnp.minimum(s0[..., 0], s1[..., 0]), jnp.maximum(s0[..., 1], s1[..., 1]),
                   s0[..., 2] + s1[..., 2], s0[..., 3] + s1[..., 3]], axis=-1)
    return c0 + c1, s


def _empty_hist(shape):
    """Counts shape+[K] zeros and stats shape+[4] (min=+inf, max=-inf, sums 0)."""
    st = jnp.broadcast_to(jnp.array([jnp.inf, -jnp.inf, 0.0, 0.0], jnp.float32), shape + (4,))
    return jnp.zeros(shape + (N_BUCKETS,), jnp.int32), st


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
    """Logits [R, B], the last hidden activation, and (when ``keep``) every hidden layer's
    masked output stacked [D, R, B, P] (layer l's input is entry l-1, its output entry l).

    Only the block's own layers run: a loop up to its deepest run (``c["depth"]``, unbatched).
    """
    k0, b0, kh, bh, ko, bo = params
    unit = c["unit"][:, None, :]
    h = act(_first_layer(x, k0, b0)) * unit
    hs = None
    if keep:
        hs = _put(jnp.zeros((kh.shape[0] + 1,) + h.shape, h.dtype), h, 0)
    if kh.shape[0] > 0:
        def layer(l, carry):
            h, hs = carry
            a = act(jnp.einsum("rbp,rpq->rbq", h, _index(kh, l - 1))
                    + _index(bh, l - 1)[:, None, :]) * unit
            h = jnp.where(_index(c["mask"], l)[:, None, None], a, h)
            return h, (None if hs is None else _put(hs, h, l))

        h, hs = jax.lax.fori_loop(1, c["depth"], layer, (h, hs))
    logits = jnp.einsum("rbp,rp->rb", h, ko) + bo[:, None]
    return logits, h, hs


def _row_sums(g):
    """[R, ...] -> sum |g| [R] and sum g^2 [R], reduced over one flat minor axis."""
    g = g.reshape(g.shape[0], -1)
    return jnp.sum(jnp.abs(g), axis=1), jnp.einsum("rk,rk->r", g, g)


def make_wide_train(config, max_depth: int, p: int, n_blocks: int = 1, constrain=None):
    """Build ``train(spec, data) -> dict`` for a chunk of runs (``spec`` fields [R]).

    Returns the same dict, shapes and dtypes as
    ``jax.vmap(vgjax.train.make_train(config, max_depth, p), in_axes=(0, None))``.
    ``n_blocks`` (dividing R): the chunk's runs, sorted by depth, are trained in that many
    consecutive blocks, each computing only the layers its runs have. ``constrain(x, axis)``,
    if given, pins the run axis ``axis`` of ``x`` to the device mesh (see :mod:`vgjax.sweep`).
    """
    if not supports(config):
        raise ValueError(f"config: the wide engine covers SGD without test_gradients and "
                         f"activations {WIDE_ACTIVATIONS}; got {config.optimizer}, "
                         f"{config.activation}, test_gradients={config.test_gradients}")
    D, P, L = max_depth, p, max_depth + 1
    S, B, n, E = config.steps_per_epoch, config.batch_size, config.n_train, config.epochs
    every, mom = config.hist_every, config.momentum
    act, dact = _act_and_grad(config.activation)
    n_hist = E // every if every > 0 else 0
    pin = constrain or (lambda x, axis: x)

    def sgd(w, g, m, lr):
        """optax.sgd: trace t = g + momentum t; w += -lr t. Returns (w, t)."""
        if mom > 0:
            m = g + mom * m
            g = m
        return w + (-lr) * g, m

    def step(params, moms, x, y, w, c, hist_now, acc):
        """One SGD step. ``acc`` = (|g| sums [L, R], norm sums [L, R], gradient histogram
        counts [L, R, K] and stats [L, R, 4] or None) gains this step's statistics."""
        k0, b0, kh, bh, ko, bo = params
        mk0, mb0, mkh, mbh, mko, mbo = moms
        sa, ss, gacc = acc
        unit = c["unit"][:, None, :]
        lr = c["lr"]
        logits, hD, hs = _forward(params, x, c, act, keep=True)
        wsum = jnp.sum(w)
        dlogit = (jax.nn.sigmoid(logits) - y) * (w / wsum)[None, :]           # [R, B]
        g_ko = jnp.einsum("rbp,rb->rp", hD, dlogit)
        g_bo = jnp.sum(dlogit, axis=1)
        dh = dlogit[:, :, None] * ko[:, None, :]
        ko, mko = sgd(ko, g_ko, mko, lr[:, None])
        bo, mbo = sgd(bo, g_bo, mbo, lr)

        def record(l, g, mask, sa, ss, gacc):
            # this layer's statistics, written in place into the accumulators
            a, q = _row_sums(g)
            sa, ss = _put(sa, _index(sa, l) + a, l), _put(ss, _index(ss, l) + jnp.sqrt(q), l)
            if gacc is not None:
                r = g.shape[0]
                new = jax.lax.cond(hist_now, lambda: histogram(g.reshape(r, -1), mask.reshape(r, -1)),
                                   lambda: _empty_hist((r,)))
                old = (_index(gacc[0], l), _index(gacc[1], l))
                merged = _merge(old, new)
                gacc = (_put(gacc[0], merged[0], l), _put(gacc[1], merged[1], l))
            return sa, ss, gacc

        if D > 1:
            ub = c["unit_b"]

            def layer(i, carry):
                # backward through hidden layer l = depth-1 ... 1, with its SGD update and
                # statistics done while its gradient is hot
                dh, stacks, pending, sa, ss, gacc = carry
                # The previous layer's update is written first, so every read of the stacks
                # below depends on that write: XLA then updates them in place (a write that
                # is independent of some read makes it copy the whole stack each layer).
                stacks = tuple(_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1]))
                kh, bh, mkh, mbh = stacks
                l = c["depth"] - i
                m = _index(c["mask"], l)[:, None, None]
                k = _index(kh, l - 1)
                dz = jnp.where(m, dh, 0.0) * unit * dact(_index(hs, l))
                gk = jnp.einsum("rbp,rbq->rpq", _index(hs, l - 1), dz)
                gb = jnp.sum(dz, axis=1)
                dh = jnp.where(m, jnp.einsum("rbq,rpq->rbp", dz, k), dh)
                k, mk = sgd(k, gk, _index(mkh, l - 1), lr[:, None, None])
                b, mb = sgd(_index(bh, l - 1), gb, _index(mbh, l - 1), lr[:, None])
                pending = (k, b, mk, mb, l - 1)
                hmask = ub[:, :, None] & ub[:, None, :] & m
                sa, ss, gacc = record(l, gk, hmask, sa, ss, gacc)
                return dh, stacks, pending, sa, ss, gacc

            stacks = (kh, bh, mkh, mbh)
            first = c["depth"] - 2  # a no-op write of the first layer's own values
            pending = tuple(_index(a, first) for a in stacks) + (first,)
            dh, stacks, pending, sa, ss, gacc = jax.lax.fori_loop(
                1, c["depth"], layer, (dh, stacks, pending, sa, ss, gacc))
            kh, bh, mkh, mbh = (_put(a, v, pending[-1]) for a, v in zip(stacks, pending[:-1]))
        dz0 = dh * unit * dact(hs[0])
        g_k0 = jnp.einsum("rbi,rbq->riq", x, dz0)                             # [R, 2, P]
        g_b0 = jnp.sum(dz0, axis=1)
        k0, mk0 = sgd(k0, g_k0, mk0, lr[:, None, None])
        b0, mb0 = sgd(b0, g_b0, mb0, lr[:, None])
        sa, ss, gacc = record(0, g_k0.reshape(g_k0.shape[0], -1),
                              c["mask0"].reshape(g_k0.shape[0], -1), sa, ss, gacc)
        sa, ss, gacc = record(D, g_ko, c["omask"], sa, ss, gacc)
        return (k0, b0, kh, bh, ko, bo), (mk0, mb0, mkh, mbh, mko, mbo), (sa, ss, gacc)

    def weight_hist(params, c):
        # one histogram call over every layer, the first and output kernels zero-padded
        # (masked) to the hidden layers' P*P entries: one copy of the code to compile
        k0, _, kh, _, ko, _ = params
        r = ko.shape[0]
        ub = c["unit_b"]
        flat = lambda a, m: (jnp.pad(a.reshape(r, -1), ((0, 0), (0, P * P - a[0].size)))[None],
                             jnp.pad(m.reshape(r, -1), ((0, 0), (0, P * P - a[0].size)))[None])
        vals, masks = zip(flat(k0, c["mask0"]), flat(ko, c["omask"]))
        if kh.shape[0] > 0:
            hmask = ub[None, :, :, None] & ub[None, :, None, :] & c["mask"][1:, :, None, None]
            vals = (vals[0], kh.reshape(D - 1, r, -1), vals[1])
            masks = (masks[0], hmask.reshape(D - 1, r, -1), masks[1])
        # vmapped over layers (not flattened into [L*R, ...], which would mix the unsharded
        # layer axis into the sharded run axis and cost a cross-device exchange)
        return jax.vmap(histogram)(jnp.concatenate(vals), jnp.concatenate(masks))  # [L, R, K|4]

    def layer_abs(params):
        k0, _, kh, _, ko, _ = params
        return jnp.concatenate([jnp.abs(k0).sum((1, 2))[None], jnp.abs(kh).sum((2, 3)),
                                jnp.abs(ko).sum(1)[None]])                    # [L, R]

    def evaluate(params, c):
        logits, _, _ = _forward(params, c["xall"][None], c, act, keep=False)  # [R, N+M]
        y = c["yall"][None]
        ce = fast._bce(logits, y)
        hit = ((logits > 0).astype(jnp.float32) == y).astype(jnp.float32)
        nt = c["n_train"]
        return (jnp.mean(ce[:, :nt], 1), jnp.mean(ce[:, nt:], 1),
                jnp.mean(hit[:, :nt], 1), jnp.mean(hit[:, nt:], 1))

    def epoch_fn(state, e, c):
        params, moms, hists = state
        keys = jax.vmap(lambda k: jax.random.fold_in(k, e))(c["shuffle_keys"])
        perm = fast.permutations(keys, n)                                    # [R, n]
        idx = jnp.pad(perm, ((0, 0), (0, S * B - n))).reshape(-1, S, B)     # [R, S, B]
        xb = jnp.moveaxis(c["xtr"][idx], 1, 0)                               # [S, R, B, 2]
        yb = jnp.moveaxis(c["ytr"][idx], 1, 0)                               # [S, R, B]
        wb = (jnp.arange(S * B) < n).astype(jnp.float32).reshape(S, B)
        r = idx.shape[0]
        hist_now = ((e + 1) % every == 0) if every > 0 else False

        def body(carry, batch):
            params, moms, acc = carry
            return step(params, moms, *batch, c, hist_now, acc), None

        zero = jnp.zeros((L, r), jnp.float32)
        gacc0 = None if hists is None else _empty_hist((L, r))
        (params, moms, (sa, ss, gacc)), _ = jax.lax.scan(
            body, (params, moms, (zero, zero, gacc0)), (xb, yb, wb))
        curves = jnp.stack(evaluate(params, c))                             # [4, R]
        layers = jnp.stack([sa / (S * jnp.maximum(c["counts"], 1.0)), ss / S,
                            layer_abs(params)])                              # [3, L, R]
        if hists is not None:
            def store(bufs):
                h = (e + 1) // every - 1
                put = lambda buf, v: jax.tree.map(
                    lambda bb, vv: jax.lax.dynamic_update_index_in_dim(bb, vv, h, 0), buf, v)
                return put(bufs[0], gacc), put(bufs[1], weight_hist(params, c))
            hists = jax.lax.cond(hist_now, store, lambda b: b, hists)
        return (params, moms, hists), (curves, layers)

    def train_block(spec, data):
        r = spec.depth.shape[0]
        keys = jax.vmap(jax.random.wrap_key_data)(spec.key)
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        p0 = jax.vmap(lambda k, d, wd, wv, bv: init_params(
            k, d, wd, max_depth=D, p=P, init=config.init,
            output_init=config.resolved_output_init, weight_var=wv, bias_var=bv))(
            init_keys, spec.depth, spec.width,
            jnp.broadcast_to(jnp.asarray(spec.weight_var, jnp.float32), (r,)),
            jnp.broadcast_to(jnp.asarray(spec.bias_var, jnp.float32), (r,)))
        kern = jnp.moveaxis(p0["kernels"], 1, 0)                            # [D, R, P, P]
        bias = jnp.moveaxis(p0["biases"], 1, 0)                             # [D, R, P]
        params = (kern[0, :, :N_FEATURES], bias[0], kern[1:], bias[1:],
                  p0["out_kernel"], p0["out_bias"])
        moms = jax.tree.map(jnp.zeros_like, params)
        mask = jnp.arange(D)[:, None] < spec.depth[None, :]                 # [D, R]
        unit_b = jnp.arange(P)[None, :] < spec.width[:, None]               # [R, P]
        counts = jnp.concatenate([
            jnp.where(mask, jnp.where(jnp.arange(D)[:, None] == 0, N_FEATURES, spec.width[None])
                      * spec.width[None], 0), spec.width[None]]).astype(jnp.float32)  # [L, R]
        c = dict(xtr=data.x_train, ytr=data.y_train,
                 xall=jnp.concatenate([data.x_train, data.x_test]),
                 yall=jnp.concatenate([data.y_train, data.y_test]),
                 n_train=data.x_train.shape[0],
                 shuffle_keys=jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys),
                 mask=mask, unit=unit_b.astype(jnp.float32), unit_b=unit_b, lr=spec.lr,
                 mask0=jnp.broadcast_to(unit_b[:, None, :], (r, N_FEATURES, P)),
                 omask=unit_b, counts=counts,
                 # the block's deepest run bounds its layer loops; computed once per block,
                 # so no per-step cross-device reduction when the run axis is sharded
                 depth=jnp.max(spec.depth))
        hists = None
        if n_hist > 0:
            buf = lambda: jax.tree.map(lambda a: jnp.zeros((n_hist,) + a.shape, a.dtype),
                                       _empty_hist((L, r)))
            hists = (buf(), buf())
        epochs = jnp.arange(E, dtype=jnp.int32)
        (_, _, hists), (curves, layers) = jax.lax.scan(
            lambda s_, e: epoch_fn(s_, e, c), (params, moms, hists), epochs)
        present = jnp.concatenate([mask, jnp.ones((1, r), bool)])            # [L, R]
        return _finish(curves, layers, hists, present, every, E, L, r)

    def train(spec, data):
        r = spec.depth.shape[0]
        if n_blocks == 1:
            return train_block(spec, data)
        if r % n_blocks:
            raise ValueError(f"n_blocks: {n_blocks} does not divide the chunk's {r} runs")
        # Depth-aware blocks: sort the chunk's runs by depth (stable), train block after
        # block, and put the outputs back into the chunk's order.
        order = jnp.argsort(spec.depth, stable=True)
        blocks = jax.tree.map(lambda a: pin(a[order].reshape((n_blocks, r // n_blocks)
                                                             + a.shape[1:]), 1), spec)
        out = jax.lax.map(lambda s: train_block(s, data), blocks)
        inverse = jnp.argsort(order)
        return jax.tree.map(lambda a: pin(a.reshape((r,) + a.shape[2:])[inverse], 0), out)

    return train


def _finish(curves, layers, hists, present, every, E, L, r):
    """Divergence masking and the run-leading output dict (as vgjax.train's)."""
    diverged, valid = divergence(curves, layers)                                  # [R], [E, R]
    curves = jnp.where(valid[:, None], curves, jnp.nan)
    layers = jnp.where((valid[:, None, :] & present[None])[:, None], layers, jnp.nan)
    curves = jnp.moveaxis(curves, -1, 0)                                           # [R, E, 4]
    layers = jnp.moveaxis(layers, -1, 0)                                           # [R, E, 3, L]
    out = dict(train_loss=curves[..., 0], test_loss=curves[..., 1],
               train_accuracy=curves[..., 2], test_accuracy=curves[..., 3],
               grad_mean_abs=layers[:, :, 0], grad_norm=layers[:, :, 1],
               weight_l1=layers[:, :, 2], diverged_epoch=diverged)
    if every > 0:
        n_hist = E // every
        if hists is None:
            empty = _empty_hist((0, L, r))
            hists = (empty, empty)
        keep = valid[every - 1::every][:n_hist][:, None, :] & present[None]       # [H, L, R]
        for name, (cnt, st) in zip(("grad_hist", "weight_hist"), hists):
            # cnt [H, L, R, K], st [H, L, R, 4] -> [R, H, L, K], [R, H, L, 4]
            cnt = jnp.where(keep[..., None], cnt, 0)
            st = jnp.where(keep[..., None], st, jnp.nan)
            out[name] = jnp.moveaxis(cnt, 2, 0)
            out[name + "_stats"] = jnp.moveaxis(st, 2, 0)
    return out
