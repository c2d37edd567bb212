"""The recurrent training grid: a run inside the one-program grid (masked inside a longer
scan, beside other cells) trains exactly as the same net built with Flax's nn.RNN and trained
by a plain optax loop; files round-trip; bad values are refused before compiling."""

import json
from typing import NamedTuple

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


class FlaxRun(NamedTuple):
    """A run trained by hand: its training losses [steps], and per layer the norms of the
    gradient of the loss on the flow's test sequences, at initialisation and at the end
    ({history name: [2, L]})."""

    losses: np.ndarray
    layer_grads: dict


def _flax_loop(run: rg.RunSpec, spec: rg.TrainSpec) -> FlaxRun:
    """The run trained by hand: ``run.layers`` Flax nn.RNN layers over nn.LSTMCell and a
    Dense readout, batches and init from the run's key streams, clip + Adam from optax."""
    task, n = spec.task, spec.width
    k_init, k_train, k_test = jax.random.split(jax.random.PRNGKey(run.seed), 3)
    init = rc.InitSpec(jnp.int32(rc.INITS.index(run.init)), jnp.float32(run.scale),
                       jnp.float32(run.forget_bias), jnp.float32(run.bias_var))
    p = rc.init_cell(k_init, "lstm", n_inputs=task.n_inputs, width=n,
                     n_outputs=task.n_outputs, spec=init, layers=run.layers)
    blk = lambda w, k: w[..., k * n:(k + 1) * n]
    # the cells are built in Net's scope, so their parameters sit at Net's top level
    params = {**{f"cell{i}": {**{f"i{g}": {"kernel": blk(q.wx, k)} for k, g in enumerate("ifgo")},
                              **{f"h{g}": {"kernel": blk(q.wh, k), "bias": blk(q.b, k)}
                                 for k, g in enumerate("ifgo")}}
                 for i, q in enumerate(rc.layer(p, i) for i in range(run.layers))},
              "out": {"kernel": p.wo, "bias": p.bo}}
    steps = rt.task_steps(task, run.length)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):                       # x [B, T, D]
            for i in range(run.layers):
                x = nn.RNN(nn.LSTMCell(n, name=f"cell{i}"))(x)
            return nn.Dense(task.n_outputs, name="out")(x)

    def loss_fn(prm, x, y):                          # exactly `steps` steps, no padding
        logp = jax.nn.log_softmax(Net().apply({"params": prm}, x), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1).sum(axis=(1, 2)) / steps)

    def flat(b):
        return jnp.swapaxes(b.x, 0, 1), jnp.swapaxes(b.y, 0, 1).astype(jnp.int32)

    test = rt.sample(task, k_test, run.length, steps, spec.test_size)
    flow_x, flow_y = flat(rt.SeqBatch(*(a[:, :spec.flow_examples] for a in test)))
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

    def layer_grads(prm):
        g = value_and_grad(prm, flow_x, flow_y)[1]
        norm = lambda leaves: float(np.sqrt(sum(np.sum(np.square(a)) for a in leaves)))
        return {name: [norm([g[f"cell{i}"][f"{kind}{q}"][leaf] for q in "ifgo"])
                       for i in range(run.layers)]
                for name, (kind, leaf) in (("grad_input_kernel", ("i", "kernel")),
                                           ("grad_recurrent_kernel", ("h", "kernel")),
                                           ("grad_bias", ("h", "bias")))}

    tx = optax.chain(optax.clip_by_global_norm(run.clip_norm), spec.optimizer)
    opt = tx.init(params)
    losses, at_init = [], layer_grads(params)
    for i in range(spec.steps):
        x, y = flat(rt.sample(task, jax.random.fold_in(k_train, i), run.length, steps,
                              spec.batch_size))
        loss, g = value_and_grad(params, x, y)
        upd, opt = tx.update(g, opt, params)
        params = optax.apply_updates(params, upd)
        losses.append(float(loss))
    at_end = layer_grads(params)
    return FlaxRun(np.asarray(losses), {k: np.array([at_init[k], at_end[k]]) for k in at_init})


