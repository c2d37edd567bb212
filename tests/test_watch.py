"""vgjax.watch: a user's Flax model trained over seeds in one program, per-path statistics.

The oracle for the statistics is vgjax's own engine: an MLP written as a plain linen model,
started from a vgjax run's initial weights and fed the same minibatches, must record the
per-layer statistics the engine records for that run. Files are read back with
TensorBoard's own reader and the ``vgjax show`` command.
"""

import json
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vgjax import cli
from vgjax import watch
from vgjax.config import Config
from vgjax.engines.loop import run_keys
from vgjax.model import init_params, unpack_run
from vgjax.run.chunks import sweep
from vgjax.watch.models import as_model, model_layout


class KerasMLP(nn.Module):
    """``depth`` tanh Dense layers and a one-logit output, named as vgjax.model.unpack_run."""

    depth: int
    width: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = jnp.tanh(nn.Dense(self.width, name=f"dense_{i + 1}")(x))
        return nn.Dense(1, name="output")(x)[:, 0]


def test_per_path_statistics_equal_vgjax_engine():
    depth, width, seeds = 2, 5, (0, 1, 2, 3)
    config = Config(activation="tanh", init="glorot_uniform", epochs=3, hist_every=0, lr=0.05)
    ref = sweep(config, seeds=seeds, depths=(depth,), widths=(width,), keep_params=True)
    # the runs' initial weights, as the engine draws them (run_keys of PRNGKey(seed))
    first = [unpack_run(init_params(run_keys(jax.random.PRNGKey(s))[0], depth, width,
                                    max_depth=depth, p=width, init="glorot_uniform",
                                    output_init="glorot_uniform"), depth, width)
             for s in seeds]
    stacked = jax.tree.map(lambda *a: np.stack(a), *first)
    got = watch.train(KerasMLP(depth, width), "circles", seeds=seeds, epochs=3, hist_every=0,
                      optimizer=optax.sgd(0.05, momentum=0.9), init_params=stacked,
                      keep_params=True, batch_size=config.batch_size)
    assert got.paths == ("dense_1/kernel", "dense_1/bias", "dense_2/kernel", "dense_2/bias",
                         "output/kernel", "output/bias")
    kernels = [got.paths.index(p) for p in ("dense_1/kernel", "dense_2/kernel", "output/kernel")]
    for name in ("grad_mean_abs", "grad_norm", "weight_l1"):
        np.testing.assert_allclose(got.history[name][:, :, kernels], ref.history[name],
                                   rtol=2e-5, atol=1e-8, err_msg=name)
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        np.testing.assert_allclose(got.history[name], ref.history[name], rtol=2e-5, err_msg=name)
    final = [unpack_run(ref.params, depth, width, run=r) for r in range(len(seeds))]
    for layer in ("dense_1", "dense_2", "output"):
        for leaf in ("kernel", "bias"):
            want = np.stack([f[layer][leaf] for f in final])
            np.testing.assert_allclose(got.params[f"{layer}/{leaf}"], want, rtol=1e-5,
                                       atol=1e-7)
    assert (got.runs.diverged_epoch == ref.runs.diverged_epoch).all()


class Tiny(nn.Module):
    """Two tanh layers whose activations are perturbed (gradients w.r.t. them recorded)."""

    @nn.compact
    def __call__(self, x):
        for i in range(2):
            x = self.perturb(f"h{i}", jnp.tanh(nn.Dense(6)(x)))
        return nn.Dense(1)(x)[:, 0]


def _tiny_into(out, **kw):
    return watch.train(Tiny(), "circles", optimizer=optax.sgd, lrs=(0.05, 0.5), seeds=(3, 4),
                       epochs=4, hist_every=2, out=out, **kw)


