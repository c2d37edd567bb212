"""The README's Python example runs as written, and its results table says what the committed
results say (each cell against that experiment's summary.json)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The results table's rows: which committed experiment (and depth) each column's values are.
TABLE_ROWS = {
    "1 tanh layer, U(0,1)": [("shallow-tanh", 1)],
    "5 tanh layers, U(0,1)": [("deep-tanh", 5)],
    "5 ReLU layers, He": [("deep-relu", 5)],
    "ReLU, 15 / 20 layers": [("relu-depth", 15), ("relu-depth", 20)],
    "5 tanh layers, Glorot (ext. 1)": [("xavier-tanh", 5)],
    "5 tanh layers, U(0,1), Adam 0.001 (ext. 2)": [("adam-tanh", 5)],
}


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", _section("In Python"), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("depth ")]
    assert [ln.split(":")[0] for ln in lines] == [f"depth {d}" for d in range(1, 6)]
    res = namespace["res"]
    assert res.history["grad_mean_abs"].shape == (40, 50, 6)  # 8 seeds x 5 depths, 5 + output
    depth1 = res.runs.depth == 1
    # a depth-1 run has no layers 2-5: NaN there, finite in its first and output layers
    assert np.isnan(res.history["grad_mean_abs"][depth1][:, :, 1:5]).all()
    assert np.isfinite(res.history["grad_mean_abs"][depth1][:, :, [0, 5]]).all()
    acc = namespace["acc"]
    assert acc.shape == (40,) and ((acc >= 0) & (acc <= 1)).all()
    # what the README says it shows: in the 5-layer tanh U(0,1) nets the inner layers get a
    # small fraction of the first layer's gradient
    profile = namespace["profile"]  # the last loop iteration's: depth 5
    assert profile.shape == (5,) and (profile[1:4] < 0.2 * profile[0]).all()


def _group(experiment: str, depth: int) -> dict:
    summary = json.loads((ROOT / "results" / experiment / "summary.json").read_text())
    (group,) = [g for g in summary["groups"] if g["depth"] == depth]
    return group


@pytest.mark.parametrize("label", sorted(TABLE_ROWS))
def test_results_table_matches_committed_results(label):
    rows = {cells[0]: cells for line in _section("Results at a glance").splitlines()
            if line.startswith("| ") for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    _, _, accuracy, share = rows[label]
    groups = [_group(e, d) for e, d in TABLE_ROWS[label]]
    accuracies = [a.strip() for a in accuracy.split(" / ")]
    shares = [s.strip() for s in share.split(" / ")]
    assert len(accuracies) == len(shares) == len(groups)
    for acc_cell, share_cell, g in zip(accuracies, shares, groups):
        numbers = [float(x) for x in re.findall(r"\d+\.\d+", acc_cell)]
        stats = g["final_test_accuracy"]
        assert numbers[0] == pytest.approx(stats["mean"], abs=5e-4)
        if len(numbers) > 1:
            assert numbers[1] == pytest.approx(stats["std"], abs=5e-4)
        assert float(share_cell.rstrip(" %")) == round(100 * g["share_learn"])
