"""The wide (batched-matmul) engine against the vmap reference engine, the float64 NumPy
reference, numpy's own histogram, and the planning rules around it (engine choice and
depth-sorted blocks)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.test_train import _reference_run
from vgjax import diagnostics as diag
from vgjax.config import Config, Grid
from vgjax.data import data_dims
from vgjax.diagnostics import HIST_EDGES
from vgjax.engines import choose_engine, depth_blocks
from vgjax.model import unpack_run
from vgjax.grid.plan import default_mesh, make_plan
from vgjax.run.chunks import sweep


# digits: 64 features, 10 classes, the softmax cross-entropy on 10 logits
DIGITS = dict(data="digits", n_samples=120, n_train=80, batch_size=32)


def _compare(config, engine, keep_params=False, **grid):
    """Every history array of ``engine`` equals the vmap engine's to float32 rounding; with
    ``keep_params`` so do the final parameters, and each run's unpack to its exact layers."""
    ref = sweep(config, engine="vmap", keep_params=keep_params, **grid)
    got = sweep(config, engine=engine, keep_params=keep_params, **grid)
    if keep_params:
        _same_params(ref, got)
    _same_history(ref, got)


def _same_history(ref, got):
    """Every history array and the divergence epochs equal to float32 rounding."""
    assert ref.history.keys() == got.history.keys()
    for k, a in ref.history.items():
        b = got.history[k]
        assert a.shape == b.shape and a.dtype == b.dtype, k
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
            m = np.isfinite(a)
            # accuracies can flip one point (1/500) and signed histogram sums cancel
            tol = 2.5e-3 if "accuracy" in k else 1e-3 if "hist_stats" in k else 2e-5
            np.testing.assert_allclose(b[m], a[m], rtol=tol, atol=tol * 1e-2, err_msg=k)
        elif "hist" in k:  # a value on a bucket edge may land one bucket over: a few moved
            # counts (each moves 1 out of one bucket into its neighbour), none lost
            moved = np.abs(a.astype(np.int64) - b).sum(-1) // 2  # per histogram
            assert moved.max() <= max(2, 1e-3 * a.sum(-1).max()), k
            np.testing.assert_array_equal(a.sum(-1), b.sum(-1), err_msg=k)
        else:
            np.testing.assert_array_equal(a, b, err_msg=k)
    np.testing.assert_array_equal(ref.runs.diverged_epoch, got.runs.diverged_epoch)


def _same_params(ref, got):
    assert got.params.keys() == ref.params.keys()
    for k in ref.params:
        assert got.params[k].shape == ref.params[k].shape, k
        assert got.params[k].dtype == ref.params[k].dtype, k
        np.testing.assert_allclose(got.params[k], ref.params[k], rtol=1e-4, atol=1e-6, err_msg=k)
    f = data_dims(got.config)[0]
    for r in range(len(got.runs)):  # each run's exact layers: their L1 is the history's
        d, w = int(got.runs.depth[r]), int(got.runs.width[r])
        layers = unpack_run(got.params, d, w, run=r, n_features=f)
        assert list(layers) == [f"dense_{i + 1}" for i in range(d)] + ["output"]
        l1 = [np.abs(layers[f"dense_{i + 1}"]["kernel"]).sum() for i in range(d)]
        l1.append(np.abs(layers["output"]["kernel"]).sum())
        np.testing.assert_allclose(got.history["weight_l1"][r, -1][list(range(d)) + [-1]], l1,
                                   rtol=1e-5)


@pytest.mark.parametrize("activation, init, momentum", [
    ("tanh", "glorot_uniform", 0.9),
    ("relu", "he_uniform", 0.0),
])
def test_wide_equals_vmap_on_a_wide_grid(activation, init, momentum):
    cfg = Config(activation=activation, init=init, output_init="glorot_uniform",
                 momentum=momentum, epochs=3, hist_every=2)
    _compare(cfg, "wide", seeds=(0, 1), depths=(1, 4), widths=(48, 64))


@pytest.mark.parametrize("optimizer, activation, lrs", [
    ("adam", "gelu", ()),
    # LAMB scales each leaf's step by its own norm ratio, and its weight decay moves the
    # parameters of layers a run lacks: the optimizer must see the reference's per-run
    # pytree, absent layers included; each run has its own traced learning rate
    (lambda lr: optax.lamb(lr, weight_decay=0.1), jax.nn.swish, (0.01, 0.002)),
])
def test_wide_equals_vmap_with_any_optimizer_and_activation(optimizer, activation, lrs):
    cfg = Config(activation=activation, init="glorot_uniform", optimizer=optimizer, lr=0.01,
                 epochs=2, hist_every=1)
    _compare(cfg, "wide", keep_params=True, seeds=(0, 1), depths=(1, 3), widths=(12,),
             lrs=lrs)