def test_a_grid_run_trains_as_the_flax_net_does():
    runs = [rg.RunSpec("lstm", 3, seed=1, clip_norm=0.5),      # 7 steps, its own scan
            rg.RunSpec("lstm", 9, seed=2),
            rg.RunSpec("rnn", 4, seed=1, activation="relu", init="identity"),
            rg.RunSpec("lstm", 3, seed=1, clip_norm=0.5, layers=3)]   # its own group too
    res = rg.run_grid(runs, SPEC)
    assert res.train_loss.shape == (4, 4) and res.log_norm.shape == (4, 3, 3, 13)
    for r in (0, 3):
        want = _flax_loop(runs[r], SPEC)
        np.testing.assert_allclose(res.train_loss[r], want.losses, rtol=2e-5)
        # per-layer parameter-gradient norms at initialisation and after the last step
        for name, norms in want.layer_grads.items():
            np.testing.assert_allclose(getattr(res, name)[r, [0, -1], :runs[r].layers], norms,
                                       rtol=1e-4, err_msg=name)
    assert res.train_loss[0, -1] < res.train_loss[0, 0]
    # gradient flow is recorded inside each run's own steps and layers only
    assert np.isfinite(res.log_norm[0, :, 0, :7]).all()
    assert np.isnan(res.log_norm[0, :, 0, 7:]).all() and np.isnan(res.log_norm[0, :, 1:]).all()
    assert np.isfinite(res.log_norm[3, :, :, :7]).all()
    assert np.isnan(res.log_norm[3, :, :, 7:]).all()
    for name in ("saturation", "lambda1", *rg.LAYER_GRADS):
        arr = getattr(res, name)
        assert arr.shape == (4, 3, 3) and np.isnan(arr[:3, :, 1:]).all(), name
    assert np.isnan(res.saturation[2]).all() and np.isfinite(res.saturation[[0, 1, 3], :, 0]).all()
    assert np.isfinite(res.saturation[3]).all() and np.isfinite(res.lambda1[3]).all()


def test_the_grid_program_calls_no_library():
    # A LAPACK call per cell group (geqrf of the orthogonal init, gesdd of lambda1) ran
    # concurrently on XLA:CPU's intra-op pool and deadlocked the 72-run bench grid (every
    # thread waiting on a lock); lax ops only, for every cell (each run computes every init
    # and picks its own, so one run per cell covers them all).
    runs = [rg.RunSpec(c, 3, seed=0) for c in rc.CELLS] + [rg.RunSpec("gru", 3, 0, layers=2)]
    hlo = rg.lower_grid(runs, SPEC).lowered.as_text()
    assert "custom_call" not in hlo and "lapack" not in hlo.lower()


def test_files_round_trip(tmp_path):
    runs = [rg.RunSpec("rnn", 3, seed=0), rg.RunSpec("rnn", 2, seed=1, init="normal", layers=2)]
    res = rg.run_grid(runs, SPEC)
    rg.write_grid(res, SPEC, tmp_path)
    hist = rg.read_history(tmp_path)
    for name in rg.HISTORY_ARRAYS:
        np.testing.assert_array_equal(hist[name], getattr(res, name))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["label"] for r in summary["runs"]] == ["rnn-tanh-orthogonal-1",
                                                     "rnn-tanh-normal-1-x2"]
    assert [r["layers"] for r in summary["runs"]] == [1, 2]
    # the last evaluation's per-layer gradient norms, the run's own layers only
    assert summary["runs"][0]["final_layer_grads"]["bias"] == [float(res.grad_bias[0, -1, 0])]
    assert summary["runs"][1]["final_layer_grads"]["recurrent_kernel"] == \
        res.grad_recurrent_kernel[1, -1].tolist()
    assert summary["runs"][1]["final_test_loss"] == pytest.approx(float(res.test_loss[1, -1]),
                                                                 rel=1e-6)


@pytest.mark.parametrize("run,message", [
    (rg.RunSpec("lstn", 5, 0), "cell: 'lstn' is not known"),
    (rg.RunSpec("rnn", 1, 0), "length: 1 is out of range"),
    (rg.RunSpec("rnn", 5, 0, clip_norm=0.0), "clip_norm: 0.0 is out of range"),
    (rg.RunSpec("rnn", 5, 0, layers=0), "layers: 0 is out of range; allowed: integers >= 1"),
    (rg.RunSpec("rnn", 5, 0, layers=1.5), "layers: 1.5 is not an integer"),
    (rg.RunSpec("rnn", 5, 0, init="eye"), "init: unknown value 'eye'.*; allowed: normal, "
     "orthogonal, identity")])
def test_bad_runs_are_refused_in_one_line(run, message):
    with pytest.raises(ValueError, match=message):
        rg.check_runs([run], SPEC)
