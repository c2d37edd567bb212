"""The two-circles data: shapes, dtype, scaling fitted on all points, split order."""

import numpy as np
from sklearn.datasets import make_circles

from vgjax.config import Config
from vgjax.data import make_data


def test_default_split_and_scaling():
    d = make_data(Config())
    assert d.x_train.shape == (500, 2) and d.x_test.shape == (500, 2)
    assert d.y_train.shape == (500,) and d.y_test.shape == (500,)
    assert all(a.dtype == np.float32 for a in d)
    x = np.concatenate([d.x_train, d.x_test])
    # The scaler is fitted on all 1000 points: each feature spans exactly [-1, 1].
    np.testing.assert_allclose(x.min(0), [-1, -1], atol=1e-6)
    np.testing.assert_allclose(x.max(0), [1, 1], atol=1e-6)
    assert set(np.unique(d.y_train)) == {0.0, 1.0}


def test_matches_sklearn_order():
    raw, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
    d = make_data(Config())
    lo, hi = raw.min(0), raw.max(0)
    expected = (raw - lo) / (hi - lo) * 2 - 1
    np.testing.assert_allclose(d.x_train, expected[:500], atol=1e-6)
    np.testing.assert_array_equal(d.y_test, y[500:])


def test_configurable():
    d = make_data(Config(n_samples=200, n_train=150, noise=0.0, data_seed=3, batch_size=32))
    assert d.x_train.shape == (150, 2) and d.x_test.shape == (50, 2)
    # noise 0: every point lies on one of the two circles (radius ratio 0.8 in raw units)
    raw, _ = make_circles(n_samples=200, noise=0.0, random_state=3)
    r = np.sort(np.unique(np.round(np.hypot(raw[:, 0], raw[:, 1]), 6)))
    np.testing.assert_allclose(r, [0.8, 1.0])
