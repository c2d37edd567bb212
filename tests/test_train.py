"""Training against an independent float64 NumPy implementation of the Keras protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import reference
from vgjax import diagnostics as diag
from vgjax.config import Config
from vgjax.data import data_dims, make_data
from vgjax.model import init_params, to_exact_params
from vgjax.step import n_outputs_for
from vgjax.engines.loop import DeviceData, RunSpec
from vgjax.engines.reference import batch_indices, bce_loss, make_train


def test_batches_keep_the_final_partial_batch():
    idx, w = batch_indices(jax.random.PRNGKey(3), 500, 32)
    assert idx.shape == (16, 32) and w.shape == (16, 32)
    np.testing.assert_array_equal(w.sum(1), [32] * 15 + [20])
    np.testing.assert_array_equal(np.sort(np.asarray(idx)[np.asarray(w) > 0]), np.arange(500))


def test_bce_against_formula():
    logits = jnp.array([-30.0, -1.0, 0.0, 2.0, 40.0])
    y = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0])
    z = np.asarray(logits, np.float64)
    ref = -(y * -np.logaddexp(0, -z) + (1 - y) * -np.logaddexp(0, z))  # log p, log(1 - p)
    w = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])  # last one is padding
    np.testing.assert_allclose(bce_loss(logits, y, w), ref[:4].mean(), rtol=1e-6)


def _reference_run(config, seed, depth, width, max_depth, p):
    """Same initial weights and shuffles as vgjax, trained by the NumPy reference (one logit
    for two classes, else one per class)."""
    key = jax.random.PRNGKey(seed)
    f, n_classes = data_dims(config)
    c = n_outputs_for(config, n_classes)
    params = init_params(jax.random.fold_in(key, 0), depth, width, max_depth=max_depth, p=p,
                         init=config.init, output_init=config.resolved_output_init,
                         n_features=f, n_outputs=c)
    ex = to_exact_params(params, depth, width, n_features=f)["params"]
    ws = [np.asarray(ex[f"dense_{i + 1}"]["kernel"], np.float64) for i in range(depth)]
    bs = [np.zeros(width) for _ in range(depth)]
    wo = np.asarray(ex[f"dense_{depth + 1}"]["kernel"], np.float64)
    wo, bo = (wo[:, 0], 0.0) if c == 1 else (wo, np.zeros(c))
    shuffle_key = jax.random.fold_in(key, 1)
    batches = []
    for e in range(config.epochs):
        idx, w = batch_indices(jax.random.fold_in(shuffle_key, e), config.n_train, config.batch_size)
        idx, w = np.asarray(idx), np.asarray(w)
        batches.append([row[wr > 0] for row, wr in zip(idx, w)])
    d = make_data(config)
    cast = lambda a: a.astype(np.float64)
    return reference.train((ws, bs, wo, bo), cast(d.x_train), cast(d.y_train), cast(d.x_test),
                           cast(d.y_test), batches, activation=config.activation,
                           optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,
                           hist_every=config.hist_every, edges=diag.HIST_EDGES,
                           test_gradients=config.test_gradients)


@pytest.mark.parametrize("activation, init, optimizer, lr, momentum", [
    ("tanh", "uniform", "sgd", 0.01, 0.9),
    ("relu", "he_uniform", "sgd", 0.05, 0.9),
    ("tanh", "glorot_uniform", "adam", 0.01, 0.9),
    ("sigmoid", "glorot_uniform", "sgd", 0.5, 0.0),
])
def test_training_matches_numpy_reference(activation, init, optimizer, lr, momentum):
    """Curves, per-layer gradient stats, test-set gradients and histograms (counts and
    min/max/sum/sum of squares) against the float64 NumPy reference."""
    config = Config(activation=activation, init=init, output_init="glorot_uniform",
                    optimizer=optimizer, lr=lr, momentum=momentum, epochs=3, hist_every=2,
                    test_gradients=True)
    seed, depth, width, max_depth, p = 4, 2, 3, 3, 5
    train_run = jax.jit(make_train(config, max_depth, p))
    spec = RunSpec(jax.random.key_data(jax.random.PRNGKey(seed)), jnp.int32(depth),
                   jnp.int32(width), jnp.float32(lr))
    out = train_run(spec, DeviceData(*(jnp.asarray(a) for a in make_data(config))))
    ref = _reference_run(config, seed, depth, width, max_depth, p)
    for e, rec in enumerate(ref):
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            np.testing.assert_allclose(out[name][e], rec[name], rtol=2e-4, atol=1e-5, err_msg=name)
        present = list(range(depth)) + [max_depth]  # output layer sits at index D
        for name in ("grad_mean_abs", "grad_norm", "weight_l1", "test_grad_mean_abs",
                     "test_grad_norm"):
            np.testing.assert_allclose(np.asarray(out[name][e])[present], rec[name], rtol=2e-4,
                                       atol=1e-7, err_msg=name)
        assert np.all(np.isnan(np.asarray(out["grad_mean_abs"][e])[depth:max_depth]))
        if "grad_hist" in rec:
            h = (e + 1) // config.hist_every - 1
            for name in ("grad_hist", "weight_hist"):
                got = np.asarray(out[name][h])[present].astype(np.int64)
                np.testing.assert_array_equal(got.sum(-1), rec[name].sum(-1), err_msg=name)
                # float32 vs float64 values: at most a value or two may sit across an edge
                assert np.abs(got - rec[name]).sum() <= 4, name
                st = np.asarray(out[name + "_stats"][h])[present]
                np.testing.assert_allclose(st[:, :2], rec[name + "_stats"][:, :2], rtol=2e-4,
                                           atol=1e-7, err_msg=name)
                np.testing.assert_allclose(st[:, 3], rec[name + "_stats"][:, 3], rtol=2e-4,
                                           err_msg=name)
                # signed sums cancel: compare them on the scale of the sum of |values|
                scale = np.sqrt(rec[name + "_stats"][:, 3] * got.sum(-1))
                assert np.all(np.abs(st[:, 2] - rec[name + "_stats"][:, 2]) <= 1e-4 * scale), name
    assert sum("grad_hist" in rec for rec in ref) == 1
    assert int(out["diverged_epoch"]) == -1


def test_keras_momentum_equals_optax_trace():
    """Keras: v = m v - lr g; w += v.  optax.sgd(momentum): t = g + m t; w -= lr t."""
    opt = optax.sgd(0.1, momentum=0.9)
    w = jnp.array([1.0, -2.0])
    state = opt.init(w)
    wk, vk = np.array([1.0, -2.0]), np.zeros(2)
    for _ in range(5):
        g = 2 * w  # gradient of |w|^2
        upd, state = opt.update(g, state, w)
        w = optax.apply_updates(w, upd)
        vk = 0.9 * vk - 0.1 * (2 * wk)
        wk = wk + vk
    np.testing.assert_allclose(w, wk, rtol=1e-6)


def test_histograms_count_every_real_entry_of_every_step():
    config = Config(activation="relu", epochs=4, hist_every=2)
    train_run = jax.jit(make_train(config, 3, 6))
    spec = RunSpec(jax.random.key_data(jax.random.PRNGKey(0)), jnp.int32(2), jnp.int32(4),
                   jnp.float32(0.01))
    out = train_run(spec, DeviceData(*(jnp.asarray(a) for a in make_data(config))))
    counts = np.asarray(out["grad_hist"]).sum(-1)  # [H, L]
    entries = np.array([2 * 4, 4 * 4, 0, 4])  # layer 1 reads 2 inputs; layer 3 absent; output
    np.testing.assert_array_equal(counts, np.tile(entries * 16, (2, 1)))
    np.testing.assert_array_equal(np.asarray(out["weight_hist"]).sum(-1), np.tile(entries, (2, 1)))
    stats = np.asarray(out["grad_hist_stats"])
    assert np.all(stats[:, [0, 1, 3], 0] <= stats[:, [0, 1, 3], 1])  # min <= max
