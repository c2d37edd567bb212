"""Training one run as a pure function of (run spec, data): Keras ``fit`` semantics in JAX.

``make_train(config, max_depth, p)`` returns ``train_run(spec, data) -> history`` for one run;
:mod:`vgjax.sweep` vmaps it over the run axis. Training is a ``lax.scan`` over epochs, each a
``lax.scan`` over the ONE train step of :mod:`vgjax.step` (``Step.train_step``); per-epoch
statistics are reduced in the scan carry, so no per-step array is ever stored.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vgjax import diagnostics as diag
from vgjax import probes
from vgjax.config import Config, hist_epochs  # noqa: F401 - hist_epochs: old import path
from vgjax.model import kernel_mask
from vgjax.result import INIT_SUFFIX, SIGNAL_JAC, SIGNAL_LAYER_STATS
from vgjax.step import Batch, Step, bce, make_step

# Final parameters, when kept, come back under these history-style keys ([R, ...] each).
PARAM_KEYS = ("kernels", "biases", "out_kernel", "out_bias")
PARAM_PREFIX = "param_"


class RunSpec(NamedTuple):
    """What distinguishes one run of a grid. Each field is a scalar per run ([R] when stacked).

    key: the run's PRNG key data (uint32 [2], from ``jax.random.key_data(PRNGKey(seed))``);
    depth, width: int32; lr, weight_var (sigma_w^2), bias_var (sigma_b^2): float32.
    """

    key: jax.Array
    depth: jax.Array
    width: jax.Array
    lr: jax.Array
    weight_var: jax.Array | float = 1.0
    bias_var: jax.Array | float = 0.0


class DeviceData(NamedTuple):
    """Data on device: x_train [N, F], y_train [N], x_test [M, F], y_test [M] (float32)."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


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
    steps = -(-n // batch_size)
    perm = jax.random.permutation(key, n)
    pad = steps * batch_size - n
    idx = jnp.pad(perm, (0, pad)).reshape(steps, batch_size)
    weights = (jnp.arange(steps * batch_size) < n).astype(jnp.float32).reshape(steps, batch_size)
    return idx, weights


class EpochStats(NamedTuple):
    """Per-epoch outputs of one run: curves [4] (train/test loss, train/test accuracy) and
    layer stats [3, L] (grad mean |g|, grad norm, weight L1), plus optional test-gradient
    stats [2, L] and, with the signal probe, hidden-layer probes [3, D] (q, saturation,
    dead share; see :data:`SIGNAL_LAYER_KEYS`)."""

    curves: jax.Array
    layers: jax.Array
    test_layers: jax.Array | None
    signal: jax.Array | None = None


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


def make_train(config: Config, max_depth: int, p: int, *, step: Step | None = None,
               keep_params: bool = False):
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
    layers and of epochs from the one that diverged on are NaN. ``step`` defaults to
    ``make_step(config, max_depth=max_depth, p=p)``.
    """
    step = step or make_step(config, max_depth=max_depth, p=p)
    probing = "signal" in config.probes
    n_layers = max_depth + 1
    steps = config.steps_per_epoch
    every = config.hist_every
    dims = dict(max_depth=max_depth, p=p, n_features=step.n_features, n_outputs=step.n_outputs)

    def train_run(spec: RunSpec, data: DeviceData) -> dict[str, jax.Array]:
        key = jax.random.wrap_key_data(spec.key)
        init_key, shuffle_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        state = step.init(init_key, spec.depth, spec.width, lr=spec.lr,
                          weight_var=spec.weight_var, bias_var=spec.bias_var)
        hidden_mask, out_mask = kernel_mask(spec.depth, spec.width, **dims)
        counts = diag.real_counts(spec.depth, spec.width, max_depth=max_depth,
                                  n_features=step.n_features, n_outputs=step.n_outputs)
        present = diag.layer_present(spec.depth, max_depth=max_depth)
        n_hist = config.epochs // every if every > 0 else 0

        def run_epoch(carry, epoch):
            # carry = (TrainState, hist buffers or None). Histogram epochs share this one
            # compiled body: their extra work sits in conds on the (unbatched) epoch number,
            # as in vgjax.fast, so the program holds a single epoch.
            state, bufs = carry
            hist_now = (epoch + 1) % every == 0 if every > 0 else False
            idx, weights = batch_indices(jax.random.fold_in(shuffle_key, epoch),
                                         config.n_train, config.batch_size)

            def one_step(carry, batch):
                state, sums, hist = carry
                b_idx, b_w = batch
                state, out = step.train_step(
                    state, Batch(data.x_train[b_idx], data.y_train[b_idx], b_w))
                # |g| sums (not the step's means) keep the epoch mean's rounding as before;
                # XLA computes the shared reductions once.
                sums = sums + jnp.stack([diag.abs_sums(out.grads), out.grad_norm])
                if hist is not None:
                    def add(h):
                        c, s = diag.histogram(out.grads, hidden_mask, out_mask)
                        return h[0] + c, diag.merge_hist_stats(h[1], s)
                    hist = jax.lax.cond(hist_now, add, lambda h: h, hist)
                return (state, sums, hist), out.loss

            hist0 = _empty_hist(n_layers) if bufs is not None else None
            carry = (state, jnp.zeros((2, n_layers), jnp.float32), hist0)
            (state, sums, ghist), _ = jax.lax.scan(one_step, carry, (idx, weights))

            params = state.params
            train_loss, train_acc = step.evaluate(params, data.x_train, data.y_train,
                                                  spec.depth, spec.width)
            test_loss, test_acc = step.evaluate(params, data.x_test, data.y_test,
                                                spec.depth, spec.width)
            layer_stats = jnp.stack([
                sums[0] / (steps * jnp.maximum(counts, 1.0)),
                sums[1] / steps,
                diag.abs_sums(params),
            ])
            test_stats = None
            if config.test_gradients:
                n_test = data.y_test.shape[0]
                _, tg = step.loss_and_grads(
                    params, Batch(data.x_test, data.y_test, jnp.ones((n_test,), jnp.float32)),
                    spec.depth, spec.width)
                test_stats = jnp.stack([diag.abs_sums(tg) / jnp.maximum(counts, 1.0),
                                        diag.l2_norms(tg)])
            signal = (signal_layer_stats(config, params, data.x_train, spec.depth, spec.width)
                      if probing else None)
            stats = EpochStats(jnp.stack([train_loss, test_loss, train_acc, test_acc]),
                               layer_stats, test_stats, signal)
            if bufs is not None:
                def store(bufs):
                    # Preallocated [H, ...] buffers: nothing of size [E, L, K] is stacked.
                    h = (epoch + 1) // every - 1
                    whist = diag.histogram(params, hidden_mask, out_mask)
                    jac = (signal_jacobian(config, params, data.x_train, spec.depth, spec.width)
                           if probing else ())
                    put = lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, h, 0)
                    return tuple(map(put, bufs, (*ghist, *whist, *jac)))
                bufs = jax.lax.cond(hist_now, store, lambda b: b, bufs)
            return (state, bufs), stats

        bufs0 = None
        if n_hist > 0:
            bufs0 = tuple(jnp.zeros((n_hist,) + a.shape, a.dtype) for a in _empty_hist(n_layers) * 2)
            if probing:
                bufs0 += tuple(jnp.zeros((n_hist,) + a.shape, a.dtype) for a in _empty_jac())
        if probing:  # before the first step: the initialisation's signal
            init = state.params
            init_layers = signal_layer_stats(config, init, data.x_train, spec.depth, spec.width)
            init_jac = signal_jacobian(config, init, data.x_train, spec.depth, spec.width)
        epochs = jnp.arange(config.epochs, dtype=jnp.int32)
        (state, bufs), stats = jax.lax.scan(run_epoch, (state, bufs0), epochs)
        out = finish(config, stats, bufs, present, epochs)
        if probing:
            out.update({k + INIT_SUFFIX: v for k, v in zip(SIGNAL_LAYER_KEYS, init_layers)})
            out.update({k + INIT_SUFFIX: v for k, v in zip(SIGNAL_JAC_KEYS, init_jac)})
        if keep_params:
            out.update({PARAM_PREFIX + k: state.params[k] for k in PARAM_KEYS})
        return out

    return train_run


def finish(config: Config, stats: EpochStats, bufs, present: jax.Array,
           epochs: jax.Array) -> dict[str, jax.Array]:
    """One run's history dict from its stacked per-epoch stats and histogram buffers.

    Divergence: the first epoch whose loss or statistics are not finite. From that epoch on,
    the run's statistics are masked to NaN instead of reporting garbage.
    """
    every = config.hist_every
    n_layers = present.shape[0]
    out: dict[str, jax.Array] = {}
    probing = "signal" in config.probes
    if every > 0:
        if bufs is None:  # hist_every > epochs: no histogram epoch at all
            bufs = tuple(jnp.zeros((0,) + a.shape, a.dtype) for a in _empty_hist(n_layers) * 2)
            if probing:
                bufs += tuple(jnp.zeros((0,) + a.shape, a.dtype) for a in _empty_jac())
        out.update(grad_hist=bufs[0], grad_hist_stats=bufs[1],
                   weight_hist=bufs[2], weight_hist_stats=bufs[3])
    finite = jnp.isfinite(stats.curves).all(axis=1) & jnp.isfinite(stats.layers).all(axis=(1, 2))
    bad = ~finite
    first_bad = jnp.argmax(bad)
    diverged_epoch = jnp.where(bad.any(), first_bad + 1, -1).astype(jnp.int32)
    valid_epoch = jnp.where(bad.any(), epochs < first_bad, True)
    curves = jnp.where(valid_epoch[:, None], stats.curves, jnp.nan)
    layer_ok = valid_epoch[:, None] & present[None, :]
    layers = jnp.where(layer_ok[:, None, :], stats.layers, jnp.nan)
    out.update(
        train_loss=curves[:, 0], test_loss=curves[:, 1],
        train_accuracy=curves[:, 2], test_accuracy=curves[:, 3],
        grad_mean_abs=layers[:, 0], grad_norm=layers[:, 1], weight_l1=layers[:, 2],
        diverged_epoch=diverged_epoch,
    )
    if config.test_gradients:
        t = jnp.where(layer_ok[:, None, :], stats.test_layers, jnp.nan)
        out.update(test_grad_mean_abs=t[:, 0], test_grad_norm=t[:, 1])
    if every > 0:
        hist_ok = valid_epoch[every - 1::every][: config.epochs // every]
        for name in ("grad_hist", "weight_hist"):
            keep = hist_ok[:, None] & present[None, :]
            out[name] = jnp.where(keep[:, :, None], out[name], 0)
            out[name + "_stats"] = jnp.where(keep[:, :, None], out[name + "_stats"], jnp.nan)
        if probing:  # the Jacobian of a diverged epoch: NaN summary, no counts
            mean_sq, smax, counts = bufs[4:7]
            out.update(signal_jac_mean_sq=jnp.where(hist_ok, mean_sq, jnp.nan),
                       signal_jac_max=jnp.where(hist_ok, smax, jnp.nan),
                       signal_jac_log_hist=jnp.where(hist_ok[:, None], counts, 0))
    if probing:  # hidden layers only: the first D entries of the layer mask
        ok = valid_epoch[:, None] & present[None, :n_layers - 1]
        sig = jnp.where(ok[:, None, :], stats.signal, jnp.nan)
        out.update({k: sig[:, i] for i, k in enumerate(SIGNAL_LAYER_KEYS)})
    return out


def _empty_jac() -> tuple[jax.Array, jax.Array, jax.Array]:
    """Placeholders of one Jacobian summary: mean σ² [], max σ [], log10 σ counts [K]."""
    k = probes.LOG_SIGMA_EDGES.shape[0] - 1
    return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((k,), jnp.int32)


def _empty_hist(n_layers: int) -> tuple[jax.Array, jax.Array]:
    """Zero counts [L, K] int32 and identity stats [L, 4] for accumulating a histogram."""
    return jnp.zeros((n_layers, diag.N_BUCKETS), jnp.int32), diag.empty_hist_stats(n_layers)
