"""The one definition of a run's final value, "learns", seed statistics and configs
(vgjax.result), checked by hand and against NumPy."""

import warnings

import numpy as np
import pytest

from tests.test_figures import _build
from vgjax.result import (GROUP_FIELDS, LEARN_THRESHOLD, final_metric, group_indices, learns,
                          seed_stats)


@pytest.fixture(scope="module")
def res():
    return _build(diverged={(1, 3, 4, 0.01): 3, (2, 1, 2, 0.01): 1})


def test_group_indices_product_order(res):
    g = group_indices(res)
    # Runs are seeds x depths x widths (seed outermost): run = 4*s + 2*di + wi. Default
    # variances: weight_var 1, bias_var 0.
    lr = pytest.approx(0.01)
    assert list(g) == [(1, 2, lr, 1.0, 0.0, "none", "none"), (1, 4, lr, 1.0, 0.0, "none", "none"),
                       (3, 2, lr, 1.0, 0.0, "none", "none"), (3, 4, lr, 1.0, 0.0, "none", "none")]
    np.testing.assert_array_equal(g[(1, 2, float(np.float32(0.01)), 1.0, 0.0, "none", "none")], [0, 4, 8])
    np.testing.assert_array_equal(g[(3, 4, float(np.float32(0.01)), 1.0, 0.0, "none", "none")], [3, 7, 11])
    for k, v in g.items():
        assert isinstance(k[0], int) and isinstance(k[1], int)
        assert all(isinstance(x, float) for x in k[2:5]) and k[5:] == ("none", "none")
        assert v.dtype == np.int64
    assert sorted(np.concatenate(list(g.values())).tolist()) == list(range(len(res.runs)))


def test_group_indices_does_not_assume_order():
    order = [5, 0, 7, 2, 4, 1, 6, 3]
    r = _build(seeds=(0, 1), depths=(1, 2), widths=(3,), lrs=(0.1, 0.5), order=order)
    g = group_indices(r)
    assert len(g) == 4
    for (d, w, lr, wv, bv, res, norm), idx in g.items():
        assert (wv, bv, res, norm) == (1.0, 0.0, "none", "none")
        assert np.all(r.runs.depth[idx] == d) and np.all(r.runs.width[idx] == w)
        assert np.allclose(r.runs.lr[idx], lr)
        assert sorted(r.runs.seed[idx].tolist()) == [0, 1]
        assert np.all(np.diff(idx) > 0)
    # Hand check: original product rows (s, d, w, lr) -> the reordered positions.
    key = (2, 3, float(np.float32(0.5)), 1.0, 0.0, "none", "none")  # original rows 3 (s0) and 7 (s1)
    np.testing.assert_array_equal(g[key], sorted([order.index(3), order.index(7)]))


def test_final_metric_hand_values():
    r = _build(seeds=(0,), depths=(1,), widths=(2, 3, 4, 5), epochs=5,
               diverged={(0, 1, 3, 0.01): 3, (0, 1, 4, 0.01): 1})
    h = r.history
    curve = np.array([[0.1, 0.2, 0.3, 0.4, 0.5],           # never diverged
                      [0.1, 0.2, 0.9, np.nan, np.nan],     # diverged in epoch 3: epoch 3 is junk
                      [0.7, np.nan, np.nan, np.nan, np.nan],  # diverged in epoch 1
                      [0.1, 0.2, 0.3, np.nan, np.nan]],    # not diverged, trailing NaN
                     np.float32)
    h["test_accuracy"][:] = curve
    out = final_metric(r, "test_accuracy")
    assert out.shape == (4,)
    np.testing.assert_allclose(out[[0, 1, 3]], [0.5, 0.2, 0.3], rtol=1e-6)
    assert np.isnan(out[2])
    # Passing an array works the same way.
    np.testing.assert_array_equal(final_metric(r, curve), out)


def test_final_metric_gap_before_divergence_and_layers():
    r = _build(seeds=(0, 1), depths=(1, 2), widths=(3,), epochs=4, diverged={(1, 2, 3, 0.01): 4})
    # Run 3 (seed 1, depth 2) diverged in epoch 4; make epoch 3 NaN too -> falls back to epoch 2.
    arr = np.array(r.history["train_loss"])
    arr[3] = [1.0, 2.0, np.nan, np.nan]
    np.testing.assert_allclose(final_metric(r, arr)[3], 2.0)
    # Per-layer stats [R, E, L] -> [R, L]; a depth-1 run has no layer 2 (index 1).
    fl = final_metric(r, "grad_mean_abs")
    assert fl.shape == (4, 3)
    assert np.isnan(fl[0, 1]) and np.isfinite(fl[0, 0]) and np.isfinite(fl[0, 2])
    np.testing.assert_allclose(fl[3], r.history["grad_mean_abs"][3, 2], rtol=1e-6)
    np.testing.assert_allclose(fl[1], r.history["grad_mean_abs"][1, -1], rtol=1e-6)


def test_final_metric_errors(res):
    with pytest.raises(KeyError):
        final_metric(res, "nope")
    with pytest.raises(ValueError):
        final_metric(res, np.zeros((3, 4)))


def test_nan_stats_no_warnings():
    a = np.array([[1.0, np.nan, np.inf], [3.0, np.nan, 2.0]])
    with np.errstate(all="raise"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            st = seed_stats(a)
    np.testing.assert_allclose(st["mean"], [2.0, np.nan, 2.0])
    np.testing.assert_allclose(st["std"], [1.0, np.nan, 0.0])
    np.testing.assert_allclose(st["min"], [1.0, np.nan, 2.0])
    np.testing.assert_array_equal(st["n"], [2, 0, 1])


def test_seed_stats_equal_numpy_on_the_finite_entries():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    a[rng.random(a.shape) < 0.3] = np.nan
    a[0, 1] = np.inf
    st = seed_stats(a)
    for j in range(a.shape[1]):
        v = a[:, j][np.isfinite(a[:, j])].astype(np.float64)
        assert st["n"][j] == v.size
        if v.size:
            np.testing.assert_allclose([st["mean"][j], st["std"][j], st["min"][j], st["max"][j]],
                                       [v.mean(), v.std(), v.min(), v.max()], rtol=1e-12)
    # along another axis too
    np.testing.assert_allclose(seed_stats(a.T, axis=1)["mean"], st["mean"], rtol=1e-12)


def test_a_diverged_run_never_learns():
    acc = np.array([0.9, 0.9, 0.7, 0.69, np.nan], np.float32)
    div = np.array([-1, 5, -1, -1, -1])
    # run 1 reached 0.9 before diverging: it does not learn; float32(0.7) reaches 0.7
    assert learns(acc, div).tolist() == [True, False, True, False, False]
    assert learns(acc, div, 0.95).tolist() == [False] * 5
    assert LEARN_THRESHOLD == 0.7
    with pytest.raises(ValueError, match="learn_threshold"):
        learns(acc, div, 1.5)


def test_group_key_fields_are_the_one_list(res):
    assert GROUP_FIELDS == ("depth", "width", "lr", "weight_var", "bias_var", "residual", "norm")
    for key, idx in group_indices(res).items():
        for f, v in zip(GROUP_FIELDS, key):
            assert np.all(np.asarray(getattr(res.runs, f))[idx] == v)
