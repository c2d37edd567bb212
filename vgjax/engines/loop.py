"""THE training loop of vgjax, written once for every engine.

``train_loop(engine, config, spec, data)`` trains a chunk of runs: a ``lax.scan`` over
epochs, each a ``lax.scan`` over the epoch's minibatch steps with the per-layer gradient
sums (and, on histogram epochs, the gradient histogram) reduced in the carry; then the
evaluation on the full train and test sets, the weight statistics, the histogram buffers,
and at the end the divergence masking (:func:`finish`). Histogram epochs share the one
compiled epoch body: their extra work sits in ``lax.cond`` on the (unbatched) epoch number.

An engine (:class:`Engine`) supplies only what is its own, as kernels over the whole chunk
in its own parameter layout: the reference engine (:mod:`vgjax.engines.reference`: the
:class:`vgjax.step.Step` methods, one run, vmapped over the chunk), the fast CPU engine
(:mod:`vgjax.engines.fast`: runs-last arrays, hand-written backprop) and the wide engine
(:mod:`vgjax.engines.wide`: batched matmuls over a leading run axis). Every array the loop itself
touches keeps the run axis LAST: per-layer statistics [L, R], curves [4, R], histograms
[L, K, R]; for the reference engine, which is one run vmapped, the run axis is absent ([L],
[4], [L, K]). :func:`runs_first` turns a chunk's history into the run-leading layout of
:mod:`vgjax.run.chunks`. ``L = D + 1`` layers: index ``i < D`` is hidden layer ``i + 1``,
index ``D`` the output layer.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vgjax import diagnostics as diag
from vgjax import probes
from vgjax.config import Config
from vgjax.model import N_FEATURES, Arch, arch_of, init_params
from vgjax.result import INIT_SUFFIX, SIGNAL_JAC, SIGNAL_LAYER_STATS

# Final parameters, when kept, come back under these history-style keys ([R, ...] each).
PARAM_KEYS = ("kernels", "biases", "out_kernel", "out_bias")
PARAM_PREFIX = "param_"
# ... and those of residual / normalised runs where the program has them: ReZero's alphas
# [R, D], the normalisation's scale and offset [R, D, P], BatchNorm's running averages
# [R, D, P] (vgjax.model.init_architecture, init_batch_stats).
ARCH_PARAM_KEYS = ("res_alpha", "norm_scale", "norm_offset", "batch_mean", "batch_var")


class RunSpec(NamedTuple):
    """What distinguishes one run of a grid. Each field is a scalar per run ([R] when stacked).

    key: the run's PRNG key data (uint32 [2], from ``jax.random.key_data(PRNGKey(seed))``);
    depth, width: int32; lr, weight_var (sigma_w^2), bias_var (sigma_b^2): float32;
    residual (int32), alpha (float32), norm (int32): the run's architecture
    (:class:`vgjax.model.Arch`; None: the config's, see :func:`spec_arch`).
    """

    key: jax.Array
    depth: jax.Array
    width: jax.Array
    lr: jax.Array
    weight_var: jax.Array | float = 1.0
    bias_var: jax.Array | float = 0.0
    residual: jax.Array | None = None
    alpha: jax.Array | None = None
    norm: jax.Array | None = None


def spec_arch(spec: RunSpec, config: Config) -> Arch:
    """The runs' architecture (:class:`vgjax.model.Arch`, fields shaped like
    ``spec.depth``): the spec's per-run values, or the config's where it has none."""
    if spec.residual is None:
        return jax.tree.map(lambda a: jnp.broadcast_to(a, jnp.shape(spec.depth)),
                            arch_of(config.residual, config.norm))
    return Arch(jnp.asarray(spec.residual, jnp.int32), jnp.asarray(spec.alpha, jnp.float32),
                jnp.asarray(spec.norm, jnp.int32))


class DeviceData(NamedTuple):
    """Data on device: x_train [N, F], y_train [N], x_test [M, F], y_test [M] (float32)."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


class Setup(NamedTuple):
    """An engine's start: ``state`` (parameters and optimizer state, engine layout), ``ctx``
    (the chunk's constants its kernels read: data, keys, masks), ``counts`` [L, ...] float32
    (real kernel entries per layer, 0 if absent) and ``present`` [L, ...] bool (the run has
    the layer)."""

    state: Any
    ctx: Any
    counts: jax.Array
    present: jax.Array


class Acc(NamedTuple):
    """An epoch's step accumulator: the kernel gradients' |g| sums [L, ...] and L2 norm sums
    [L, ...], and on histogram epochs their histogram (counts [L, K, ...], stats [L, 4, ...];
    None where the config records no histograms)."""

    abs_sums: jax.Array
    norm_sums: jax.Array
    hist: tuple | None


