"""The fast runs-last engine against the vmap reference engine (itself checked against an
independent NumPy implementation in test_train.py)."""

import jax
import numpy as np
import pytest

from tests.test_wide import _compare  # every engine against the vmap one, the same way
from vgjax.engines import fast
from vgjax.engines import shuffle
from vgjax.config import Config
from vgjax.run.chunks import sweep


def test_permutations_are_bit_identical_to_jax():
    keys = jax.random.split(jax.random.PRNGKey(11), 2000)
    for n in (7, 33, 500):
        ours = np.asarray(shuffle.permutations(keys, n))
        ref = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n))(keys))
        np.testing.assert_array_equal(ours, ref)
    # the tie repair must have been exercised: some rows have equal top key bits
    bits = np.asarray(jax.vmap(lambda k: shuffle._random_sort_keys(k, 500))(keys))
    hi = np.sort(bits >> 9, axis=1)
    assert (hi[:, 1:] == hi[:, :-1]).any()


@pytest.mark.parametrize("activation, init, momentum", [
    ("tanh", "uniform", 0.9),
    ("relu", "he_uniform", 0.9),
    ("sigmoid", "glorot_uniform", 0.0),
])
def test_fast_equals_vmap(activation, init, momentum):
    cfg = Config(activation=activation, init=init, output_init="glorot_uniform",
                 momentum=momentum, epochs=4, hist_every=2)
    _compare(cfg, "fast", seeds=(0, 1), depths=(1, 3), widths=(3, 5))


def test_fast_equals_vmap_with_adam_and_a_named_activation_off_its_list():
    cfg = Config(activation="elu", init="he_uniform", optimizer="adam", lr=0.01, epochs=2,
                 hist_every=1)
    _compare(cfg, "fast", keep_params=True, seeds=(0, 1), depths=(1, 3), widths=(3, 5))


def test_fast_equals_vmap_deep_and_wide_in_one_grid():
    cfg = Config(activation="tanh", init="glorot_uniform", epochs=3, hist_every=3)
    _compare(cfg, "fast", seeds=(0,), depths=(1, 9), widths=(2, 11))


def test_a_nan_run_leaves_the_others_bit_identical():
    cfg = Config(activation="relu", epochs=4, hist_every=2)
    sane = sweep(cfg, seeds=(0, 1), depths=(3,), lrs=(0.01, 0.02), engine="fast")
    bad = sweep(cfg, seeds=(0, 1), depths=(3,), lrs=(0.01, 1e30), engine="fast")
    keep = bad.runs.lr == np.float32(0.01)
    assert np.all(bad.runs.diverged_epoch[~keep] == 1)
    for k in sane.history:
        if k not in ("hist_epochs", "hist_edges"):  # shared, not per run
            np.testing.assert_array_equal(sane.history[k][keep], bad.history[k][keep], err_msg=k)


def test_engine_choice():
    assert fast.supports(Config(activation="tanh"))
    assert fast.supports(Config(optimizer="adam"))
    assert fast.supports(Config(activation="elu"))
    assert not fast.supports(Config(test_gradients=True))
    assert not fast.supports(Config(data="digits"))
    with pytest.raises(ValueError, match="^engine:"):
        sweep(Config(test_gradients=True, epochs=1), engine="fast")
    with pytest.raises(ValueError, match="did you mean 'fast'"):
        sweep(Config(epochs=1), engine="fats")
