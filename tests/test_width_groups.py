"""Width-aware planning: a grid's runs grouped by padded width, one program per group."""

import itertools

import jax
import numpy as np
import pytest

from tests.test_wide import _same_history, _same_params
from vgjax.grid import plan as plan_mod
from vgjax.grid import width_groups as wg
from vgjax.engines import even_calls
from vgjax.config import Config, Grid
from vgjax.experiments import get
from vgjax.grid.plan import default_mesh, make_plan
from vgjax.run.chunks import sweep


def _modelled(groups, padded, steps, batch):
    return sum(wg.PROGRAM_S + steps[np.isin(padded, g)].sum()
               * (wg.LAYER_STEP_S + wg.MAC_S * batch * g[-1] ** 2) for g in groups)


@pytest.mark.parametrize("seed", range(12))
def test_partition_is_the_cheapest_contiguous_grouping(seed):
    # oracle: every way of cutting the sorted widths into contiguous groups, enumerated
    rng = np.random.default_rng(seed)
    ws = np.sort(rng.choice(np.arange(2, 700), size=rng.integers(1, 7), replace=False))
    padded = rng.choice(ws, size=200)
    padded[: len(ws)] = ws  # every width present
    steps = rng.integers(1, 10, size=200) * 10.0 ** rng.uniform(2, 7)
    got = wg.partition_widths(padded, steps, 32)
    assert [w for g in got for w in g] == [int(w) for w in ws]  # contiguous, in order, all
    best = min(_modelled([tuple(int(w) for w in part) for part in np.split(ws, cuts)],
                         padded, steps, 32)
               for n in range(len(ws)) for cuts in itertools.combinations(range(1, len(ws)), n))
    assert _modelled(got, padded, steps, 32) == pytest.approx(best, rel=1e-9)


def test_long_mixed_grids_split_and_short_ones_do_not():
    exp = get("tanh-breadth")   # widths 5-25, 30 seeds, 500 epochs: 240 s saved for 28 s
    plan = make_plan(exp.config_for(None), exp.grid(tuple(range(30))),
                     mesh=default_mesh(jax.devices("cpu")[:1]))
    assert [g.widths for g in plan.groups] == [(5,), (10,), (15,), (20,), (25,)]
    assert [g.engine for g in plan.groups] == ["fast"] + ["wide"] * 4
    assert [g.size for g in plan.groups] == [300] * 5 and plan.engine == "fast+wide"
    short = make_plan(exp.config_for(5), exp.grid((0, 1)))
    assert [g.widths for g in short.groups] == [(5, 10, 15, 20, 25)]


def test_split_grid_equals_one_program(monkeypatch):
    # widths 5 (the fast engine alone) and 12 (the wide engine); chunks of 5 runs hold
    # different numbers of each, so calls are padded; outputs must come back in run order
    cfg = Config(activation="tanh", init="glorot_uniform", output_init="glorot_uniform",
                 momentum=0.9, epochs=3, hist_every=2)
    grid = dict(seeds=(0, 1, 2), depths=(3, 1), widths=(12, 5))
    args = (cfg, Grid(grid["seeds"], grid["depths"], grid["widths"]))
    assert len(make_plan(*args, chunk_size=5).groups) == 1
    one = sweep(cfg, chunk_size=5, keep_params=True, **grid)
    monkeypatch.setattr(wg, "PROGRAM_S", 0.0)  # compiling is free: one group per width
    # ... and a fast call holds at most one device's share: several calls per chunk
    monkeypatch.setattr(plan_mod, "DEFAULT_CHUNK_BYTES", 1)
    plan = make_plan(*args, chunk_size=5)
    assert [(g.widths, g.engine) for g in plan.groups] == [((5,), "fast"), ((12,), "wide")]
    split = sweep(cfg, chunk_size=5, keep_params=True, **grid)
    np.testing.assert_array_equal(split.runs.width, one.runs.width)
    _same_params(one, split)     # zero-padded from width 5 to 12, each run unpacked
    _same_history(one, split)


def test_padded_parameters_keep_their_layout():
    k = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    out = wg.pad_param("param_kernels", k, 6)
    assert out.shape == (2, 3, 6, 6) and np.array_equal(out[:, :, :4, :4], k)
    assert not out[:, :, 4:].any() and not out[:, :, :, 4:].any()
    assert wg.pad_param("param_out_kernel", np.ones((2, 4, 3)), 6).shape == (2, 6, 3)
    assert wg.pad_param("param_biases", np.ones((2, 3, 4)), 6).shape == (2, 3, 6)
    assert wg.pad_param("param_out_bias", np.ones(2), 6).shape == (2,)
    assert wg.pad_param("train_loss", np.ones((2, 5)), 6).shape == (2, 5)


@pytest.mark.parametrize("n, most, n_dev, want", [
    (250, 198, 1, 125), (250, 198, 2, 126), (250, 300, 2, 250), (5, 198, 2, 6),
    (7, 3, 2, 2), (10, 1, 4, 4), (396, 198, 2, 198), (397, 198, 2, 134)])
def test_calls_are_even_and_fit(n, most, n_dev, want):
    size = even_calls(n, most, n_dev)
    calls = -(-n // size)
    assert size == want and size % n_dev == 0
    assert size <= max(n_dev, most // n_dev * n_dev)
    # no fewer calls would fit, and no call is mostly padding
    assert calls == -(-n // max(n_dev, most // n_dev * n_dev))
    assert calls * size - n < max(calls, 1) * n_dev


def test_a_grid_over_its_memory_budget_is_cut_into_equal_chunks():
    # dead-relu: 250 runs whose memory fits 198 per chunk went as 198 + 52 (146 padding)
    exp = get("dead-relu")
    plan = make_plan(exp.config_for(None), exp.grid(exp.seeds),
                     mesh=default_mesh(jax.devices("cpu")[:1]))
    assert len(plan.runs) == 250 and (plan.n_chunks, plan.chunk_size) == (2, 125)
    assert [g.size for g in plan.groups] == [125]