class Engine(NamedTuple):
    """The kernels of one engine, each over a whole chunk (or one run, vmapped).

    - init: ``(spec, data) -> Setup``.
    - minibatches: ``(ctx, epoch) -> xs``, the epoch's shuffled minibatches (leading axis S).
    - step: ``(state, batch, ctx, acc, hist_now) -> (state, acc)``: one optimizer step on one
      minibatch, adding its kernel gradients' |g| sums and L2 norms [L, ...] to ``acc`` and,
      where ``hist_now``, their histogram (:func:`merge_hist`); :func:`grads_step` builds it
      from ``loss_and_grads`` + update kernels.
    - evaluate: ``(state, ctx) -> (curves [4, ...], weight_l1 [L, ...])``; curves are train
      loss, test loss, train accuracy, test accuracy on the full sets.
    - weight_hist: ``(state, ctx) -> (counts [L, K, ...] int32, stats [L, 4, ...])``.
    - params: ``state -> {"kernels": [D, P, P, ...], "biases", "out_kernel", "out_bias"}``.
    - test_grads: optional ``(state, ctx) -> [2, L, ...]`` mean |g| and norm on the test set.
    - signal, jacobian: optional signal-probe kernels ``(state, ctx) -> [3, D, ...]`` and
      ``-> (mean σ² [...], max σ [...], log10 σ counts [K', ...])``.
    - evaluate_signal: optional ``(state, ctx) -> (curves, weight_l1, signal)``: evaluate and
      the per-layer signal probe from one forward pass, used at every epoch's end in place
      of evaluate and signal (signal is then used at initialisation only).
    - hist_branches: ``step`` takes ``hist_now`` as a Python bool, and the loop traces the
      epoch's steps twice (with and without the gradient histogram) under one ``cond`` per
      epoch; otherwise ``hist_now`` is a traced bool and ``step`` branches on it itself.
      Worth it where a branch inside the step is costly (the wide engine's per-layer
      histograms); it doubles the step's share of the program.
    """

    init: Callable
    minibatches: Callable
    step: Callable
    evaluate: Callable
    weight_hist: Callable
    params: Callable
    test_grads: Callable | None = None
    signal: Callable | None = None
    jacobian: Callable | None = None
    hist_branches: bool = False
    evaluate_signal: Callable | None = None


class HistBuffers(NamedTuple):
    """The histogram epochs' outputs, preallocated [H, ...]: the kernel gradients' and the
    kernels' histograms (counts [H, L, K, ...] int32, stats [H, L, 4, ...]) and, with the
    signal probe, the Jacobian's summary (mean σ² [H, ...], max σ [H, ...], log10 σ counts
    [H, K', ...] int32; None without it). One histogram epoch's values have the same
    structure without the leading H."""

    grad_counts: jax.Array
    grad_stats: jax.Array
    weight_counts: jax.Array
    weight_stats: jax.Array
    jac_mean_sq: jax.Array | None = None
    jac_max: jax.Array | None = None
    jac_counts: jax.Array | None = None


class EpochStats(NamedTuple):
    """Per-epoch outputs: curves [4, ...], layers [3, L, ...] (grad mean |g|, grad norm,
    weight L1), optional test-gradient stats [2, L, ...] and signal probes [3, D, ...]."""

    curves: jax.Array
    layers: jax.Array
    test_layers: jax.Array | None
    signal: jax.Array | None = None


class Memory(NamedTuple):
    """An engine's rough device bytes of one run: ``outputs`` (its history, kept while the
    chunk trains) and ``working`` (what it needs while it trains, outputs included)."""

    outputs: int
    working: int


def history_bytes(config: Config, max_depth: int, p: int, keep_params: bool = False) -> int:
    """Rough bytes of one run's history (:func:`train_loop`'s outputs): curves and per-layer
    statistics [E, ...], histograms [H, L, K], the signal probe's arrays and, with
    ``keep_params``, the final parameters."""
    n_layers, e = max_depth + 1, config.epochs
    h = config.epochs // config.hist_every if config.hist_every > 0 else 0
    outputs = 4 * e * (4 + 3 * n_layers * (2 if config.test_gradients else 1))
    outputs += 2 * 4 * h * n_layers * (diag.N_BUCKETS + 4)
    if config.probes:  # signal probe: [E, D] x 3 and the Jacobian's [H, K] counts
        outputs += 4 * (3 * (e + 1) * max_depth
                        + (h + 1) * (probes.LOG_SIGMA_EDGES.shape[0] + 1))
    outputs += 4 * max_depth * (p + 1) * p if keep_params else 0
    return outputs


