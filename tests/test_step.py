"""The public train step: gradients against the float64 NumPy reference and the exact Flax
model, per-run unpacking, vmapping over runs, Keras's Adam against its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import reference
from vgjax.config import Config
from vgjax.data import make_data
from vgjax.model import ExactMLP, to_exact_params, unpack_run
from vgjax.step import Batch, TrainState, init_state, keras_adam, make_step

KEY = jax.random.PRNGKey(3)


def _batch(n=9, f=2, seed=1):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, f))
    y = (jnp.arange(n) % 2).astype(jnp.float32)
    return Batch(x, y, jnp.ones((n,), jnp.float32))


def _reference_tree(params, depth, width):
    ex = unpack_run(params, depth, width)
    ws = [np.asarray(ex[f"dense_{i + 1}"]["kernel"], np.float64) for i in range(depth)]
    bs = [np.asarray(ex[f"dense_{i + 1}"]["bias"], np.float64) for i in range(depth)]
    return ws, bs, np.asarray(ex["output"]["kernel"][:, 0], np.float64), float(ex["output"]["bias"][0])


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_loss_and_grads_match_numpy_reference(activation):
    """A depth-3, width-4 run padded to 5 x 6, with non-zero biases (sigma_b^2 > 0)."""
    cfg = Config(activation=activation, init="glorot_uniform", bias_var=0.1)
    step = make_step(cfg, max_depth=5, p=6)
    state = step.init(KEY, 3, 4)
    batch = _batch()
    loss, grads = jax.jit(step.loss_and_grads)(state.params, batch, 3, 4)
    assert jax.tree.structure(grads) == jax.tree.structure(state.params)
    assert all(g.shape == p.shape for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(state.params)))
    ref = _reference_tree(state.params, 3, 4)
    assert np.any(ref[1][0] != 0)  # biases were drawn
    x, y = np.asarray(batch.x, np.float64), np.asarray(batch.y, np.float64)
    ref_loss, (gw, gb, gwo, gbo) = reference.loss_and_grads(ref, x, y, activation)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    ours = unpack_run(grads, 3, 4)
    for i in range(3):
        np.testing.assert_allclose(ours[f"dense_{i + 1}"]["kernel"], gw[i], rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(ours[f"dense_{i + 1}"]["bias"], gb[i], rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(ours["output"]["kernel"][:, 0], gwo, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(ours["output"]["bias"][0], gbo, rtol=2e-4, atol=1e-7)
    # padding receives exactly zero gradient
    np.testing.assert_array_equal(np.asarray(grads["kernels"])[3:], 0)
    np.testing.assert_array_equal(np.asarray(grads["kernels"])[:, :, 4:], 0)


def test_train_step_outputs_and_update():
    cfg = Config(activation="tanh", init="glorot_uniform", momentum=0.0, lr=0.1)
    step, state = init_state(KEY, cfg, 2, 3)
    assert isinstance(state, TrainState)
    batch = _batch()
    new, out = jax.jit(step.train_step)(state, batch)
    loss, grads = step.loss_and_grads(state.params, batch, 2, 3)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-6)
    # plain SGD: w' = w - lr g
    for a, b, g in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params),
                       jax.tree.leaves(out.grads)):
        np.testing.assert_allclose(a, b - 0.1 * g, rtol=1e-6, atol=1e-7)
    ex = unpack_run(out.grads, 2, 3)
    kernels = [ex["dense_1"]["kernel"], ex["dense_2"]["kernel"], ex["output"]["kernel"]]
    np.testing.assert_allclose(out.grad_mean_abs, [np.abs(k).mean() for k in kernels], rtol=1e-5)
    np.testing.assert_allclose(out.grad_norm, [np.linalg.norm(k) for k in kernels], rtol=1e-5)


def test_unpacked_grads_equal_the_exact_model():
    """Unpacking one run of a padded grid gives exactly the exact model's tree and gradient."""
    cfg = Config(activation="relu", init="he_uniform", bias_var=0.05)
    step = make_step(cfg, max_depth=4, p=7)
    state = step.init(KEY, 2, 5)
    batch = _batch(11)
    _, grads = step.loss_and_grads(state.params, batch, 2, 5)
    exact = ExactMLP(depth=2, width=5, activation="relu")
    ex_params = to_exact_params(state.params, 2, 5)
    assert jax.tree.structure(ex_params) == jax.tree.structure(exact.init(KEY, batch.x))
    g_exact = jax.grad(lambda p: (optax.sigmoid_binary_cross_entropy(exact.apply(p, batch.x),
                                                                     batch.y)).mean())(ex_params)
    ours = unpack_run(grads, 2, 5)
    assert sorted(ours) == ["dense_1", "dense_2", "output"]
    assert ours["dense_1"]["kernel"].shape == (2, 5) and ours["output"]["kernel"].shape == (5, 1)
    for name in ("dense_1", "dense_2"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(ours[name][leaf], g_exact["params"][name][leaf],
                                       rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["output"]["kernel"], g_exact["params"]["dense_3"]["kernel"],
                               rtol=1e-5, atol=1e-7)


def test_vmapped_step_equals_each_run_alone():
    """8 seeds x 4 depths in one vmapped step equal the same runs stepped one by one."""
    cfg = Config(activation="tanh", init="glorot_uniform")
    step = make_step(cfg, max_depth=4, p=5)
    keys = jax.random.split(KEY, 8)
    depths = jnp.array([1, 2, 3, 4])
    kk, dd = jnp.repeat(keys, 4, axis=0), jnp.tile(depths, 8)  # seed outermost
    states = jax.vmap(lambda k, d: step.init(k, d, 5))(kk, dd)
    batch = _batch()
    new, out = jax.jit(jax.vmap(step.train_step, in_axes=(0, None)))(states, batch)
    assert out.loss.shape == (32,) and out.grad_norm.shape == (32, 5)
    for r in (0, 7, 30):
        one = step.init(kk[r], int(dd[r]), 5)
        n1, o1 = step.train_step(one, batch)
        np.testing.assert_allclose(out.loss[r], o1.loss, rtol=1e-6)
        np.testing.assert_allclose(new.params["kernels"][r], n1.params["kernels"], rtol=1e-6,
                                   atol=1e-7)


def test_keras_adam_matches_its_formula():
    """Keras: m, v moments; lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps),
    with eps beside sqrt(v) (optax's adam puts it beside the bias-corrected sqrt(v_hat))."""
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-7
    tx = keras_adam(lr)
    w = jnp.array([1.0, -2.0, 1e-4])
    state = tx.init(w)
    wk, m, v = np.array([1.0, -2.0, 1e-4]), np.zeros(3), np.zeros(3)
    update = jax.jit(tx.update)
    for t in range(1, 8):
        g = jnp.sin(3 * w) + 1e-6  # tiny gradient on the last entry: eps placement matters
        upd, state = update(g, state, w)
        w = optax.apply_updates(w, upd)
        gk = np.sin(3 * wk) + 1e-6
        m = b1 * m + (1 - b1) * gk
        v = b2 * v + (1 - b2) * gk**2
        wk = wk - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(w, wk, rtol=1e-5, atol=1e-6)  # float32 steps of ~0.05
    assert int(state.count) == 7


def test_keras_adam_is_not_optax_adam_for_tiny_gradients():
    g = jnp.array([1e-7])
    k, _ = keras_adam(0.1).update(g, keras_adam(0.1).init(g))
    o, _ = optax.adam(0.1, eps=1e-7).update(g, optax.adam(0.1, eps=1e-7).init(g))
    assert not np.allclose(k, o, rtol=0.1)


def test_a_step_trains_digits_with_softmax():
    cfg = Config(data="digits", activation="relu", init="he_uniform", n_samples=300, n_train=200,
                 lr=0.1)
    d = make_data(cfg)
    step, state = init_state(KEY, cfg, 2, 16)
    assert step.n_features == 64 and step.n_outputs == 10 and step.p == 64
    assert state.params["out_kernel"].shape == (64, 10)
    batch = Batch(jnp.asarray(d.x_train[:32]), jnp.asarray(d.y_train[:32]), jnp.ones(32))
    train_step = jax.jit(step.train_step)
    first = None
    for _ in range(30):
        state, out = train_step(state, batch)
        first = out.loss if first is None else first
    assert out.loss < 0.5 * first  # it fits the batch
    ref = optax.softmax_cross_entropy_with_integer_labels(
        step.apply(state.params, batch.x, 2, 16), batch.y.astype(jnp.int32)).mean()
    loss, _ = step.evaluate(state.params, batch.x, batch.y, 2, 16)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
