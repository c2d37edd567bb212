"""The reference engine: one run as a pure function of (run spec, data), Keras ``fit``
semantics in JAX.

``make_train(config, max_depth, p)`` returns ``train_run(spec, data) -> history`` for one run;
:mod:`vgjax.run.chunks` vmaps it over the run axis. It is the ONE training loop of
:mod:`vgjax.engines.loop` with :func:`reference_engine`'s kernels: the methods of
:class:`vgjax.step.Step`, so an epoch is a ``lax.scan`` over ``Step.train_step``; per-epoch
statistics are reduced in the scan carry, so no per-step array is ever stored.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vgjax import diagnostics as diag
from vgjax import probes
from vgjax.config import Config
from vgjax.engines.loop import PARAM_KEYS, DeviceData, RunSpec
from vgjax.engines.loop import (Engine, Memory, Setup, grads_step, history_bytes, run_keys,
                                spec_arch, train_loop)
from vgjax.model import Features, kernel_mask
from vgjax.result import SIGNAL_JAC, SIGNAL_LAYER_STATS
from vgjax.engines.shuffle import batches
from vgjax.step import Batch, Step, bce, make_step


def memory(config: Config, max_depth: int, p: int) -> Memory:
    """Rough device bytes of one run on the reference engine (and the fast engine, whose
    working set is of the same order): the activations of the evaluation pass over the
    whole data set dominate the working set."""
    outputs = history_bytes(config, max_depth, p)
    working = 4 * config.n_samples * p * (max_depth + 2) * 3
    working += 4 * max_depth * p * p * 8 + 4 * (max_depth + 1) * p * p * diag.N_BUCKETS
    return Memory(outputs, outputs + working)


def bce_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean binary cross-entropy computed on logits ([B] each) -> scalar.

    Keras averages over the examples of a batch; padded examples have weight 0.
    """
    return (bce(logits, labels) * weights).sum() / weights.sum()