def run_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One run's (init key, shuffle key) from its PRNG key: ``fold_in`` 0 and 1, the same in
    every engine, so a run's initial weights and minibatch order never depend on the engine
    or on the other runs of its grid."""
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def chunk_start(config: Config, max_depth: int, p: int, spec: RunSpec, *,
                n_features: int = N_FEATURES, n_outputs: int = 1) -> tuple[dict, jax.Array]:
    """What a chunk engine starts from, run axis LEADING: every run's initial parameters
    (:func:`vgjax.model.init_params`, padded to (D, P): kernels [R, D, P, P], biases [R, D, P],
    out_kernel [R, P] (or [R, P, C] for ``n_outputs = C > 1``), out_bias [R] (or [R, C]))
    and its shuffle keys [R] (:func:`run_keys`). ``n_features``: the data's input width F."""
    r = spec.depth.shape[0]
    init_keys, shuffle_keys = jax.vmap(run_keys)(jax.vmap(jax.random.wrap_key_data)(spec.key))
    per_run = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (r,))
    params = jax.vmap(lambda k, d, w, wv, bv: init_params(
        k, d, w, max_depth=max_depth, p=p, init=config.init,
        output_init=config.resolved_output_init, n_features=n_features, n_outputs=n_outputs,
        weight_var=wv, bias_var=bv, activation=config.activation))(
        init_keys, spec.depth, spec.width, per_run(spec.weight_var), per_run(spec.bias_var))
    return params, shuffle_keys


def chunk_layers(spec: RunSpec, max_depth: int, *, n_features: int = N_FEATURES,
                 n_outputs: int = 1) -> tuple[jax.Array, jax.Array]:
    """Real kernel entries per layer (counts [L, R] float32; 0 where absent) and whether each
    run has the layer (present [L, R] bool), run axis LAST: :func:`vgjax.diagnostics.real_counts`
    and :func:`~vgjax.diagnostics.layer_present` of every run (F inputs, ``n_outputs``
    logits)."""
    counts = jax.vmap(lambda d, w: diag.real_counts(
        d, w, max_depth=max_depth, n_features=n_features, n_outputs=n_outputs))(spec.depth,
                                                                              spec.width)
    present = jax.vmap(lambda d: diag.layer_present(d, max_depth=max_depth))(spec.depth)
    return counts.T, present.T


def grads_step(train_step: Callable, grad_sums: Callable, grad_hist: Callable) -> Callable:
    """:attr:`Engine.step` of an engine that materialises the gradient.

    ``train_step(state, batch, ctx) -> (state, grads)`` is loss_and_grads then the optimizer
    update; ``grad_sums(grads, ctx)`` gives the kernels' |g| sums and L2 norms ([L, ...]
    each) and ``grad_hist(grads, ctx)`` their histogram, counted on histogram epochs only.
    """
    def step(state, batch, ctx, acc, hist_now):
        state, grads = train_step(state, batch, ctx)
        abs_sums, norm_sums, ghist = acc
        a, n = grad_sums(grads, ctx)
        if ghist is not None:
            ghist = jax.lax.cond(hist_now, lambda h: merge_hist(h, grad_hist(grads, ctx)),
                                 lambda h: h, ghist)
        return state, Acc(abs_sums + a, norm_sums + n, ghist)
    return step


def init_optimizer(factory: Callable, lr: jax.Array, params, axis: int = 0):
    """Every run's optimizer state, stacked over runs on ``axis`` (0: leading, -1: last):
    ``factory(lr[r]).init`` of run r's parameters, as :meth:`vgjax.step.Step.init` makes it
    for one run (``params`` leaves carry the run axis at ``axis``, ``lr`` is [R])."""
    return jax.vmap(lambda lr, p: factory(lr).init(p), in_axes=(0, axis), out_axes=axis)(
        lr, params)


def apply_optimizer(factory: Callable, lr: jax.Array, params, grads, opt_state,
                    axis: int = 0):
    """One optimizer update of every run, vmapped over the run axis ``axis`` of every leaf:
    run r's ``factory(lr[r]).update(grads, state, params)`` then ``optax.apply_updates``,
    exactly as :meth:`vgjax.step.Step.apply_grads` does for one run, so any optax
    ``GradientTransformation`` sees the same per-run pytree as in the reference engine.
    Returns (params, opt_state)."""
    def one(lr, p, g, s):
        updates, s = factory(lr).update(g, s, p)
        return optax.apply_updates(p, updates), s
    return jax.vmap(one, in_axes=(0, axis, axis, axis), out_axes=axis)(
        lr, params, grads, opt_state)


