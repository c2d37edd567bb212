"""The recurrent training grid: a run inside the one-program grid (masked inside a longer
scan, beside other cells) trains exactly as the same net built with Flax's nn.RNN and trained
by a plain optax loop; files round-trip; bad values are refused before compiling."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vgjax.recurrent import cells as rc
from vgjax.recurrent import grid as rg
from vgjax.recurrent import tasks as rt

SPEC = rg.TrainSpec(task=rt.make_task("copy", copy_len=2), width=6, batch_size=4, steps=4,
                    eval_every=2, test_size=8, flow_examples=4, optimizer=optax.adam(0.05))


def _flax_loop(run: rg.RunSpec, spec: rg.TrainSpec) -> np.ndarray:
    """The run trained by hand: Flax nn.RNN over nn.LSTMCell, batches and init from the
    run's key streams, clip + Adam from optax."""
    task, n = spec.task, spec.width
    k_init, k_train, _ = jax.random.split(jax.random.PRNGKey(run.seed), 3)
    init = rc.InitSpec(jnp.int32(rc.INITS.index(run.init)), jnp.float32(run.scale),
                       jnp.float32(run.forget_bias), jnp.float32(run.bias_var))
    p = rc.init_cell(k_init, "lstm", n_inputs=task.n_inputs, width=n,
                     n_outputs=task.n_outputs, spec=init)
    blk = lambda w, k: w[..., k * n:(k + 1) * n]
    # the cell is built in Net's scope, so its parameters sit at Net's top level
    params = {"LSTMCell_0": {**{f"i{g}": {"kernel": blk(p.wx, k)} for k, g in enumerate("ifgo")},
                             **{f"h{g}": {"kernel": blk(p.wh, k), "bias": blk(p.b, k)}
                                for k, g in enumerate("ifgo")}},
              "out": {"kernel": p.wo, "bias": p.bo}}
    steps = rt.task_steps(task, run.length)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):                       # x [B, T, D]
            return nn.Dense(task.n_outputs, name="out")(nn.RNN(nn.LSTMCell(n), name="rnn")(x))

    def loss_fn(prm, x, y):                          # exactly `steps` steps, no padding
        logp = jax.nn.log_softmax(Net().apply({"params": prm}, x), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1).sum(axis=(1, 2)) / steps)

    tx = optax.chain(optax.clip_by_global_norm(run.clip_norm), spec.optimizer)
    opt = tx.init(params)
    losses = []
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    for i in range(spec.steps):
        b = rt.sample(task, jax.random.fold_in(k_train, i), run.length, steps, spec.batch_size)
        x, y = jnp.swapaxes(b.x, 0, 1), jnp.swapaxes(b.y, 0, 1).astype(jnp.int32)
        loss, g = value_and_grad(params, x, y)
        upd, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, upd)
        losses.append(float(loss))
    return np.asarray(losses)


def test_a_grid_run_trains_as_the_flax_net_does():
    runs = [rg.RunSpec("lstm", 3, seed=1, clip_norm=0.5),      # 7 steps, its own scan
            rg.RunSpec("lstm", 9, seed=2),
            rg.RunSpec("rnn", 4, seed=1, activation="relu", init="identity")]
    res = rg.run_grid(runs, SPEC)
    assert res.train_loss.shape == (3, 4) and res.log_norm.shape == (3, 3, 13)
    np.testing.assert_allclose(res.train_loss[0], _flax_loop(runs[0], SPEC), rtol=2e-5)
    assert res.train_loss[0, -1] < res.train_loss[0, 0]
    # gradient flow is recorded inside each run's own steps only
    assert np.isfinite(res.log_norm[0, :, :7]).all() and np.isnan(res.log_norm[0, :, 7:]).all()
    assert np.isnan(res.saturation[2]).all() and np.isfinite(res.saturation[:2]).all()


def test_the_grid_program_calls_no_library():
    # A LAPACK call per cell group (geqrf of the orthogonal init, gesdd of lambda1) ran
    # concurrently on XLA:CPU's intra-op pool and deadlocked the 72-run bench grid (every
    # thread waiting on a lock); lax ops only, for every cell (each run computes every init
    # and picks its own, so one run per cell covers them all).
    runs = [rg.RunSpec(c, 3, seed=0) for c in rc.CELLS]
    hlo = rg.lower_grid(runs, SPEC).lowered.as_text()
    assert "custom_call" not in hlo and "lapack" not in hlo.lower()


def test_files_round_trip(tmp_path):
    runs = [rg.RunSpec("rnn", 3, seed=0), rg.RunSpec("rnn", 2, seed=1, init="normal")]
    res = rg.run_grid(runs, SPEC)
    rg.write_grid(res, SPEC, tmp_path)
    hist = rg.read_history(tmp_path)
    for name in rg.HISTORY_ARRAYS:
        np.testing.assert_array_equal(hist[name], getattr(res, name))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["label"] for r in summary["runs"]] == ["rnn-tanh-orthogonal-1", "rnn-tanh-normal-1"]
    assert summary["runs"][1]["final_test_loss"] == pytest.approx(float(res.test_loss[1, -1]),
                                                                 rel=1e-6)


@pytest.mark.parametrize("run,message", [
    (rg.RunSpec("lstn", 5, 0), "cell: 'lstn' is not known"),
    (rg.RunSpec("rnn", 1, 0), "length: 1 is out of range"),
    (rg.RunSpec("rnn", 5, 0, clip_norm=0.0), "clip_norm: 0.0 is out of range"),
    (rg.RunSpec("rnn", 5, 0, init="eye"), "init: unknown value 'eye'.*; allowed: normal, "
     "orthogonal, identity")])
def test_bad_runs_are_refused_in_one_line(run, message):
    with pytest.raises(ValueError, match=message):
        rg.check_runs([run], SPEC)