def test_wide_equals_vmap_on_digits_with_the_softmax_cross_entropy():
    # 64 inputs (a matmul first layer), 10 logits, an optax optimizer over the gradient
    # pytree (the NumPy test below checks a fused one on digits)
    cfg = Config(activation="relu", init="he_uniform", lr=0.01, epochs=2, hist_every=1,
                 optimizer=lambda lr: optax.adamw(lr, weight_decay=0.1), **DIGITS)
    _compare(cfg, "wide", keep_params=True, seeds=(0,), depths=(1, 3), widths=(12,))


def _arrays(n_features, n_classes, n_train=40, n_test=20):
    """A random data set ``(x_train, y_train, x_test, y_test)``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train + n_test, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, n_train + n_test).astype(np.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.parametrize("activation, init, data", [
    ("tanh", "glorot_uniform", None),
    # 5 inputs: the Jacobian's spectrum by one-sided Jacobi; ReLU: dead units; 3 classes
    ("relu", "he_uniform", _arrays(5, 3)),
])
def test_wide_records_the_signal_probe_as_vmap_does(activation, init, data):
    # the wide engine takes the per-layer probe from its evaluation pass and the Jacobian
    # by forward mode through its own layer loop; the vmap engine from probes' own scan
    cfg = Config(activation=activation, init=init, epochs=2, hist_every=1,
                 probes=("signal",), **({} if data is None else {"data": data}))
    _compare(cfg, "wide", seeds=(0,), depths=(1, 3), widths=(12,))


def test_wide_equals_vmap_with_depth_sorted_blocks():
    # 12 runs of depths 1, 2, 6 in run-table order (seed outermost): the chunk is sorted
    # by depth into blocks inside the program, and outputs (histories and final parameters)
    # must come back in table order.
    cfg = Config(activation="sigmoid", init="glorot_uniform", epochs=2, hist_every=1)
    grid = dict(seeds=(0, 1, 2, 3), depths=(6, 1, 2), widths=(20,))
    plan = make_plan(cfg, Grid((0, 1, 2, 3), (6, 1, 2), (20,)), engine="wide",
                     mesh=default_mesh(jax.devices()[:1]))
    assert [g.n_blocks for g in plan.groups] == [3]
    _compare(cfg, "wide", keep_params=True, mesh=default_mesh(jax.devices()[:1]), **grid)


@pytest.mark.parametrize("optimizer, lr, data", [("sgd", 0.05, {}), ("adam", 0.003, {}),
                                                 ("adam", 0.003, DIGITS)])
def test_wide_matches_numpy_reference_at_width_64(optimizer, lr, data):
    config = Config(activation="tanh", init="glorot_uniform", output_init="glorot_uniform",
                    optimizer=optimizer, lr=lr, epochs=2, hist_every=0, **data)
    seed, depth, width = 3, 3, 64
    res = sweep(config, seeds=(seed,), depths=(depth, 5), widths=(width,), engine="wide")
    ref = _reference_run(config, seed, depth, width, 5, width)
    for e, rec in enumerate(ref):
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            np.testing.assert_allclose(res.history[name][0, e], rec[name], rtol=2e-4,
                                       atol=1e-5, err_msg=name)
        present = list(range(depth)) + [5]
        for name in ("grad_mean_abs", "grad_norm", "weight_l1"):
            np.testing.assert_allclose(res.history[name][0, e, present], rec[name], rtol=2e-4,
                                       atol=1e-7, err_msg=name)
        assert np.all(np.isnan(res.history["grad_mean_abs"][0, e, depth:5]))


def test_histogram_counts_like_numpy():
    rng = np.random.default_rng(0)
    vals = rng.standard_normal((3, 400)).astype(np.float32) * 10.0 ** rng.uniform(-12, 4, (3, 400))
    vals[0, :5] = HIST_EDGES[[0, 1, 50, 53, 105]]  # exactly on edges (incl. the outer ones)
    vals[1, :3] = [0.0, -0.0, 5e3]
    # every edge and the floats just beside it, +-inf, subnormals, huge values: buckets come
    # from the floats' bit patterns, so the edges are where an off-by-one would show
    e = HIST_EDGES.astype(np.float32)
    up, down = np.nextafter(e, np.float32(np.inf)), np.nextafter(e, np.float32(-np.inf))
    tricky = np.concatenate([e, up, down,
                             np.float32([np.inf, -np.inf, 1e-40, -1e-40, 1e-45, 3e38, -3e38])])
    vals = np.concatenate([vals, np.broadcast_to(tricky, (3, tricky.size))], axis=1)
    mask = rng.uniform(size=vals.shape) < 0.8
    counts, stats = (np.asarray(a) for a in diag.bucket_histogram(jnp.asarray(vals), jnp.asarray(mask)))
    for r in range(3):
        v = vals[r, mask[r]]
        # bucket = number of inner edges <= value (values beyond the ends land in the ends)
        idx = np.searchsorted(HIST_EDGES[1:-1], v, side="right")
        np.testing.assert_array_equal(counts[r], np.bincount(idx, minlength=counts.shape[1]))
        assert counts[r].sum() == v.size
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, as on device
            ref = [v.min(), v.max(), v.sum(), (v.astype(np.float64) ** 2).sum()]
        np.testing.assert_allclose(stats[r], ref, rtol=1e-5)


def test_depth_blocks_follow_the_depths():
    depths = np.tile([4, 8, 16, 32], 8)  # W-wide: seed outermost
    assert depth_blocks(depths, 32, 2) == 4  # one block per depth
    assert depth_blocks(np.full(32, 16), 32, 2) == 1  # nothing to gain
    # blocks hold a multiple of the device count, and respect a memory cap
    assert 32 // depth_blocks(depths, 32, 8) % 8 == 0
    assert 32 // depth_blocks(np.full(32, 16), 32, 2, max_block=8) <= 8


def test_engine_choice_by_backend_width_and_config():
    cpu = default_mesh(jax.devices()[:1])
    assert choose_engine(Config(activation="tanh"), 5, cpu) == "fast"
    assert choose_engine(Config(activation="tanh"), 128, cpu) == "wide"
    # the hand-written backward passes take any optimizer and any activation
    assert choose_engine(Config(optimizer="adam"), 128, cpu) == "wide"
    assert choose_engine(Config(optimizer="adam", activation=jax.nn.swish), 5, cpu) == "fast"
    assert choose_engine(Config(activation="gelu"), 128, cpu) == "wide"
    # only what needs jax.grad of the whole model takes the reference engine
    assert choose_engine(Config(activation="relu", test_gradients=True), 128, cpu) == "vmap"
    assert choose_engine(Config(activation="relu", loss=optax.l2_loss), 128, cpu) == "vmap"
    # any data and the softmax cross-entropy: the wide engine, at any width (the fast
    # engine covers two features and one logit only)
    assert choose_engine(Config(loss="softmax_ce", data="digits"), 64, cpu) == "wide"
    assert choose_engine(Config(loss="softmax_ce"), 5, cpu) == "wide"
    plan = make_plan(Config(activation="tanh", epochs=1), Grid((0,), (2,), (128,)))
    assert plan.engine == "wide"
    with pytest.raises(ValueError, match="^engine: 'wide' does not cover"):
        make_plan(Config(test_gradients=True, epochs=1), Grid(), engine="wide")
    with pytest.raises(ValueError, match="^engine: 'fast' does not cover"):
        make_plan(Config(data="digits", epochs=1), Grid(), engine="fast")


def test_benchmark_table_marks_each_wide_target():
    from vgjax.bench import render_wide
    rows = [dict(name="W-wide", depths=[4, 8], width=128, seeds=8, engine="wide", n_blocks=2,
                 compile_s=8.0, train_s=20.0, useful_gflop_per_s=30.0,
                 ceiling_gflop_per_s=50.0, ceiling_fraction=0.6, target_fraction=0.5),
            dict(name="w512-d16", depths=[16], width=512, seeds=4, engine="wide", n_blocks=1,
                 compile_s=12.0, train_s=20.0, useful_gflop_per_s=25.0,
                 ceiling_gflop_per_s=50.0, ceiling_fraction=0.5, target_fraction=0.6)]
    cross = [dict(width=5, fast=dict(ms_per_run_epoch=0.05, compile_s=9.0),
                  wide=dict(ms_per_run_epoch=0.2, compile_s=6.0))]
    lines = "\n".join(render_wide({"wide": rows, "crossover": cross,
                                   "reproduce": {"total_s": 540.0}}))
    assert "60 % (>= 50 %: met)" in lines and "50 % (>= 60 %: missed)" in lines
    assert "8.0 s (<= 10 s: met)" in lines and "12.0 s (<= 10 s: missed)" in lines
    assert "| 5 | 0.0500 | 0.2000 |" in lines and "9.0 min" in lines
    assert render_wide({}) == []