def batch_indices(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """One epoch's shuffled minibatches, padded to a fixed shape.

    Returns idx [S, B] int32 and weights [S, B] float32 with S = ceil(n / B); the last
    batch keeps the remainder (Keras keeps the final partial batch) and its padding has
    weight 0, so every run takes S optimizer steps per epoch.
    """
    return batches(jax.random.permutation(key, n), batch_size)


# History names of the signal probe (``Config.probes`` has "signal"); shapes in vgjax.result.
SIGNAL_LAYER_KEYS, SIGNAL_JAC_KEYS = SIGNAL_LAYER_STATS, SIGNAL_JAC


def signal_layer_stats(config: Config, params, x: jax.Array, depth, width) -> jax.Array:
    """[3, D] q^l, saturated share and dead share of the padded hidden stack of ``params``
    on the points ``x`` [N, F] (rows in :data:`SIGNAL_LAYER_KEYS` order; NaN for layers >=
    depth). One forward pass under ``lax.scan`` (:func:`vgjax.probes.layer_probes`)."""
    p = probes.layer_probes((params["kernels"], params["biases"]), x, config.activation,
                            depth=depth, width=width)
    return jnp.stack([p["q"], p["saturation"], p["dead"]])


def signal_jacobian(config: Config, params, x: jax.Array, depth, width
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The input-output Jacobian's (mean σ² [], max σ [], log10 σ counts [K] int32) over the
    points ``x`` [N, F] (:func:`vgjax.probes.jacobian_probes`, buckets
    :data:`vgjax.probes.LOG_SIGMA_EDGES`)."""
    j = probes.jacobian_probes((params["kernels"], params["biases"]), x, config.activation,
                               depth=depth, width=width, n_in=x.shape[-1])
    return j["jac_mean_sq"], j["jac_max"], j["jac_log_hist"]


def chunk_probes(config: Config, axis: int) -> tuple:
    """The signal-probe kernels of a chunk engine, from its runs' parameters in the padded
    dict layout with the run axis at ``axis`` of every leaf: ``signal(params, x, depth [R],
    width [R]) -> [3, D, R]`` (:func:`signal_layer_stats` of each run) and ``jacobian(...)
    -> (mean σ² [R], max σ [R], log10 σ counts [K, R])`` (:func:`signal_jacobian`), run
    axis last as :mod:`vgjax.engines.loop` keeps it."""
    def signal(params, x, depth, width):
        out = jax.vmap(lambda p, d, w: signal_layer_stats(config, p, x, d, w),
                       in_axes=(axis, 0, 0))(params, depth, width)
        return jnp.moveaxis(out, 0, -1)

    def jacobian(params, x, depth, width):
        m, mx, counts = jax.vmap(lambda p, d, w: signal_jacobian(config, p, x, d, w),
                                 in_axes=(axis, 0, 0))(params, depth, width)
        return m, mx, counts.T

    return signal, jacobian


class ReferenceContext(NamedTuple):
    """One run's constants: its data (:class:`DeviceData`), shuffle key, kernel masks
    (hidden [D, P, P], output; :func:`vgjax.model.kernel_mask`) and real kernel entries per
    layer counts [L]."""

    data: DeviceData
    shuffle_key: jax.Array
    masks: tuple
    counts: jax.Array


def reference_engine(config: Config, max_depth: int, p: int, step: Step | None = None,
                     features: Features | None = None) -> Engine:
    """The reference engine's kernels for ONE run (vmap the loop over runs): the
    :class:`vgjax.step.Step` methods on the padded (D, P) stack. ``step`` defaults to
    ``make_step(config, max_depth=max_depth, p=p, features=features)`` (``features``: the
    architectures the runs may have, default the config's; each run's own from its spec,
    :func:`vgjax.engines.loop.spec_arch`)."""
    step = step or make_step(config, max_depth=max_depth, p=p, features=features)
    dims = dict(max_depth=max_depth, n_features=step.n_features, n_outputs=step.n_outputs)

    def init(spec: RunSpec, data: DeviceData) -> Setup:
        init_key, shuffle_key = run_keys(jax.random.wrap_key_data(spec.key))
        state = step.init(init_key, spec.depth, spec.width, lr=spec.lr,
                          weight_var=spec.weight_var, bias_var=spec.bias_var,
                          arch=None if step.features.plain else spec_arch(spec, config))
        masks = kernel_mask(spec.depth, spec.width, p=p, **dims)
        counts = diag.real_counts(spec.depth, spec.width, **dims)
        ctx = ReferenceContext(data, shuffle_key, masks, counts)
        return Setup(state, ctx, counts, diag.layer_present(spec.depth, max_depth=max_depth))

    def minibatches(ctx, epoch):
        return batch_indices(jax.random.fold_in(ctx.shuffle_key, epoch), config.n_train,
                             config.batch_size)

    def train_step(state, batch, ctx):
        (idx, weight), data = batch, ctx.data
        state, out = step.train_step(state, Batch(data.x_train[idx], data.y_train[idx], weight))
        return state, out.grads

    def evaluate(state, ctx):
        d, run = ctx.data, (state.depth, state.width, state.batch_stats, state.arch)
        train_loss, train_acc = step.evaluate(state.params, d.x_train, d.y_train, *run)
        test_loss, test_acc = step.evaluate(state.params, d.x_test, d.y_test, *run)
        return (jnp.stack([train_loss, test_loss, train_acc, test_acc]),
                diag.abs_sums(state.params))

    def test_grads(state, ctx):
        d, n_test = ctx.data, ctx.data.y_test.shape[0]
        _, tg = step.loss_and_grads(
            state.params, Batch(d.x_test, d.y_test, jnp.ones((n_test,), jnp.float32)),
            state.depth, state.width, state.arch)
        return jnp.stack([diag.abs_sums(tg) / jnp.maximum(ctx.counts, 1.0),
                          diag.l2_norms(tg)])

    probe = lambda fn: lambda state, ctx: fn(config, state.params, ctx.data.x_train,
                                             state.depth, state.width)
    probing = "signal" in config.probes
    return Engine(
        init=init, minibatches=minibatches,
        step=grads_step(train_step, lambda g, ctx: (diag.abs_sums(g), diag.l2_norms(g)),
                        lambda g, ctx: diag.histogram(g, *ctx.masks)),
        evaluate=evaluate,
        weight_hist=lambda state, ctx: diag.histogram(state.params, *ctx.masks),
        params=lambda state: arch_params(state.params, state.batch_stats),
        test_grads=test_grads if config.test_gradients else None,
        signal=probe(signal_layer_stats) if probing else None,
        jacobian=probe(signal_jacobian) if probing else None)


def arch_params(params, batch_stats) -> dict:
    """The final parameters an engine returns (:data:`vgjax.engines.loop.PARAM_KEYS`, and
    the :data:`~vgjax.engines.loop.ARCH_PARAM_KEYS` that exist) from the padded dict and
    BatchNorm's running averages (None: none), whatever leading axes they have."""
    out = {k: params[k] for k in PARAM_KEYS}
    out |= {k: params[k] for k in ("res_alpha", "norm_scale", "norm_offset") if k in params}
    if batch_stats is not None:
        out |= {"batch_mean": batch_stats["mean"], "batch_var": batch_stats["var"]}
    return out


def make_train(config: Config, max_depth: int, p: int, *, step: Step | None = None,
               keep_params: bool = False, features: Features | None = None):
    """Build ``train_run(spec, data) -> dict`` for one run of a grid padded to (D, P).

    The returned dict holds train_loss/test_loss/train_accuracy/test_accuracy [E],
    grad_mean_abs/grad_norm/weight_l1 [E, L], diverged_epoch [] int32 (1-based, -1 never),
    and, when ``config.hist_every > 0``, grad_hist/weight_hist [H, L, K] int32 and
    grad_hist_stats/weight_hist_stats [H, L, 4]; with ``config.test_gradients``
    test_grad_mean_abs/test_grad_norm [E, L]; with ``keep_params`` the final parameters as
    ``param_kernels`` [D, P, P], ``param_biases`` [D, P], ``param_out_kernel``,
    ``param_out_bias``. With ``"signal" in config.probes``, on the training set:
    signal_q/signal_saturation/signal_dead [E, D] at each epoch's end and ``..._init`` [D]
    before training; signal_jac_mean_sq/signal_jac_max [H] and signal_jac_log_hist [H, K]
    at histogram epochs and ``..._init`` ([], [], [K]) before training. Statistics of absent
    layers and of epochs from the one that diverged on are NaN. It is
    :func:`vgjax.engines.loop.train_loop` with :func:`reference_engine`.
    """
    engine = reference_engine(config, max_depth, p, step, features)
    return functools.partial(train_loop, engine, config, keep_params=keep_params)
