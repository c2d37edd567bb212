"""The adding problem and the copy task: structure, padding, and chance baselines checked by
Monte Carlo against their closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax.recurrent import tasks as rt


def test_adding_problem_has_one_marker_per_half_and_baseline_one_sixth():
    task = rt.make_task("adding")
    length, t_max, batch = 9, 14, 4096
    b = jax.jit(lambda k: rt.sample(task, k, length, t_max, batch))(jax.random.PRNGKey(0))
    x, y, w = (np.asarray(a) for a in b)
    markers = x[..., 1]
    assert (markers[:length // 2].sum(0) == 1).all() and (markers[length // 2:].sum(0) == 1).all()
    assert (x[length:] == 0).all()                                       # padding is silent
    np.testing.assert_allclose(y[0], (x[..., 0] * markers).sum(0), rtol=1e-6)
    assert (w[length - 1] == 1).all() and w.sum() == batch               # read after step T
    ones = jnp.ones((t_max, batch, 1))
    mse = float(rt.example_losses(task, ones, b).mean())
    # Var(U1 + U2) = 1/6; 4096 samples give its standard error ~ 0.003
    assert abs(mse - rt.baseline(task, length)) < 0.012


@pytest.mark.parametrize("task", [rt.make_task("adding"), rt.make_task("copy", copy_len=3)])
def test_a_sequence_does_not_depend_on_its_padding(task):
    """The same key and length give the same sequence whatever length it is padded to, so a
    run trains on the same data whichever other runs share its grid (and its scan)."""
    key, length = jax.random.PRNGKey(3), 7
    steps = rt.task_steps(task, length)
    short = rt.sample(task, key, length, steps, 5)
    long = rt.sample(task, key, length, steps + 9, 5)
    for a, b in zip(short, long):
        np.testing.assert_array_equal(np.asarray(b)[:steps], np.asarray(a))
    assert not np.asarray(long.x)[steps:].any() and not np.asarray(long.weight)[steps:].any()


@pytest.mark.parametrize("length", [3, 20])
def test_copy_task_layout_and_memoryless_baseline(length):
    task = rt.make_task("copy", n_symbols=8, copy_len=5)
    k, steps, t_max, batch = 5, length + 10, 40, 64
    b = rt.sample(task, jax.random.PRNGKey(1), length, t_max, batch)
    x, y, w = (np.asarray(a) for a in b)
    tokens = x.argmax(-1)
    assert (x[:steps].sum(-1) == 1).all() and (x[steps:] == 0).all()
    assert ((tokens[:k] >= 1) & (tokens[:k] <= 8)).all()
    assert (tokens[k + length - 1] == 9).all()                          # the go marker
    np.testing.assert_array_equal(y[length + k:steps], tokens[:k])       # recall the symbols
    assert (y[:length + k] == 0).all()
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-5)
    # memoryless: blank for sure until the recall, then uniform over the 8 symbols
    logits = np.full((t_max, batch, 9), -1e4, np.float32)
    logits[:length + k, :, 0] = 0.0
    logits[length + k:, :, 1:] = 0.0
    loss = np.asarray(rt.example_losses(task, jnp.asarray(logits), b))
    np.testing.assert_allclose(loss, k * math.log(8) / steps, rtol=1e-5)
    assert rt.baseline(task, length) == pytest.approx(k * math.log(8) / steps)


def test_bad_task_values_are_refused_in_one_line():
    with pytest.raises(ValueError, match="task: 'add' is not known; allowed: adding, copy"):
        rt.make_task("add")
    with pytest.raises(ValueError, match="copy_len: 0 is out of range"):
        rt.make_task("copy", copy_len=0)
    with pytest.raises(ValueError, match="length: 1 is out of range"):
        rt.check_length(1)