def _accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def test_files_tensorboard_show_and_resume(tmp_path, capsys):
    out = tmp_path / "o"
    res = _tiny_into(out)
    paths = ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias",
             "Dense_2/kernel", "Dense_2/bias")
    assert res.paths == paths and res.act_paths == ("activations/h0", "activations/h1")
    assert res.history["grad_hist"].shape[:3] == (4, 2, 6)
    # every gradient entry of every step is counted once per histogram epoch
    steps = -(-500 // 32)
    np.testing.assert_array_equal(res.history["grad_hist"].sum(-1),
                                  np.broadcast_to(np.array(res.sizes) * steps, (4, 2, 6)))
    loaded = watch.load(out)
    for k, v in res.history.items():
        np.testing.assert_array_equal(loaded.history[k], v, err_msg=k)
    summary = json.loads((out / "summary.json").read_text())
    assert [g["lr"] for g in summary["groups"]] == [0.05, 0.5]
    assert [(r["seed"], r["lr"]) for r in summary["runs"]] == [(3, 0.05), (3, 0.5), (4, 0.05),
                                                               (4, 0.5)]
    assert len(summary["groups"][0]["final_grad_norm"]["mean"]) == len(paths)

    # TensorBoard's own reader: every tag of every run and mean directory, values as stored
    run_tags = {f"epoch/{c}" for c in ("train_loss", "test_loss", "train_accuracy",
                                       "test_accuracy")}
    run_tags |= {p + s for p in paths for s in ("_grad/mean_abs", "_grad/norm", "/l1")}
    run_tags |= {p + s for p in res.act_paths for s in ("_grad/mean_abs", "_grad/norm")}
    hists = {p + s for p in paths for s in ("_grad", "")} | {p + "_grad" for p in res.act_paths}
    seed_dir = out / "tensorboard" / "Tiny_lr0.5" / "seed04"
    ea = _accumulator(seed_dir)
    assert set(ea.Tags()["scalars"]) == run_tags and set(ea.Tags()["histograms"]) == hists
    norm = [e.value for e in ea.Scalars("Dense_2/kernel_grad/norm")]
    np.testing.assert_allclose(norm, res.stat("grad_norm", "Dense_2/kernel")[3], rtol=1e-6)
    h = ea.Histograms("Dense_0/kernel_grad")[-1]
    assert h.step == 4 and h.histogram_value.num == res.sizes[0] * steps
    mean = _accumulator(out / "tensorboard" / "Tiny_lr0.05" / "mean")
    assert set(mean.Tags()["scalars"]) == {t + s for t in run_tags
                                           for s in ("", "/minus_std", "/plus_std")}
    got = [e.value for e in mean.Scalars("epoch/train_loss")]
    np.testing.assert_allclose(got, res.history["train_loss"][[0, 2]].mean(0), rtol=1e-6)

    assert cli.main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "4 runs, 4 epochs, 0 diverged" in shown
    listed = [line.split()[0] for line in shown.splitlines() if line.startswith("  Dense_")]
    assert listed[:6] == list(paths)  # input to output, first group

    # resume: a lost chunk and lost outputs are recomputed to the same numbers
    (out / "history.npz").unlink()
    (out / "summary.json").unlink()
    chunks = sorted((out / "chunks").iterdir())
    chunks[-1].unlink()
    again = _tiny_into(out)
    assert again.timing["train_s"] > 0
    for k, v in res.history.items():
        np.testing.assert_array_equal(again.history[k], v, err_msg=k)
    with pytest.raises(ValueError, match="holds another watched run"):
        watch.train(Tiny(), "circles", optimizer=optax.sgd(0.1), seeds=(3,), epochs=1,
                    out=out)


class Reordered(nnx.Module):
    """Attributes named against the forward order (z_in first, a_out last) and a list."""

    def __init__(self, rngs: nnx.Rngs):
        self.a_out = nnx.Linear(4, 1, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(2)])
        self.z_in = nnx.Linear(2, 4, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.z_in(x))
        for b in self.blocks:
            h = jnp.tanh(b(h))
        h = self.perturb("h", h)
        return self.a_out(h)[:, 0]


