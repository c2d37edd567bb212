"""vgjax.io.summary: content, strictness and reproducibility of summary.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vgjax.io import summary
from vgjax.result import RunTable, SweepResult
from tests.results_data import make_result, strict_loads, listing


# --- summary ------------------------------------------------------------------------------


def f32(x):
    return float(np.float32(x))


def test_summary_content(tmp_path):
    res = make_result()
    s = summary.write_summary(tmp_path / "summary.json", res, timing={"run_s": 1.5},
                         extra={"device": "cpu"})
    on_disk = strict_loads((tmp_path / "summary.json").read_text())
    assert on_disk == s
    assert s["format"] == "vgjax.sweep" and s["version"] == 1
    assert s["config"] == res.config.to_dict()
    assert s["grid"] == {"seeds": [0, 1, 2], "depths": [1, 2], "widths": [3], "lrs": [0.1],
                         "weight_vars": [], "bias_vars": []}  # no variance axes
    assert s["versions"]["device"] == "cpu"
    assert set(s["versions"]) == {"jax", "jaxlib", "flax", "optax", "numpy", "device"}
    assert s["versions"]["numpy"] == np.__version__
    assert s["timing"] == {"run_s": 1.5} and s["learn_threshold"] == 0.7

    runs = s["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2, 0, 1, 2]
    assert [r["depth"] for r in runs] == [1, 1, 1, 2, 2, 2]
    assert runs[0]["lr"] == 0.1  # float32 written by its shortest repr
    assert [r["final_test_accuracy"] for r in runs] == [0.9, 0.8, 0.6, 0.75, None, 0.7]
    assert [r["diverged"] for r in runs] == [False] * 3 + [True, True, False]
    assert [r["diverged_epoch"] for r in runs] == [None] * 3 + [3, 1, None]
    # run 3 diverged in epoch 3: its finals are epoch 2's values
    assert runs[3]["final_train_loss"] == float(str(res.history["train_loss"][3, 1]))
    assert runs[3]["final_train_accuracy"] == 0.8
    assert runs[4]["final_train_loss"] is None and runs[4]["final_test_loss"] is None

    g1, g2 = s["groups"]
    assert (g1["depth"], g1["width"], g1["lr"]) == (1, 3, 0.1)
    assert (g1["n_seeds"], g1["n_diverged"], g1["n_learn"]) == (3, 0, 2)
    assert g1["share_learn"] == pytest.approx(2 / 3)
    v = np.array([f32(0.9), f32(0.8), f32(0.6)])
    t = g1["final_test_accuracy"]
    assert t["mean"] == pytest.approx(v.mean(), rel=1e-6)
    assert t["std"] == pytest.approx(np.sqrt(((v - v.mean()) ** 2).mean()), rel=1e-6)
    assert t["std"] == pytest.approx(0.1247219, rel=1e-5)
    assert (t["min"], t["max"]) == (0.6, 0.9)
    assert g1["final_train_accuracy"]["mean"] == pytest.approx(v.mean() + 0.05, rel=1e-6)
    # depth 2: run 3 diverged (0.75 before divergence) and run 4 diverged with no value;
    # only run 5 (0.7 >= 0.7) learns, the stats cover the two runs with a final value
    assert (g2["n_seeds"], g2["n_diverged"], g2["n_learn"]) == (3, 2, 1)
    assert g2["share_learn"] == pytest.approx(1 / 3)
    t = g2["final_test_accuracy"]
    assert t["mean"] == pytest.approx(0.725, rel=1e-6)
    assert t["std"] == pytest.approx(0.025, rel=1e-5)
    assert (t["min"], t["max"]) == (0.7, 0.75)


def test_summary_all_nan_group_and_threshold(tmp_path):
    res = make_result()
    s = summary.build_summary(res, timing={}, learn_threshold=0.95)
    assert [g["n_learn"] for g in s["groups"]] == [0, 0]
    with pytest.raises(ValueError, match="learn_threshold"):
        summary.build_summary(res, timing={}, learn_threshold=1.5)
    with pytest.raises(ValueError, match="clash"):
        summary.build_summary(res, timing={}, extra={"jax": "x"})


def test_summary_is_strict_and_reproducible(tmp_path):
    res = make_result()
    summary.write_summary(tmp_path / "a.json", res, timing={"run_s": 1.0, "bad": float("nan")})
    summary.write_summary(tmp_path / "b.json", res, timing={"run_s": 99.25, "compile_s": 3.0})
    ta, tb = (tmp_path / "a.json").read_text(), (tmp_path / "b.json").read_text()
    assert "NaN" not in ta and "Infinity" not in ta
    a, b = strict_loads(ta), strict_loads(tb)
    assert a["timing"] == {"run_s": 1.0, "bad": None}
    a.pop("timing"), b.pop("timing")
    assert json.dumps(a, indent=2, sort_keys=True) == json.dumps(b, indent=2, sort_keys=True)
    # identical inputs give identical bytes
    summary.write_summary(tmp_path / "c.json", res, timing={"run_s": 1.0, "bad": float("nan")})
    assert (tmp_path / "c.json").read_text() == ta
    # the timing block is the only place the texts differ
    strip = [line for line in ta.splitlines() if "_s\"" not in line and "\"bad\"" not in line]
    strip_b = [line for line in tb.splitlines() if "_s\"" not in line]
    assert strip == strip_b


def test_run_outside_grid_is_rejected(tmp_path):
    res = make_result()
    runs = RunTable(seed=res.runs.seed, depth=res.runs.depth, width=res.runs.width,
                    lr=np.full(6, 0.2, np.float32), diverged_epoch=res.runs.diverged_epoch)
    bad = SweepResult(config=res.config, seeds=res.seeds, depths=res.depths,
                      widths=res.widths, lrs=res.lrs, runs=runs, history=res.history)
    with pytest.raises(ValueError, match="run 0 has lr .* not in the grid"):
        summary.write_summary(tmp_path / "s.json", bad, timing={})
    assert listing(tmp_path) == []


def test_load_summary_alone_roundtrip_and_tampering(tmp_path):
    """load_summary needs no history.npz and recomputes the groups from the runs."""
    res = make_result()
    written = summary.write_summary(tmp_path / "summary.json", res, timing={"run_s": 1.0})
    assert summary.load_summary(tmp_path) == written
    text = (tmp_path / "summary.json").read_text()
    for edit in ({"n_learn": 3}, {"share_learn": 0.5}):
        data = json.loads(text)
        data["groups"][0].update(edit)
        (tmp_path / "summary.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match="groups that do not match its runs"):
            summary.load_summary(tmp_path)
    data = json.loads(text)
    data["runs"][3]["diverged_epoch"] = None  # run 3 no longer diverged: it would learn
    data["runs"][3]["diverged"] = False
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="do not match"):
        summary.load_summary(tmp_path)
    data = json.loads(text)
    del data["runs"][-1]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lists 5 runs; its grid has 6"):
        summary.load_summary(tmp_path)
