"""The model: initialisers against their formulas, masking against an exactly-built model,
gradients against a NumPy backprop and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax import model
from vgjax.model import (ACTIVATION_FNS, ExactMLP, MaskedMLP, init_kernel, init_params,
                         kernel_mask, to_exact_params)
from vgjax.engines.reference import bce_loss

KEY = jax.random.PRNGKey(0)


def _kernel(init, fi, fo, p=None, key=KEY):
    return np.asarray(init_kernel(key, p or max(fi, fo), init, fi, fo))


@pytest.mark.parametrize("init, fi, fo, limit", [
    ("uniform", 40, 40, None),
    ("he_uniform", 40, 30, np.sqrt(6 / 40)),
    ("glorot_uniform", 40, 30, np.sqrt(6 / 70)),
    ("lecun_uniform", 40, 30, np.sqrt(3 / 40)),
])
def test_uniform_initialisers(init, fi, fo, limit):
    w = _kernel(init, fi, fo)[:fi, :fo]
    if init == "uniform":  # Keras RandomUniform(0, 1)
        assert w.min() >= 0 and w.max() < 1
        assert abs(w.mean() - 0.5) < 0.03 and abs(w.var() - 1 / 12) < 0.01
    else:
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.95 * limit  # fills the interval
        assert abs(w.mean()) < 0.05 * limit
        np.testing.assert_allclose(w.var(), limit**2 / 3, rtol=0.1)


@pytest.mark.parametrize("init, fi, fo, std", [
    ("he_normal", 50, 40, np.sqrt(2 / 50)),
    ("lecun_normal", 50, 40, np.sqrt(1 / 50)),
    ("glorot_normal", 50, 40, np.sqrt(2 / 90)),
])
def test_truncated_normal_initialisers(init, fi, fo, std):
    w = _kernel(init, fi, fo)[:fi, :fo]
    # Keras truncates at 2 of the *underlying* std, which is std / 0.8796.
    assert np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-6
    np.testing.assert_allclose(w.std(), std, rtol=0.08)


@pytest.mark.parametrize("fi, fo", [(6, 6), (2, 7), (7, 1), (3, 5)])
def test_orthogonal(fi, fo):
    w = _kernel("orthogonal", fi, fo, p=9)
    assert np.all(w[fi:] == 0) and np.all(w[:, fo:] == 0)
    w = w[:fi, :fo].astype(np.float64)
    gram = w.T @ w if fi >= fo else w @ w.T  # orthonormal columns, or rows when fi < fo
    np.testing.assert_allclose(gram, np.eye(min(fi, fo)), atol=1e-5)


def test_orthonormal_columns_is_signed_qr_without_lapack():
    # Q of numpy's QR with diag(R) made positive; zero columns (the padding) stay zero; no
    # library call in the program (a batched geqrf per shard deadlocked XLA:CPU's pool)
    rng = np.random.default_rng(0)
    a = np.zeros((3, 9, 9), np.float32)
    a[:, :8, :5] = rng.standard_normal((3, 8, 5))
    q = np.asarray(jax.jit(jax.vmap(model.orthonormal_columns))(jnp.asarray(a)), np.float64)
    for qi, ai in zip(q, a.astype(np.float64)):
        ref, r = np.linalg.qr(ai[:8, :5])
        np.testing.assert_allclose(qi[:8, :5], ref * np.sign(np.diag(r)), atol=2e-6)
        assert np.all(qi[8:] == 0) and np.all(qi[:, 5:] == 0)
    hlo = jax.jit(jax.vmap(model.orthonormal_columns)).lower(jnp.asarray(a)).as_text()
    assert "custom_call" not in hlo


@pytest.mark.parametrize("init", ["uniform", "he_uniform", "glorot_uniform", "he_normal",
                                  "lecun_normal", "orthogonal"])
def test_init_does_not_depend_on_padding(init):
    """A run's initial weights are the same whatever the grid pads to (real fans only)."""
    small = init_params(KEY, 3, 4, max_depth=3, p=4, init=init, output_init=init)
    big = init_params(KEY, 3, 4, max_depth=7, p=11, init=init, output_init=init)
    for name, sl in [("kernels", np.s_[:3, :4, :4]), ("out_kernel", np.s_[:4])]:
        np.testing.assert_allclose(big[name][sl], small[name][sl], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(big["kernels"][3:], 0)
    np.testing.assert_array_equal(big["kernels"][:, 4:, :], 0)
    np.testing.assert_array_equal(big["kernels"][:, :, 4:], 0)
    # the first layer reads 2 features: its rows beyond 2 are padding
    np.testing.assert_array_equal(big["kernels"][0, 2:, :], 0)


def _entry(key, tag, index):
    return jax.random.fold_in(jax.random.fold_in(key, tag), index)


@pytest.mark.parametrize("init", ["he_uniform", "uniform", "glorot_normal", "normal"])
def test_init_streams_are_per_entry_jax_random_draws(init):
    """Every entry is the jax.random draw of its own key: hidden kernel l's
    (i, j) from fold_in(fold_in(key, l), i * 2**16 + j), the output kernel's from tag 2**20,
    bias l's j from fold_in(fold_in(key, 2**21 + l), j), the output bias's from tag 2**21 +
    2**20. init_params draws them all in one batch; this is the definition, entry by entry
    (to 1e-6: XLA folds the scalings differently in the two programs; the transforms
    themselves are bit-exact, next test)."""
    d, w, wv, bv, c = 2, 3, 2.0, 0.5, 3
    got = jax.jit(lambda k: init_params(k, d, w, max_depth=3, p=4, init=init, output_init=init,
                                        n_outputs=c, weight_var=wv, bias_var=bv))(KEY)

    def draw(k, fi, fo):
        if init == "he_uniform":
            lim = jnp.sqrt(6.0 / fi)
            return jax.random.uniform(k, (), jnp.float32) * (2 * lim) - lim
        if init == "uniform":
            return jax.random.uniform(k, (), jnp.float32)
        if init == "glorot_normal":
            std = jnp.sqrt(2.0 / (fi + fo))
            draws = jax.random.truncated_normal(k, -2.0, 2.0, (), jnp.float32)
            return draws * (std / 0.87962566103423978)
        return jax.random.normal(k, (), jnp.float32) / jnp.sqrt(fi)

    gain, b_std = np.sqrt(wv), np.sqrt(bv)
    value = lambda k, fi, fo: draw(k, fi, fo) * gain
    bias = lambda k: jax.random.normal(k, (), jnp.float32) * b_std
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    for l in range(d):
        fi = 2 if l == 0 else w
        for i in range(fi):
            for j in range(w):
                close(got["kernels"][l, i, j], value(_entry(KEY, l, i * 2**16 + j), fi, w))
        for j in range(w):
            close(got["biases"][l, j], bias(_entry(KEY, 2**21 + l, j)))
    for i in range(w):
        for j in range(c):
            close(got["out_kernel"][i, j], value(_entry(KEY, 2**20, i * 2**16 + j), w, c))
    for j in range(c):
        close(got["out_bias"][j], bias(_entry(KEY, 2**21 + 2**20, j)))


def test_draws_from_one_uniform_equal_jax_random():
    """normal and truncated normal draws computed from u = uniform(key) equal jax.random's
    own draws of the key, bit for bit, on many keys, compiled as init_params is (a JAX that
    changed its transforms would fail here, not silently change every initial weight)."""
    from vgjax.model import _normal, _truncated_normal
    keys = jax.random.split(KEY, 20000)
    per_key = lambda f: jax.jit(jax.vmap(f))(keys)
    uniform = lambda k: jax.random.uniform(k, (), jnp.float32)
    pairs = [
        (per_key(lambda k: _normal(uniform(k))),
         per_key(lambda k: jax.random.normal(k, (), jnp.float32))),
        (per_key(lambda k: _truncated_normal(uniform(k), -2.0, 2.0)),
         per_key(lambda k: jax.random.truncated_normal(k, -2.0, 2.0, (), jnp.float32))),
    ]
    for ours, theirs in pairs:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_he_uniform_uses_real_fan_in():
    """Padded to 30 units, a width-2 layer still draws from U(-sqrt(6/2), sqrt(6/2))."""
    params = init_params(KEY, 8, 2, max_depth=8, p=30, init="he_uniform", output_init="he_uniform")
    w = np.asarray(params["kernels"][1:, :2, :2])
    assert np.abs(w).max() > np.sqrt(6 / 30) * 1.5  # far beyond the padded fan-in's limit
    assert np.abs(w).max() <= np.sqrt(6 / 2)


@pytest.mark.parametrize("activation", sorted(ACTIVATION_FNS))
def test_masked_equals_exact_model(activation):
    """A depth-3, width-4 run inside a 6 x 7 stack equals a model built with 3 Dense(4)."""
    depth, width = 3, 4
    params = init_params(KEY, depth, width, max_depth=6, p=7, init="glorot_uniform",
                         output_init="glorot_uniform")
    # non-zero biases so that masking of biases is exercised too
    params["biases"] = params["biases"].at[:depth, :width].set(0.1)
    x = jax.random.normal(jax.random.PRNGKey(1), (9, 2))
    y = (jnp.arange(9) % 2).astype(jnp.float32)
    masked = MaskedMLP(max_depth=6, p=7, activation=activation)
    exact = ExactMLP(depth=depth, width=width, activation=activation)
    ex_params = to_exact_params(params, depth, width)
    np.testing.assert_allclose(masked.apply({"params": params}, x, depth, width),
                               exact.apply(ex_params, x), rtol=1e-5, atol=1e-6)
    w = jnp.ones(9)
    g_masked = jax.grad(lambda p: bce_loss(masked.apply({"params": p}, x, depth, width), y, w))(params)
    g_exact = jax.grad(lambda p: bce_loss(exact.apply(p, x), y, w))(ex_params)
    np.testing.assert_allclose(to_exact_params(g_masked, depth, width)["params"]["dense_2"]["kernel"],
                               g_exact["params"]["dense_2"]["kernel"], rtol=1e-4, atol=1e-7)
    # inactive layers and units receive exactly zero gradient
    hidden, out = kernel_mask(depth, width, max_depth=6, p=7)
    assert np.all(np.asarray(g_masked["kernels"])[~np.asarray(hidden)] == 0)
    assert np.all(np.asarray(g_masked["out_kernel"])[~np.asarray(out)] == 0)
    assert np.all(np.asarray(g_masked["biases"])[depth:] == 0)


def _numpy_net(ws, bs, wo, bo, x, y):
    """Loss and hand-derived gradients of a tanh MLP in float64 NumPy."""
    hs = [x]
    for w, b in zip(ws, bs):
        hs.append(np.tanh(hs[-1] @ w + b))
    logit = hs[-1] @ wo + bo
    p = 1 / (1 + np.exp(-logit))
    loss = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    delta = (p - y) / len(y)  # dL/dlogit
    g_wo = hs[-1].T @ delta
    back = np.outer(delta, wo)
    g_ws = []
    for i in reversed(range(len(ws))):
        dz = back * (1 - hs[i + 1] ** 2)
        g_ws.insert(0, hs[i].T @ dz)
        back = dz @ ws[i].T
    return loss, g_ws, g_wo


def test_gradients_against_numpy_and_finite_differences():
    depth, width = 2, 3
    params = init_params(KEY, depth, width, max_depth=4, p=5, init="glorot_uniform",
                         output_init="glorot_uniform")
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (7, 2), minval=-1, maxval=1))
    y = np.array([0, 1, 1, 0, 1, 0, 0], np.float32)
    model = MaskedMLP(max_depth=4, p=5, activation="tanh")
    loss_fn = lambda p: bce_loss(model.apply({"params": p}, x, depth, width), y, jnp.ones(7))
    loss, grads = jax.value_and_grad(loss_fn)(params)

    ex = to_exact_params(params, depth, width)["params"]
    ws = [np.asarray(ex[f"dense_{i + 1}"]["kernel"], np.float64) for i in range(depth)]
    bs = [np.zeros(width)] * depth
    wo = np.asarray(ex["dense_3"]["kernel"][:, 0], np.float64)
    ref_loss, ref_ws, ref_wo = _numpy_net(ws, bs, wo, 0.0, x.astype(np.float64), y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for i in range(depth):
        fi = 2 if i == 0 else width
        np.testing.assert_allclose(grads["kernels"][i, :fi, :width], ref_ws[i], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads["out_kernel"][:width], ref_wo, rtol=1e-4, atol=1e-7)

    # central finite differences of the float64 loss for a few first-layer entries
    eps = 1e-6
    for (r, c) in [(0, 0), (1, 2), (0, 1)]:
        up = [w.copy() for w in ws]; up[0][r, c] += eps
        dn = [w.copy() for w in ws]; dn[0][r, c] -= eps
        fd = (_numpy_net(up, bs, wo, 0.0, x, y)[0] - _numpy_net(dn, bs, wo, 0.0, x, y)[0]) / (2 * eps)
        np.testing.assert_allclose(grads["kernels"][0, r, c], fd, rtol=1e-3, atol=1e-7)


def _random_walk_gain64(activation, n):
    """Sussillo & Abbott's gains, float64 from their formulas."""
    if activation == "linear":
        return np.exp(1.0 / (2.0 * n))
    if activation == "relu":
        return np.sqrt(2.0) * np.exp(1.2 / (max(n, 6) - 2.4))
    return 1.13


@pytest.mark.parametrize("activation, n", [("linear", 10), ("relu", 4), ("relu", 100),
                                           ("tanh", 30)])
def test_random_walk_std_is_gain_over_sqrt_fan_in(activation, n):
    """Random-walk kernels are N(0, g^2/N): the sample std of 40k entries matches g/sqrt(N)
    (not g/N, the slip of some public implementations), and each entry is the ``normal``
    draw of its stream times g."""
    from vgjax.model import random_walk_gain
    keys = jax.random.split(KEY, -(-40_000 // (n * n)))
    draw = lambda init, act: np.asarray(jax.jit(jax.vmap(
        lambda k: init_kernel(k, n, init, n, n, activation=act)))(keys), np.float64)
    g = _random_walk_gain64(activation, n)
    np.testing.assert_allclose(float(random_walk_gain(activation, n)), g, rtol=1e-6)
    w = draw("random_walk", activation)
    # sample std of >= 40k normals: relative standard error <= 1/sqrt(80k) = 0.35 %; g/N
    # is at least 2x off for N >= 4
    np.testing.assert_allclose(w.std(), g / np.sqrt(n), rtol=0.015)
    assert abs(w.mean()) < 4 * g / np.sqrt(n) / np.sqrt(w.size)
    np.testing.assert_allclose(w, draw("normal", None) * g, rtol=1e-6, atol=0)


def test_random_walk_init_params_gains_per_layer():
    """In a padded grid net, each hidden layer's gain uses its own real fan-in (the input
    layer reads 2 features) and the output layer the linear gain; sigma_w^2 stays a gain."""
    d, w, wv = 3, 7, 2.0
    rw = jax.jit(lambda k: init_params(k, d, w, max_depth=5, p=9, init="random_walk",
                                       output_init="random_walk", weight_var=wv,
                                       activation="relu"))(KEY)
    ref = jax.jit(lambda k: init_params(k, d, w, max_depth=5, p=9, init="normal",
                                        output_init="normal", weight_var=wv))(KEY)
    for l, fi in enumerate([2, w, w]):
        np.testing.assert_allclose(rw["kernels"][l], ref["kernels"][l] *
                                   _random_walk_gain64("relu", fi), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(rw["kernels"][d:], 0)
    np.testing.assert_allclose(rw["out_kernel"], ref["out_kernel"] *
                               _random_walk_gain64("linear", w), rtol=1e-6, atol=0)


def test_random_walk_needs_a_known_activation():
    from vgjax.config import Config
    from vgjax.model import random_walk_gain
    with pytest.raises(ValueError, match="^init: 'random_walk' has no gain for activation "
                                         "'sigmoid'; allowed"):
        Config(activation="sigmoid", init="random_walk")
    with pytest.raises(ValueError, match="^activation: 'elu' has no random-walk gain"):
        random_walk_gain("elu", 10)
    Config(activation="tanh", init="random_walk")
    Config(activation="sigmoid", init="normal", output_init="random_walk")