def train_loop(engine: Engine, config: Config, spec: RunSpec, data: DeviceData, *,
               keep_params: bool = False) -> dict[str, jax.Array]:
    """Train ``spec``'s runs with ``engine``; the history dict, run axis last (or absent).

    Keys: train_loss/test_loss/train_accuracy/test_accuracy [E, ...], grad_mean_abs/
    grad_norm/weight_l1 [E, L, ...], diverged_epoch [...] int32 (1-based, -1 never); with
    ``config.hist_every > 0`` grad_hist/weight_hist [H, L, K, ...] int32 and their
    ``_stats`` [H, L, 4, ...]; with ``engine.test_grads`` test_grad_mean_abs/test_grad_norm
    [E, L, ...]; with ``engine.signal`` the signal probes (:mod:`vgjax.result` names) at
    each epoch's end and at initialisation; with ``keep_params`` ``param_*`` (the final
    parameters). Statistics of absent layers and of epochs from the one that diverged on
    are NaN (histograms: 0 counts).
    """
    setup = engine.init(spec, data)
    n_hist = config.epochs // config.hist_every if config.hist_every > 0 else 0
    bufs = None
    if n_hist > 0:
        bufs = jax.tree.map(lambda a: jnp.zeros((n_hist,) + a.shape, a.dtype),
                            _hist_parts(engine, setup.counts.shape))
    if engine.signal is not None:  # before the first step: the initialisation's signal
        init = (*engine.signal(setup.state, setup.ctx), *engine.jacobian(setup.state, setup.ctx))
    epoch = functools.partial(_epoch, engine, config, setup.ctx, setup.counts)
    epochs = jnp.arange(config.epochs, dtype=jnp.int32)
    (state, bufs), stats = jax.lax.scan(epoch, (setup.state, bufs), epochs)
    if config.hist_every > 0 and bufs is None:  # hist_every > epochs: no histogram epoch
        bufs = jax.tree.map(lambda a: jnp.zeros((0,) + a.shape, a.dtype),
                            _hist_parts(engine, setup.counts.shape))
    out = finish(config, stats, bufs, setup.present)
    if engine.signal is not None:
        out.update({k + INIT_SUFFIX: v for k, v in zip(SIGNAL_LAYER_STATS + SIGNAL_JAC, init)})
    if keep_params:
        out.update({PARAM_PREFIX + k: v for k, v in engine.params(state).items()})
    return out


def _epoch(engine: Engine, config: Config, ctx, counts, carry, epoch):
    """One epoch: the minibatch steps, then evaluation, statistics and histograms."""
    state, bufs = carry
    every = config.hist_every
    hist_now = (epoch + 1) % every == 0 if every > 0 else False
    acc = Acc(jnp.zeros_like(counts), jnp.zeros_like(counts),
              empty_hist(counts.shape) if bufs is not None else None)

    batches = engine.minibatches(ctx, epoch)

    def run_steps(hist):
        def one_step(carry, batch):
            state, acc = carry
            return engine.step(state, batch, ctx, acc, hist), None
        return jax.lax.scan(one_step, (state, acc), batches)[0]

    if not engine.hist_branches:
        state, (abs_sums, norm_sums, ghist) = run_steps(hist_now)
    elif bufs is not None:
        state, (abs_sums, norm_sums, ghist) = jax.lax.cond(
            hist_now, lambda: run_steps(True), lambda: run_steps(False))
    else:
        state, (abs_sums, norm_sums, ghist) = run_steps(False)
    if engine.evaluate_signal is not None:
        curves, weight_l1, signal = engine.evaluate_signal(state, ctx)
    else:
        curves, weight_l1 = engine.evaluate(state, ctx)
        signal = engine.signal(state, ctx) if engine.signal is not None else None
    steps = config.steps_per_epoch
    layers = jnp.stack([abs_sums / (steps * jnp.maximum(counts, 1.0)), norm_sums / steps,
                        weight_l1])
    test = engine.test_grads(state, ctx) if engine.test_grads is not None else None
    if bufs is not None:
        def store(bufs):
            # Preallocated [H, ...] buffers: nothing of size [E, L, K] is stacked.
            h = (epoch + 1) // every - 1
            jac = engine.jacobian(state, ctx) if engine.jacobian is not None else ()
            new = HistBuffers(*ghist, *engine.weight_hist(state, ctx), *jac)
            return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, h, 0),
                                bufs, new)
        bufs = jax.lax.cond(hist_now, store, lambda b: b, bufs)
    return (state, bufs), EpochStats(curves, layers, test, signal)


