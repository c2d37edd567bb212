"""Pluggable parts through sweep(): activation callables, optax objects and factories, loss
callables, data arrays and built-in data sets, sigma_w^2 x sigma_b^2 grid axes, trained
parameters out, and bad input refused before compiling."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.test_wide import _same_params  # params of two engines, and each run unpacked
from vgjax.config import Config
from vgjax.data import make_data
from vgjax.model import init_params
from vgjax.step import Batch, make_step
from vgjax.run.chunks import sweep
from vgjax.engines.reference import batch_indices

BASE = Config(activation="tanh", init="glorot_uniform", epochs=2, hist_every=0, n_samples=200,
              n_train=100)
GRID = dict(seeds=(0, 1), depths=(1, 3), widths=(4,))


def _same(a, b, rtol=1e-6):
    for k in a.history:
        if a.history[k].dtype.kind == "f":
            np.testing.assert_allclose(a.history[k], b.history[k], rtol=rtol, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(a.history[k], b.history[k], err_msg=k)


def test_activation_callable_equals_its_name():
    named = sweep(BASE, engine="vmap", **GRID)
    obj = sweep(replace(BASE, activation=jnp.tanh), **GRID)
    _same(named, obj)
    swish = sweep(replace(BASE, activation=jax.nn.swish), **GRID)
    assert np.all(np.isfinite(swish.history["train_loss"]))
    assert not np.allclose(swish.history["train_loss"], named.history["train_loss"])
    assert swish.config.to_dict()["activation"].startswith("custom:")


def test_optax_chain_and_lr_factory():
    plain = replace(BASE, momentum=0.0, lr=0.05)
    ref = sweep(plain, engine="vmap", **GRID)
    # a huge clipping norm never clips: the chain is plain SGD
    chain = optax.chain(optax.clip_by_global_norm(1e9), optax.sgd(0.05))
    _same(ref, sweep(replace(BASE, optimizer=chain), **GRID), rtol=1e-5)
    # a factory keeps the learning-rate grid axis: each lr equals its own sweep
    factory = lambda lr: optax.sgd(lr)  # noqa: E731
    both = sweep(replace(BASE, optimizer=factory), lrs=(0.05, 0.2), **GRID)
    one = sweep(replace(BASE, optimizer=factory, lr=0.2), **GRID)
    pick = both.runs.lr == np.float32(0.2)
    np.testing.assert_allclose(both.history["train_loss"][pick], one.history["train_loss"],
                               rtol=1e-6)
    np.testing.assert_allclose(both.history["train_loss"][~pick], ref.history["train_loss"],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="^lrs:"):
        sweep(replace(BASE, optimizer=chain), lrs=(0.1, 0.2), **GRID)


def test_sweep_is_a_scan_over_the_public_train_step():
    """Epoch 1 of a sweep equals a Python loop of Step.train_step over the same batches."""
    cfg = replace(BASE, data="moons", bias_var=0.1, weight_var=1.5)
    res = sweep(cfg, seeds=(5,), depths=(2,), widths=(3,), engine="vmap")
    step = make_step(cfg, max_depth=2, p=3)
    key = jax.random.PRNGKey(5)
    state = step.init(jax.random.fold_in(key, 0), 2, 3)
    d = make_data(cfg)
    idx, w = batch_indices(jax.random.fold_in(jax.random.fold_in(key, 1), 0), cfg.n_train,
                           cfg.batch_size)
    train_step = jax.jit(step.train_step)
    norms = []
    for b_idx, b_w in zip(idx, w):
        state, out = train_step(state, Batch(jnp.asarray(d.x_train)[b_idx],
                                             jnp.asarray(d.y_train)[b_idx], b_w))
        norms.append(out.grad_norm)
    loss, acc = step.evaluate(state.params, jnp.asarray(d.x_test), jnp.asarray(d.y_test), 2, 3)
    np.testing.assert_allclose(res.history["test_loss"][0, 0], loss, rtol=1e-5)
    np.testing.assert_allclose(res.history["test_accuracy"][0, 0], acc)
    np.testing.assert_allclose(res.history["grad_norm"][0, 0], np.mean(norms, axis=0), rtol=1e-5)


def test_digits_and_user_arrays():
    cfg = replace(BASE, data="digits", activation="relu",
                  init="he_uniform", n_samples=300, n_train=200)
    res = sweep(cfg, seeds=(0,), depths=(1, 2), widths=(8,))
    assert res.history["grad_norm"].shape == (2, 2, 3)
    assert np.all(np.isfinite(res.history["train_loss"]))
    assert res.config.to_dict()["data"] == "digits"
    # the same arrays passed as user data give the same sweep
    arrays = make_data(cfg)
    user = replace(cfg, data=tuple(arrays))
    assert user.n_train == 200 and user.to_dict()["data"].startswith("arrays:")
    _same(res, sweep(user, seeds=(0,), depths=(1, 2), widths=(8,)))


def test_weight_var_depth_grid_is_one_program_and_each_run_equals_its_own_sweep():
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    cfg = replace(BASE, init="normal")
    grid = sweep(cfg, seeds=(0,), depths=(1, 3), widths=(4,), weight_vars=(0.5, 2.0),
                 bias_vars=(0.0, 0.3))
    assert len(grid.runs) == 8
    # the variances are traced per-run values: other values reuse the compiled program
    before = len(compiles)
    other = sweep(cfg, seeds=(0,), depths=(1, 3), widths=(4,), weight_vars=(1.0, 4.0),
                  bias_vars=(0.1, 0.2))
    assert len(compiles) == before, "other variances recompiled"
    assert not np.allclose(other.history["train_loss"], grid.history["train_loss"])
    f32 = lambda *v: np.array(v, np.float32)  # noqa: E731 - the run table holds float32
    np.testing.assert_array_equal(grid.runs.weight_var, np.tile(np.repeat(f32(0.5, 2.0), 2), 2))
    np.testing.assert_array_equal(grid.runs.bias_var, np.tile(f32(0.0, 0.3), 4))
    solo = sweep(replace(cfg, weight_var=2.0, bias_var=0.3), seeds=(0,),
                 depths=(3,), widths=(4,))
    r = int(np.flatnonzero((grid.runs.depth == 3) & (grid.runs.weight_var == 2.0)
                           & (grid.runs.bias_var == np.float32(0.3)))[0])
    keep = [0, 1, 2, -1]
    np.testing.assert_allclose(grid.history["train_loss"][r], solo.history["train_loss"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(grid.history["grad_norm"][r][:, keep],
                               solo.history["grad_norm"][0][:, keep], rtol=1e-5)


@pytest.mark.parametrize("init", ["normal", "symmetric_uniform", "orthogonal"])
def test_weight_and_bias_variances(init):
    """Kernel variance sigma_w^2 / fan_in (orthogonal: gain sqrt(sigma_w^2)); biases
    N(0, sigma_b^2) -- Monte Carlo over a wide layer."""
    p = 200
    params = init_params(jax.random.PRNGKey(0), 3, p, max_depth=3, p=p, init=init,
                         output_init=init, weight_var=2.5, bias_var=0.4)
    k = np.asarray(params["kernels"][1], np.float64)
    if init == "orthogonal":
        np.testing.assert_allclose(k.T @ k, 2.5 * np.eye(p), atol=1e-4)
    else:
        np.testing.assert_allclose(k.var(), 2.5 / p, rtol=0.03)
        assert abs(k.mean()) < 0.02 * np.sqrt(2.5 / p) * 10
    b = np.asarray(params["biases"], np.float64).ravel()
    np.testing.assert_allclose(b.var(), 0.4, rtol=0.1)
    zero = init_params(jax.random.PRNGKey(0), 3, p, max_depth=3, p=p, init=init,
                       output_init=init, weight_var=2.5, bias_var=0.0)
    np.testing.assert_array_equal(zero["biases"], 0)
    np.testing.assert_array_equal(zero["kernels"], params["kernels"])  # own streams


def test_keep_params_round_trip_and_engines_agree():
    cfg = replace(BASE, momentum=0.9)
    fast = sweep(cfg, keep_params=True, engine="fast", **GRID)
    ref = sweep(cfg, keep_params=True, engine="vmap", **GRID)
    assert fast.params["kernels"].shape == (4, 3, 4, 4)
    _same_params(ref, fast)  # keys, shapes, dtypes, values; fast's runs unpacked
    _same_params(fast, ref)  # and the reference's runs unpacked
    assert sweep(cfg, **GRID).params is None


BAD = [
    (dict(activation=lambda z: np.tanh(np.asarray(z))), "^activation: .*cannot be traced"),
    (dict(activation=lambda z: z.sum()), "^activation: .*keeps the shape"),
    (dict(activation=42), "^activation:"),
    (dict(optimizer=42), "^optimizer:"),
    (dict(optimizer=lambda lr: "sgd"), "^optimizer: .*not an optax.GradientTransformation"),
    (dict(loss=lambda logits, y: (logits - y).sum()), "^loss: .*per-example"),
    (dict(weight_var=0.0), "^weight_var:"),
    (dict(weight_var=-1.0), "^weight_var:"),
    (dict(bias_var=-0.1), "^bias_var:"),
    (dict(data="mnist"), "^data: .*did you mean|^data:"),
    (dict(data=(np.zeros((5, 2)), np.zeros(4), np.zeros((3, 2)), np.zeros(3))), "^data: .*do not match"),
    (dict(data=(np.full((4, 2), np.nan), np.array([0, 1, 0, 1.]), np.zeros((2, 2)),
                np.zeros(2))), "^data: .*NaN"),
    (dict(data=(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2))), "^data: .*single class"),
    (dict(data="digits", n_samples=5000, n_train=100), "^n_samples:"),
    (dict(loss="bce", data="digits", n_samples=300, n_train=200), "^loss: 'bce' needs two classes"),
]


@pytest.mark.parametrize("fields, match", BAD)
def test_bad_parts_are_one_line_errors_before_compiling(fields, match, monkeypatch):
    import vgjax.run.chunks as chunks_mod
    monkeypatch.setattr(chunks_mod, "compile_plan", lambda plan: pytest.fail("compiled"))
    with pytest.raises(ValueError, match=match) as err:
        sweep(replace(BASE, **fields), **GRID)
    assert "\n" not in str(err.value) and "allowed" in str(err.value)


def test_bad_variance_axes():
    with pytest.raises(ValueError, match="^weight_vars:"):
        sweep(BASE, weight_vars=(1.0, 0.0), **GRID)
    with pytest.raises(ValueError, match="^bias_vars:"):
        sweep(BASE, bias_vars=(0.1, 0.1), **GRID)


def test_loss_callable_is_kept_by_the_config():
    mse = lambda logits, y: jnp.square(jax.nn.sigmoid(logits) - y)  # noqa: E731
    cfg = replace(BASE, loss=mse)
    res = sweep(cfg, seeds=(0,), depths=(2,), widths=(3,))
    step = make_step(cfg, max_depth=2, p=3)
    assert step.loss is mse
    assert np.all(np.isfinite(res.history["train_loss"]))


def test_a_loaded_config_with_objects_shows_but_does_not_train():
    """Objects are recorded by description; such a config loads (for show/plots) but
    training it again is refused with one line naming the field."""
    arrays = tuple(make_data(BASE))
    cfg = replace(BASE, activation=jnp.tanh, data=arrays)
    loaded = Config.from_dict(cfg.to_dict())
    assert loaded.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match="^(activation|data): .*loaded config"):
        sweep(loaded, **GRID)
