"""The remedies group's experiments: the init-time nets against independent oracles (NumPy
float64 backprop, Flax's own BatchNorm), the growth fit against exact exponentials, a tiny
run's files and report section; the architectures study's reduction of a sweep and its
files and section from a data.json (its training is the pipeline's, tested elsewhere)."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax.experiments import remedies
from vgjax.experiments.base import Context
from vgjax.experiments.remedies import architectures, batchnorm, random_walk
from vgjax.model import random_walk_gain


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_log_delta_norms_match_numpy_backprop(activation):
    """ln‖δ_l‖ of the experiment's net equals a float64 NumPy forward/backward pass of the
    same draws (N(0, g²/N) kernels, Gaussian input and top direction)."""
    n, depth, seed = 6, 7, 3
    key = jax.random.PRNGKey(seed)
    std = float(random_walk_gain(activation, n)) / np.sqrt(n)
    w = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (depth, n, n)) * std,
                   np.float64)
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (n,)), np.float64)
    r = np.asarray(jax.random.normal(jax.random.fold_in(key, 2), (n,)), np.float64)
    zs = []
    for k in w:
        zs.append(x @ k)
        x = zs[-1] if activation == "linear" else np.maximum(zs[-1], 0)
    dphi = (lambda z: np.ones_like(z)) if activation == "linear" else (lambda z: z > 0)
    d = dphi(zs[-1]) * r
    want = [np.log(np.linalg.norm(d))]
    for l in range(depth - 2, -1, -1):
        d = dphi(zs[l]) * (w[l + 1] @ d)
        want.append(np.log(np.linalg.norm(d)))
    got = jax.jit(lambda k: random_walk.log_delta_norms(k, n, activation, depth))(key)
    np.testing.assert_allclose(np.asarray(got), want[::-1], rtol=1e-4, atol=1e-4)


class _FlaxBatchNormNet(nn.Module):
    """The experiment's net built from Flax layers: Dense (no bias) then nn.BatchNorm on
    batch statistics (no scale or shift), per layer."""

    depth: int
    width: int
    activation: str

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.Dense(self.width, use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False,
                             epsilon=batchnorm.EPS)(x)
            x = x if self.activation == "linear" else nn.relu(x)
        return x


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_batchnorm_net_matches_flax_batchnorm(activation):
    """ln‖∂L/∂W_l‖² of the experiment's BatchNorm net equals the same net made of Flax's
    nn.Dense and nn.BatchNorm with the same kernels, to float32 rounding."""
    width, batch, depth, seed = 8, 6, 5, 1
    key = jax.random.PRNGKey(seed)
    kernels = jax.random.normal(jax.random.fold_in(key, 0), (depth, width, width)) / np.sqrt(width)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, width))
    r = jax.random.normal(jax.random.fold_in(key, 2), (batch, width))
    net = _FlaxBatchNormNet(depth, width, activation)
    variables = net.init(jax.random.PRNGKey(0), x)
    params = {f"Dense_{i}": {"kernel": kernels[i]} for i in range(depth)}

    def loss(params):
        out, _ = net.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(out * r)
    grads = jax.grad(loss)(params)
    want = [np.log(np.sum(np.asarray(grads[f"Dense_{i}"]["kernel"], np.float64) ** 2))
            for i in range(depth)]
    got = batchnorm.log_grad_norms(key, width, batch, activation, depth)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_shared_draw_programs_equal_one_net_at_a_time():
    """The ReLU walks of a program that computes both activations from kernels drawn once
    (seeds padded to whole batches), and the ReLU growth profile of a batch size's program
    fed kernels drawn once for all cases, equal the one-net functions (which the oracles
    above check) seed by seed: a mixed-up activation, seed or draw would not."""
    seeds, n, depth = (0, 1), 4, 5
    walks = random_walk.compute_walks(seeds, n, ("linear", "relu"), depth)["relu"]
    one = jax.jit(jax.vmap(lambda k: random_walk.log_delta_norms(k, n, "relu", depth)))
    logs = np.asarray(one(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))), np.float64)
    alive = np.all(np.isfinite(logs), axis=1)
    np.testing.assert_array_equal(walks.alive, alive)
    np.testing.assert_allclose(walks.walk[alive], (logs - logs[:, -1:])[alive], atol=1e-6)
    width, bdepth, batch = 4, 16, 5
    data = batchnorm.compute(seeds, batches=(batch,), activations=("linear", "relu"),
                             width=width, depth=bdepth)
    relu = next(c for c in data["cases"] if c["activation"] == "relu")
    one = jax.jit(jax.vmap(lambda k: batchnorm.log_grad_norms(k, width, batch, "relu",
                                                              bdepth)))
    logs = np.asarray(one(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))), np.float64)
    np.testing.assert_allclose(relu["log_norm_by_layer"], logs.mean(axis=0), atol=1e-5)


def test_growth_rates_recover_exact_exponentials():
    depth = 30
    rates = np.array([1.2, 1.467, 2.0])
    layers = np.arange(depth)
    logs = 5.0 + (depth - 1 - layers)[None, :] * np.log(rates)[:, None]
    logs[:, -batchnorm.TRIM_TOP:] += 3.0   # a transient near the loss is not fitted
    np.testing.assert_allclose(batchnorm.growth_rates(logs), rates, rtol=1e-10)


def test_tiny_run_writes_files_and_renders_sections(tmp_path):
    """Both studies at tiny sizes (linear nets): data.json, tables.json and PNGs are
    written, and each section's table rows are rendered from them (a changed data.json
    changes the section)."""
    tiny = {"random-walk": (("widths", (8,)), ("activations", ("linear",)), ("depth", 6)),
            "batchnorm-explosion": (("batches", (8,)), ("activations", ("linear",)),
                                    ("width", 8), ("depth", 16))}
    studies = {e.name: e for e in remedies.EXPERIMENTS}
    for name, options in tiny.items():
        study = dataclasses.replace(studies[name], seeds=None, options=options)
        exp_dir = tmp_path / name
        ctx = Context(out=tmp_path, exp_dir=exp_dir, seeds=(0, 1, 2, 3), epochs=None,
                      overwrite=False, tensorboard=False, chunk_size=None, progress=None,
                      results={})
        assert study.section(exp_dir) == []
        figs = study.run(ctx)
        assert [p.name for p in figs] == list(study.figures)
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in figs)
        assert (exp_dir / "tables.json").is_file()
        data = json.loads((exp_dir / "data.json").read_text())
        assert data["seeds"] == 4 and data["seconds"] > 0
        text = "\n".join(study.section(exp_dir))
        assert all(f"({name}/{f})" in text for f in study.figures)
        assert len([l for l in text.splitlines() if l.startswith("| linear")]) == 1
        # the section is a function of the files: edit the data, re-render the tables
        data["cases"][0]["var_ratio" if name == "random-walk" else "growth"] = 123.0
        study.write(exp_dir, data)
        assert "123" in "\n".join(study.section(exp_dir))


def test_catalog_of_the_group():
    from vgjax import experiments
    names = ["random-walk", "batchnorm-explosion", "architectures", "random-walk-training"]
    assert [e.name for e in remedies.EXPERIMENTS] == names
    assert experiments.in_group("remedies") == names
    for e in remedies.EXPERIMENTS:
        name = e.name
        assert experiments.get(name) is e and e.group == "remedies" and e.uses == ()
        assert len(e.seeds) >= (1000 if name == "random-walk" else 1)


def _sweep_result(depths, seeds, acc, grads, diverged):
    """A SweepResult of runs seed-major over ``depths``: final test accuracy ``acc`` [R],
    first-epoch grad_norm ``grads`` [R, L], diverged_epoch ``diverged`` [R]."""
    from vgjax.config import Config
    from vgjax.result import RunTable, SweepResult
    r, n_layers = len(acc), max(depths) + 1
    runs = RunTable(seed=np.repeat(seeds, len(depths)), depth=np.tile(depths, len(seeds)),
                    width=np.full(r, 4), lr=np.full(r, 0.01, np.float32),
                    diverged_epoch=np.asarray(diverged))
    history = {"test_accuracy": np.stack([np.full(r, 0.5), acc], axis=1),
               "grad_norm": np.stack([grads, np.ones((r, n_layers))], axis=1)}
    return SweepResult(Config(epochs=2), tuple(seeds), tuple(depths), (4,), (), runs, history)


def test_depth_cases_reduce_a_sweep():
    """Share that learns (accuracy >= 0.7, not diverged), the first epoch's per-layer norm
    as the median over the seeds with a finite value (hidden layers, then the output), the
    log10 ratio, and a first layer whose gradient underflowed to 0."""
    depths, seeds = (1, 3), (0, 1, 2)
    acc = np.array([0.9, 0.65, 0.8, np.nan, 0.75, 0.5])
    nan = np.nan
    grads = np.array([[2.0, nan, nan, 1.0], [100.0, 10.0, 1.0, 1.0],
                      [8.0, nan, nan, 4.0], [nan, nan, nan, nan],
                      [5.0, nan, nan, 3.0], [200.0, 20.0, 2.0, 3.0]])
    res = _sweep_result(depths, seeds, acc, grads, diverged=[-1, -1, -1, 1, -1, -1])
    shallow, deep = architectures.depth_cases(res, depths)
    assert shallow["share_learn"] == 1.0 and deep["share_learn"] == 0.0
    assert deep["diverged"] == 1 and not deep["vanished"]
    np.testing.assert_allclose(shallow["grad_profile"], [5.0, 3.0])
    np.testing.assert_allclose(shallow["log10_first_over_output"], np.log10(5.0 / 3.0))
    np.testing.assert_allclose(deep["grad_profile"], [150.0, 15.0, 1.5, 2.0])  # NaN left out
    np.testing.assert_allclose(shallow["test_accuracy"], (0.9 + 0.8 + 0.75) / 3)
    grads[[1, 5], 0] = 0.0                                      # underflow in every seed
    res = _sweep_result(depths, seeds, acc, grads, diverged=[-1, -1, -1, 1, -1, -1])
    deep = architectures.depth_cases(res, depths)[1]
    assert deep["vanished"] and deep["log10_first_over_output"] is None


def test_architectures_files_and_section_from_data(tmp_path):
    """The figures, tables.json and section come from data.json alone: a changed share
    changes the table; the section states the training budget and the time taken."""
    study = next(e for e in remedies.EXPERIMENTS if e.name == "architectures")
    fams = [{"key": f.key, "label": f.label, "activation": f.config.activation,
             "init": f.config.init, "output_init": f.config.resolved_output_init}
            for f in architectures.FAMILIES]
    sweeps = [{"family": f["key"], "family_label": f["label"], "architecture": a.key,
               "label": a.label, "residual": a.residual, "norm": a.norm, "seconds": 1.0,
               "cases": [{"depth": d, "seeds": 2, "share_learn": 0.5 if a.key == "plain"
                          else 1.0, "test_accuracy": 0.8, "diverged": 0,
                          "grad_profile": [2.0 ** -i for i in range(d + 1)],
                          "log10_first_over_output": d * np.log10(2.0), "vanished": False}
                         for d in (2, 5)]}
              for f in fams for a in architectures.ARCHITECTURES[:3]]
    data = {"depths": [2, 5], "width": 4, "seeds": 2, "epochs": 3, "optimizer": "adam",
            "lr": 0.01, "learn_threshold": 0.7, "families": fams, "sweeps": sweeps,
            "seconds": 90.0}
    exp_dir = tmp_path / "architectures"
    assert study.section(exp_dir) == []
    written = study.write(exp_dir, data)
    assert [p.name for p in written] == ["data.json", "learn.png", "profiles.png",
                                         "tables.json"]
    text = "\n".join(study.section(exp_dir))
    assert "adam (lr 0.01) for 3 epochs" in text and "1.5 minutes" in text
    rows = [l for l in text.splitlines() if l.startswith("| tanh, U(0, 1) |")]
    assert len(rows) == 3 and rows[0].endswith("| 0.50 | 0.50 | 1.51 |")
    data["sweeps"][0]["cases"][1]["share_learn"] = 0.25
    study.write(exp_dir, data)
    assert "| 0.50 | 0.25 | 1.51 |" in "\n".join(study.section(exp_dir))
    assert study.n_runs((0, 1, 2)) == 6 * 4 * 2 * 7      # its own 6 seeds, 4 depths
    # random-walk-training keeps the same layout (an activation a family, an initialiser
    # an architecture): its section renders from the same files
    walk = next(e for e in remedies.EXPERIMENTS if e.name == "random-walk-training")
    text = "\n".join(walk.section(exp_dir))
    assert "adam (lr 0.01) for 3 epochs" in text and "plain 0.50 (log10" in text
    assert walk.n_runs((0,)) == 4 * 3 * 6                 # 4 seeds, 3 depths, 3 x 2 inits