def finish(config: Config, stats: EpochStats, bufs: HistBuffers | None, present: jax.Array
           ) -> dict[str, jax.Array]:
    """The history dict from the stacked per-epoch stats and the histogram buffers.

    Divergence (:func:`vgjax.diagnostics.divergence`): the first epoch whose loss or
    statistics are not finite. From that epoch on, a run's statistics are masked to NaN
    (histogram counts to 0) instead of reporting garbage; so are absent layers.
    """
    every = config.hist_every
    diverged, valid = diag.divergence(stats.curves, stats.layers)      # [...], [E, ...]
    out: dict[str, jax.Array] = {}
    if every > 0:
        hist_ok = valid[every - 1::every][: config.epochs // every]      # [H, ...]
        keep = (hist_ok[:, None] & present[None])[:, :, None]           # [H, L, 1, ...]
        for name, counts, vstats in (("grad_hist", bufs.grad_counts, bufs.grad_stats),
                                     ("weight_hist", bufs.weight_counts, bufs.weight_stats)):
            out[name] = jnp.where(keep, counts, 0)
            out[name + "_stats"] = jnp.where(keep, vstats, jnp.nan)
    curves = jnp.where(valid[:, None], stats.curves, jnp.nan)
    layer_ok = valid[:, None] & present[None]                           # [E, L, ...]
    layers = jnp.where(layer_ok[:, None], stats.layers, jnp.nan)
    out.update(train_loss=curves[:, 0], test_loss=curves[:, 1],
               train_accuracy=curves[:, 2], test_accuracy=curves[:, 3],
               grad_mean_abs=layers[:, 0], grad_norm=layers[:, 1], weight_l1=layers[:, 2],
               diverged_epoch=diverged)
    if stats.test_layers is not None:
        t = jnp.where(layer_ok[:, None], stats.test_layers, jnp.nan)
        out.update(test_grad_mean_abs=t[:, 0], test_grad_norm=t[:, 1])
    if every > 0 and bufs.jac_counts is not None:  # a diverged epoch: NaN summary, no counts
        out.update(signal_jac_mean_sq=jnp.where(hist_ok, bufs.jac_mean_sq, jnp.nan),
                   signal_jac_max=jnp.where(hist_ok, bufs.jac_max, jnp.nan),
                   signal_jac_log_hist=jnp.where(hist_ok[:, None], bufs.jac_counts, 0))
    if stats.signal is not None:  # hidden layers only: the first D entries of the layer mask
        ok = valid[:, None] & present[None, :-1]
        sig = jnp.where(ok[:, None], stats.signal, jnp.nan)
        out.update({k: sig[:, i] for i, k in enumerate(SIGNAL_LAYER_STATS)})
    return out


def runs_first(history: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A chunk's history with the run axis moved from last to first ([R, ...] each)."""
    return {k: jnp.moveaxis(v, -1, 0) for k, v in history.items()}


def empty_hist(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Zero counts [L, K, ...] int32 and identity stats [L, 4, ...] (min +inf, max -inf, sums
    0) of histograms over layers and runs, ``shape = (L, ...)``."""
    lead, runs = shape[:1], shape[1:]
    ident = jnp.array([jnp.inf, -jnp.inf, 0.0, 0.0], jnp.float32).reshape((1, 4) + (1,) * len(runs))
    return (jnp.zeros(lead + (diag.N_BUCKETS,) + runs, jnp.int32),
            jnp.broadcast_to(ident, lead + (4,) + runs))


def merge_hist(acc, new):
    """Two histograms ``(counts [L, K, ...], stats [L, 4, ...])`` as one over both values."""
    (c0, s0), (c1, s1) = acc, new
    s = jnp.stack([jnp.minimum(s0[:, 0], s1[:, 0]), jnp.maximum(s0[:, 1], s1[:, 1]),
                   s0[:, 2] + s1[:, 2], s0[:, 3] + s1[:, 3]], axis=1)
    return c0 + c1, s


def _hist_parts(engine: Engine, shape: tuple[int, ...]) -> HistBuffers:
    """Placeholders of one histogram epoch's buffers: gradient and weight histograms, and
    with the signal probe the Jacobian's (mean σ², max σ, log10 σ counts)."""
    parts = empty_hist(shape) * 2
    if engine.jacobian is not None:
        runs, k = shape[1:], probes.LOG_SIGMA_EDGES.shape[0] - 1
        parts += (jnp.zeros(runs, jnp.float32), jnp.zeros(runs, jnp.float32),
                  jnp.zeros((k,) + runs, jnp.int32))
    return HistBuffers(*parts)
