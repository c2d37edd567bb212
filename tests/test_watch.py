"""vgjax.watch: a user's Flax model trained over seeds in one program, per-path statistics.

The oracle for the statistics is vgjax's own engine: an MLP written as a plain linen model,
started from a vgjax run's initial weights and fed the same minibatches, must record the
per-layer statistics the engine records for that run. Files are read back with
TensorBoard's own reader and the ``vgjax show`` command.
"""

import json

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
