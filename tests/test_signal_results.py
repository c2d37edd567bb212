"""Host-side numbers and figures of the signal probe (vgjax.experiments.signal.results, experiments.signal.figures,
the report sections), on a small hand-built result whose answers are counted by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vgjax.experiments.signal import report
from vgjax.experiments.signal import results as sr
from vgjax.experiments.signal.figures import make_dead_units, make_saturation
from vgjax.result import RunTable, SweepResult, with_init

NAN = np.nan


def _result() -> SweepResult:
    """4 runs: depths (1, 2) x seeds (0, 1), 2 epochs. Run 3 (depth 2, seed 1) has its
    second layer fully dead from init on and does not learn; run 1 (depth 2, seed 0)
    learns with one of two units of layer 2 dead at the end; run 2 (depth 1, seed 1)
    diverged in epoch 2."""
    config = replace(sr_config(), epochs=2)
    dead_init = np.array([[0.0, NAN], [0.0, 0.5], [0.0, NAN], [0.0, 1.0]], np.float32)
    dead = np.array([[[0.0, NAN], [0.0, NAN]], [[0.0, 0.5], [0.0, 0.5]],
                     [[0.5, NAN], [NAN, NAN]], [[0.0, 1.0], [0.0, 1.0]]], np.float32)
    sat = dead * 0.5
    test_acc = np.array([[0.6, 0.8], [0.7, 0.9], [0.8, NAN], [0.5, 0.5]], np.float32)
    history = {"test_accuracy": test_acc, "signal_dead": dead, "signal_dead_init": dead_init,
               "signal_saturation": sat, "signal_saturation_init": dead_init * 0.25}
    runs = RunTable(seed=np.array([0, 0, 1, 1]), depth=np.array([1, 2, 1, 2], np.int32),
                    width=np.full(4, 2, np.int32), lr=np.full(4, 0.01, np.float32),
                    diverged_epoch=np.array([-1, -1, 2, -1], np.int32))
    return SweepResult(config, (0, 1), (1, 2), (2,), (), runs, history)


def sr_config():
    from vgjax.config import Config
    return Config(activation="relu", probes=("signal",), hist_every=0)


def test_fully_dead_layer():
    assert sr.fully_dead_layer(np.array([[0.0, 1.0, 1.0], [0.5, 0.9, NAN], [1.0, NAN, NAN]])
                               ).tolist() == [2, 0, 1]


def test_dead_tables_by_hand():
    rows = {r["depth"]: r for r in sr.dead_tables(_result())["rows"]}
    d1, d2 = rows[1], rows[2]
    assert d1["n_seeds"] == 2 and d1["share_learn"] == 0.5     # run 2 diverged: no
    assert d1["dead_final"]["mean"] == pytest.approx(0.25)      # run 2's final: epoch 1
    assert d2["share_learn"] == 0.5
    assert d2["dead_init"]["mean"] == pytest.approx((0.25 + 0.5) / 2)
    assert d2["share_fully_dead_init"] == 0.5 and d2["share_fully_dead_final"] == 0.5
    assert d2["learn_without_dead_layer"] == 1.0 and d2["learn_with_dead_layer"] == 0.0
    assert d1["learn_with_dead_layer"] is None


def test_saturation_tables_and_with_init():
    res = _result()
    full = with_init(res, "signal_saturation")
    assert full.shape == (4, 3, 2)
    np.testing.assert_array_equal(full[:, 0], res.history["signal_saturation_init"])
    t = sr.saturation_tables({"a": res})
    assert t["layers"] == ["hidden 1", "hidden 2"]
    col = t["columns"][0]
    assert col["init"]["mean"][1] == pytest.approx((0.125 + 0.25) / 2)
    assert col["final"]["mean"][1] == pytest.approx((0.25 + 0.5) / 2)


def test_missing_probe_arrays_is_one_line():
    res = _result()
    res = replace(res, history={"test_accuracy": res.history["test_accuracy"]})
    with pytest.raises(ValueError, match="probes=\\('signal',\\)"):
        sr.dead_tables(res)


def test_figures_and_report_sections_draw():
    res = _result()
    assert len(make_saturation({"a": res, "b": res}).axes) == 2
    assert len(make_dead_units(res).axes) >= 2
    lines = report.dead_relu_section(sr.dead_tables(res))
    assert any(line.startswith("| 2 | 2 | 0.50 |") for line in lines)
    text = "\n".join(report.saturation_section(sr.saturation_tables({"U": res, "G": res})))
    assert "E[w] = 0.5" in text and "| hidden 2 |" in text
