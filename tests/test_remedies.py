"""The remedies group's init-time experiments: their nets against independent oracles (NumPy
float64 backprop, Flax's own BatchNorm), the growth fit against exact exponentials, and a
tiny run's files and report section."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax.experiments import remedies
from vgjax.experiments.base import Context
from vgjax.experiments.remedies import batchnorm, random_walk
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
    assert [e.name for e in remedies.EXPERIMENTS] == ["random-walk", "batchnorm-explosion"]
    assert experiments.in_group("remedies") == ["random-walk", "batchnorm-explosion"]
    for e in remedies.EXPERIMENTS:
        name = e.name
        assert experiments.get(name) is e and e.group == "remedies" and e.uses == ()
        assert len(e.seeds) >= (1000 if name == "random-walk" else 1)
