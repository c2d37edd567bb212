"""Histograms against numpy.histogram / numpy.digitize on the same edges, exactly, for both
engines, on random and adversarial values."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests import reference
from vgjax import diagnostics as diag
from vgjax.engines import fast

EDGES = diag.HIST_EDGES


def _adversarial(rng, n):
    f32 = np.float32
    special = np.concatenate([
        EDGES, np.nextafter(EDGES, f32(np.inf)), np.nextafter(EDGES, f32(-np.inf)),  # edges +-1 ulp
        [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1e-12, -1e-12],                     # zeros, tiny
        [3e38, -3e38, 1e4, -1e4, np.inf, -np.inf, np.nan, np.nan],                    # huge, inf, nan
    ]).astype(f32)
    rand = (rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 5, n)).astype(f32)
    v = np.concatenate([special, rand])
    return v[rng.permutation(v.size)][:n]


def _numpy_counts(vals, mask):
    """Per layer: numpy.histogram of the clipped non-NaN values, and the same by digitize."""
    out = []
    for v, m in zip(vals, mask):
        v = v[m]
        by_hist = reference.histogram(v, EDGES)
        v = v[~np.isnan(v)]
        idx = np.clip(np.digitize(v, EDGES[1:-1], right=False), 0, EDGES.size - 2)
        np.testing.assert_array_equal(by_hist, np.bincount(idx, minlength=EDGES.size - 1))
        out.append(by_hist)
    return np.stack(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_histograms_equal_numpy_for_both_engines(seed):
    rng = np.random.default_rng(seed)
    d, p = 3, 12
    kern = _adversarial(rng, d * p * p).reshape(d, p, p)
    ko = _adversarial(rng, p)
    hmask = rng.random((d, p, p)) < 0.8
    omask = rng.random(p) < 0.8
    vals = np.concatenate([kern.reshape(d, -1), np.pad(ko, (0, p * p - p))[None]])
    mask = np.concatenate([hmask.reshape(d, -1), np.pad(omask, (0, p * p - p))[None]])
    want = _numpy_counts(vals, mask)
    assert want.sum() < mask.sum()  # some NaN were left out

    counts, stats = diag.histogram({"kernels": jnp.asarray(kern), "out_kernel": jnp.asarray(ko)},
                                   jnp.asarray(hmask), jnp.asarray(omask))
    np.testing.assert_array_equal(np.asarray(counts), want)
    # the fast engine's runs-last layout, two runs: the same values and the values negated
    k2 = jnp.asarray(np.stack([kern, -kern], -1))
    o2 = jnp.asarray(np.stack([ko, -ko], -1))
    h2, m2 = (jnp.asarray(np.stack([a, a], -1)) for a in (hmask, omask))
    fcounts, fstats = fast.histogram(k2, o2, h2, m2)
    np.testing.assert_array_equal(np.asarray(fcounts)[..., 0], want)
    np.testing.assert_array_equal(np.asarray(fcounts)[..., 1], _numpy_counts(-vals, mask))
    # min and max are exact; NaN is in no statistic
    for layer in range(d + 1):
        v = vals[layer][mask[layer]]
        v = v[~np.isnan(v)]
        np.testing.assert_array_equal(np.asarray(stats)[layer, :2], [v.min(), v.max()])
        np.testing.assert_array_equal(np.asarray(fstats)[layer, :2, 0], [v.min(), v.max()])
