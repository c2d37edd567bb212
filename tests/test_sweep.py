"""The compiled grid: a run in any grid equals the same run alone; no recompiles; devices."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from vgjax.grid import plan as plan_mod
from vgjax.config import Config, Grid
from vgjax.run.chunks import sweep

CFG = Config(activation="tanh", init="glorot_uniform", epochs=6, hist_every=3)
SERIES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "grad_mean_abs",
          "grad_norm", "weight_l1", "grad_hist_stats", "weight_hist_stats")


def _row(result, seed, depth, width):
    r = result.runs
    (i,) = np.flatnonzero((r.seed == seed) & (r.depth == depth) & (r.width == width))
    return i


def _assert_same_run(grid_res, i, solo_res, j, depth):
    keep = list(range(depth)) + [-1]  # the run's hidden layers and the output layer
    for name in SERIES:
        a, b = grid_res.history[name][i], solo_res.history[name][j]
        if a.ndim >= 2:  # [E, L] or [H, L, 4]: the layer axis is axis 1
            a, b = a[:, keep], b[:, keep]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("grad_hist", "weight_hist"):
        np.testing.assert_array_equal(grid_res.history[name][i][:, keep].sum(-1),
                                      solo_res.history[name][j][:, keep].sum(-1))


@pytest.mark.devices
def test_run_in_grid_equals_run_alone():
    grid = sweep(CFG, seeds=(0, 7), depths=(1, 2, 4), widths=(3, 6))
    assert len(grid.runs) == 12
    assert grid.history["grad_mean_abs"].shape == (12, 6, 5)
    assert grid.history["grad_hist"].shape[:3] == (12, 2, 5)
    for seed, depth, width in [(7, 2, 3), (0, 4, 6), (7, 1, 6)]:
        solo = sweep(CFG, seeds=(seed,), depths=(depth,), widths=(width,))
        _assert_same_run(grid, _row(grid, seed, depth, width), solo, 0, depth)
        # layers the run lacks are NaN in the grid
        assert np.all(np.isnan(grid.history["grad_mean_abs"][_row(grid, seed, depth, width), :, depth:4]))


@pytest.mark.devices
def test_same_key_twice_is_identical_and_does_not_recompile():
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    a = sweep(CFG, seeds=(1, 2), depths=(2, 3), widths=(4,))
    first = len(compiles)
    b = sweep(CFG, seeds=(1, 2), depths=(2, 3), widths=(4,))
    c = sweep(CFG, seeds=(5, 6), depths=(2, 3), widths=(4,), lrs=(0.02,))  # same shape
    assert first >= 1 and len(compiles) == first, "a sweep of the same shape recompiled"
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k])
    assert not np.allclose(a.history["train_loss"], c.history["train_loss"])


@pytest.mark.devices
def test_chunks_equal_one_program():
    whole = sweep(CFG, seeds=(0, 1, 2), depths=(1, 3), widths=(5,))
    chunked = sweep(CFG, seeds=(0, 1, 2), depths=(1, 3), widths=(5,), chunk_size=4)
    for k in whole.history:
        np.testing.assert_allclose(whole.history[k], chunked.history[k], rtol=1e-5, atol=1e-6)


def test_sharded_over_devices_equals_one_device():
    """3 CPU devices, 5 runs (not a multiple of 3): same numbers as one device."""
    code = textwrap.dedent("""
        import sys, numpy as np, jax
        from vgjax.config import Config
        from vgjax.run.chunks import sweep
        from vgjax.grid.plan import default_mesh
        assert len(jax.devices()) == 3, jax.devices()
        cfg = Config(activation="relu", epochs=4, hist_every=2)
        kw = dict(seeds=(0, 1, 2, 3, 4), depths=(3,), widths=(5,))
        multi = sweep(cfg, **kw)
        single = sweep(cfg, mesh=default_mesh(jax.devices()[:1]), **kw)
        for k in multi.history:
            np.testing.assert_allclose(multi.history[k], single.history[k], rtol=1e-5, atol=1e-6)
        print("OK", multi.history["train_loss"].shape)
    """)
    # JAX_NUM_CPU_DEVICES, not the XLA flag: vgjax keeps the user's count, and CI exports
    # JAX_NUM_CPU_DEVICES (which would win over the flag) to run this module on 1 and 8.
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="3", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK (5, 4)" in out.stdout


@pytest.mark.parametrize("kwargs, name", [
    (dict(depths=(0,)), "depths"),
    (dict(widths=()), "widths"),
    (dict(seeds=(-1,)), "seeds"),
])
def test_sweep_validates_before_compiling(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        sweep(CFG, **{**dict(seeds=(0,), depths=(1,), widths=(2,)), **kwargs})


def test_run_keys_are_each_seeds_own_prng_key():
    """A run's key depends on its seed alone, exactly PRNGKey(seed), whatever the grid."""
    seeds = (0, 1, 7, 12345, 2**31 - 1)
    specs = plan_mod.run_specs(plan_mod.run_table(Grid(seeds, (1, 3), (5,)), CFG))
    ref = np.stack([np.asarray(jax.random.key_data(jax.random.PRNGKey(s))) for s in seeds])
    np.testing.assert_array_equal(specs.key, np.repeat(ref, 2, axis=0))


def test_compute_chunks_reads_stored_chunks_and_trains_only_the_rest(tmp_path):
    """The one execution path: a stored chunk is read (hooks see trained=False), only the
    others reach the scheduler's execute, and the result is the in-memory sweep's, bit for
    bit, whatever the scheduler's selection order."""
    from vgjax.io.chunk_store import ChunkStore
    from vgjax.run.chunks import Scheduler, assemble, compute_chunks, in_process

    cfg = Config(activation="tanh", init="glorot_uniform", epochs=2, hist_every=1)
    grid = Grid((0, 1, 2), (1, 2), (3,))
    mesh = plan_mod.default_mesh(jax.devices()[:1])  # chunks of 2 on any device count
    plan = plan_mod.make_plan(cfg, grid, chunk_size=2, mesh=mesh)  # 6 runs: chunks 0, 1, 2
    whole = sweep(cfg, seeds=grid.seeds, depths=grid.depths, widths=grid.widths, chunk_size=2,
                  mesh=mesh)
    store = ChunkStore(tmp_path)
    store.save(1, compute_chunks(plan, scheduler=Scheduler(select=lambda n: [1]))[1])
    asked, seen = [], []

    def execute(plan_, chunks, timing):
        asked.extend(chunks)
        return in_process(plan_, chunks, timing)

    parts = compute_chunks(plan, scheduler=Scheduler(select=lambda n: [2, 1, 0],
                                                     execute=execute),
                           hooks=[lambda d: seen.append((d.index, d.trained))], stored=store)
    assert asked == [2, 0] and sorted(seen) == [(0, True), (1, False), (2, True)]
    res = assemble(plan.layout, parts)
    np.testing.assert_array_equal(res.runs.seed, whole.runs.seed)
    for k in whole.history:
        np.testing.assert_array_equal(res.history[k], whole.history[k], err_msg=k)