def test_nnx_paths_in_forward_order():
    model = as_model(lambda rngs: Reordered(rngs))
    x = jnp.ones((3, 2))
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    layout = model_layout(lambda p, x: model.apply(p, x, None), params, x)
    assert layout.paths == ("z_in/kernel", "z_in/bias", "blocks/0/kernel", "blocks/0/bias",
                            "blocks/1/kernel", "blocks/1/bias", "a_out/kernel", "a_out/bias")
    assert layout.sizes == (8, 4, 16, 4, 16, 4, 4, 1)
    perts = model.perturbations(params, x)
    assert [v.shape for v in jax.tree.leaves(perts)] == [(3, 4)]
    # the perturbation's gradient is the activation's: d(sum out)/dh = a_out's kernel
    p0 = model.init(jax.random.key(1), x)
    g = jax.grad(lambda q: model.apply(p0, x, q).sum())(perts)
    kernel = p0["a_out"]["kernel"][...][:, 0]
    np.testing.assert_allclose(jax.tree.leaves(g)[0], np.tile(kernel, (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lrs=(0.1,)), "lrs: a learning-rate axis needs optimizer as a factory"),
    (dict(data="mnist"), "data: 'mnist' is not a vgjax data set"),
    (dict(seeds=(1, 1)), "seeds: \\[1, 1\\] repeats a seed"),
    (dict(epochs=0), "epochs: 0 is out of range"),
    (dict(model=nnx.Linear(2, 1, rngs=nnx.Rngs(0))), "model: an nnx.Module instance"),
    (dict(model=nn.DenseGeneral((2, 2))), "model: outputs \\(32, 2, 2\\) for a batch of 32"),
    (dict(init_params={"x": np.zeros(3)}), "init_params: shapes"),
])
def test_bad_input_is_one_line_before_compiling(kwargs, message):
    args = dict(model=KerasMLP(1, 3), data="circles", optimizer=optax.sgd(0.1), seeds=(0,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as err:
        watch.train(**args)
    assert "\n" not in str(err.value)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "guides" / "flax-models.md"


def test_docs_page_runs_as_written(capsys):
    blocks = re.findall(r"```\{code-cell\} python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - our own page
    out = capsys.readouterr().out
    for first, last in (("Dense_0/kernel", "Dense_2/kernel"), ("hidden/kernel", "out/kernel")):
        for path in (first, last):
            assert re.search(rf"^{re.escape(path)} +gradient norm \S+ ± \S+ over 8 seeds$",
                             out, flags=re.M), (path, out)
    for res in (namespace["linen_res"], namespace["nnx_res"]):
        assert res.history["grad_norm"].shape[:2] == (8, 3)
        assert np.isfinite(res.history["grad_norm"]).all()
        assert len(set(res.runs.seed.tolist())) == 8


def test_figures_draw_each_path_and_lr_from_the_history(tmp_path):
    """The figures are functions of the history: one panel per lr, one line per path with a
    finite value (a path whose gradients are all NaN is not drawn), seed means that equal
    NumPy's, and bad input in one line."""
    from vgjax.watch import figures as wf
    from vgjax.watch.api import WatchResult, WatchRuns

    rng = np.random.default_rng(0)
    r, e, paths = 6, 4, ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel")
    grad = rng.uniform(0.1, 1.0, (r, e, 3))
    grad[:, :, 1] = np.nan
    curves = {f"{s}_{n}": rng.uniform(0, 1, (r, e)) for s in ("train", "test")
              for n in ("loss", "accuracy")}
    runs = WatchRuns(seed=np.repeat(np.arange(3), 2), lr=np.tile(np.float32([0.1, 0.01]), 3),
                     diverged_epoch=np.full(r, -1, np.int32))
    res = WatchResult(model={"kind": "linen", "name": "MLP"}, paths=paths, sizes=(4, 2, 2),
                      act_paths=(), seeds=(0, 1, 2), lrs=(0.1, 0.01), runs=runs, settings={},
                      history={"grad_norm": grad, **curves})
    fig = wf.make_path_gradients(res)
    assert len(fig.axes) == 2
    first = fig.axes[0]
    assert [line.get_label() for line in first.get_lines()] == ["Dense_0/kernel", "Dense_1/kernel"]
    np.testing.assert_allclose(first.get_lines()[1].get_ydata(), grad[::2, :, 2].mean(axis=0))
    assert len(wf.make_learning_curves(res).axes[0].get_lines()) == 4  # 2 lrs x train/test
    png = wf.plot_path_gradients(res, tmp_path / "g.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="^stat: 'train_loss' has shape"):
        wf.make_path_gradients(res, stat="train_loss")
