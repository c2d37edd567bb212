"""A fresh clone's results/: `vgjax show` and the report work from the committed files alone.

The committed ``results/`` has no ``history.npz`` (git-ignored). Checked on a copy of it:
`show` prints every experiment's table from summary.json (numbers recomputed here from the
per-run rows with NumPy), says which view needs the arrays, and running one experiment into
the copy leaves every other experiment's rows, figures and the benchmark section in the
report.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vgjax import cli, report
from vgjax.io import outdir
from vgjax.experiments import EXPERIMENTS
from vgjax.experiments.base import Sweep

RESULTS = Path(__file__).resolve().parents[1] / "results"
SWEEPS = [n for n, e in EXPERIMENTS.items() if isinstance(e, Sweep)]  # vgjax show reads their summary.json


@pytest.fixture
def clone(tmp_path):
    """A copy of the committed results/ without anything git ignores."""
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out, ignore=shutil.ignore_patterns("*.npz", "chunks",
                                                                "tensorboard", ".*"))
    return out


def _rows(readme: str) -> set[str]:
    return {r for r in readme.splitlines() if r.startswith("| ")}


def _links(readme: str) -> set[str]:
    return set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme))


def _table_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line[:1] == " " and "±" in line]


@pytest.mark.parametrize("name", SWEEPS)
def test_show_without_history(clone, name, capsys):
    exp_dir = clone / name
    assert not (exp_dir / outdir.HISTORY_NAME).exists()
    assert cli.main(["show", str(exp_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((exp_dir / "summary.json").read_text())
    rows = _table_lines(out)
    assert len(rows) == len(summary["groups"])
    # The group columns are the header's fields before 'seeds' (depth, width, lr, and
    # weight_var / bias_var where the grid has that axis).
    header = next(line.split() for line in out.splitlines() if "seeds" in line.split())
    keys = header[:header.index("seeds")]
    assert keys[:3] == ["depth", "width", "lr"]
    # Oracle: mean test accuracy per group straight from the per-run rows.
    runs = summary["runs"]
    for cells in rows:
        want = dict(zip(keys, map(float, cells[:len(keys)])))
        acc = np.array([r["final_test_accuracy"] for r in runs
                        if all(float(f"{r[k]:.4g}") == v for k, v in want.items())], np.float64)
        assert acc.size == len(summary["grid"]["seeds"])
        test_mean = float(cells[len(keys) + 4])
        assert test_mean == pytest.approx(acc.mean(), abs=5e-4)
        assert float(cells[-1]) == pytest.approx(np.mean(acc >= np.float32(0.7)), abs=5e-3)
    assert f"{len(runs)} runs, {summary['config']['epochs']} epochs, 0 diverged" in out
    assert "history.npz absent" in out and "--layers" in out
    # The view that needs the arrays says so, in one line, and exits 2.
    assert cli.main(["show", str(exp_dir), "--layers"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "show --layers: needs" in err and "history.npz" in err


def test_show_refuses_a_summary_whose_groups_do_not_match_its_runs(clone, capsys):
    path = clone / "deep-relu" / "summary.json"
    summary = json.loads(path.read_text())
    summary["runs"][0]["final_test_accuracy"] = 0.123  # edited by hand: groups now disagree
    path.write_text(json.dumps(summary))
    assert cli.main(["show", str(path.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not match its runs" in err and repr(str(path)) in err


def test_report_rebuilt_from_files_alone(clone):
    """The committed README is exactly what the files in results/ give (but the logdir)."""
    committed = (RESULTS / "README.md").read_text()
    rebuilt = report.render(clone).replace(str(clone), "results")
    assert rebuilt == committed
    figures = {f"{n}/{f}" for n, e in EXPERIMENTS.items() for f in e.figures}
    assert _links(committed) == figures | {"benchmark.png"}


@pytest.mark.slow
def test_running_one_experiment_keeps_the_others(clone):
    from vgjax.reproduce import run_experiments

    before = (clone / "README.md").read_text()
    run_experiments(["shallow-tanh"], clone, seeds=(0, 1), epochs=2, overwrite=True,
                    tensorboard=False)
    after = (clone / "README.md").read_text()
    mine = "| shallow-tanh |"
    assert {r for r in _rows(before) if not r.startswith(mine)} \
        == {r for r in _rows(after) if not r.startswith(mine)}
    new_rows = [r for r in _rows(after) if r.startswith(mine)]
    assert len(new_rows) == 1 and new_rows[0] not in _rows(before)
    assert _links(after) == _links(before)
    for link in _links(after):
        assert (clone / link).is_file()
    assert report.BENCH_START in after and after.split(report.BENCH_START)[1] \
        == before.split(report.BENCH_START)[1]
    assert "except shallow-tanh: 2 seeds (seeds 0, 1), 2 epochs" in after
    # the other experiments' files are untouched
    for name in SWEEPS:
        if name != "shallow-tanh":
            assert (clone / name / "summary.json").read_bytes() \
                == (RESULTS / name / "summary.json").read_bytes()
