"""The signal group: registry and groups, the signal-propagation study against the mean-field
theory (tiny sizes, plus the width-512 q-map check), the phase-diagram figure and table from a
tiny sweep, and the report's sections."""

import json
from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pytest

from vgjax import cli
from vgjax import experiments as ex
from vgjax.experiments.signal import propagation as ss
from vgjax import theory as th
from vgjax.config import Grid

TUTORIAL = ["dataset", "shallow-tanh", "deep-tanh", "deep-relu", "relu-depth", "gradients",
            "xavier-tanh", "adam-tanh", "weight-norms", "tanh-depth", "tanh-breadth"]
SIGNAL = ["theory", "jacobian-spectra", "signal-propagation", "phase-diagram",
          "phase-diagram-gaussian"]


# ----------------------------------------------------------------------------- registry


def test_groups():
    assert ex.in_group("tutorial") == TUTORIAL
    assert set(SIGNAL) <= set(ex.in_group("signal"))
    assert ex.in_group("all") == list(ex.EXPERIMENTS)
    assert all(ex.get(n).group in ex.GROUPS for n in ex.EXPERIMENTS)
    with pytest.raises(ValueError, match="^group: unknown value 'signals'.*did you mean"):
        ex.in_group("signals")


def test_grid_axes_and_fixed_seeds():
    e = ex.get("phase-diagram")
    g = e.grid((5, 6, 7))
    assert g == Grid(e.seeds, e.depths, e.widths, (), e.weight_vars, ())
    # the size Schoenholz et al.'s figure needs: >= 3 seeds, depths to >= 200, σ_w² on both
    # sides of criticality (1.76)
    assert len(g.seeds) >= 3 and max(g.depths) >= 200 and min(g.widths) >= 64
    assert min(g.weight_vars) <= 1.0 and max(g.weight_vars) >= 3.5 and len(g.weight_vars) >= 7
    assert e.config.data == "digits" and e.config.activation == "tanh"
    assert e.config.bias_var == 0.05 and e.config.init == "orthogonal"
    # its Gaussian contrast: the same protocol but the init, on part of its grid
    c = ex.get(e.contrast)
    assert c.contrast == e.name and c.config == replace(e.config, init="normal")
    assert set(c.depths) <= set(e.depths) and set(c.weight_vars) <= set(e.weight_vars)
    assert c.seeds == e.seeds and c.widths == e.widths and c.budgets == e.budgets
    # an experiment without fixed seeds takes the command line's
    assert ex.get("deep-tanh").grid((3, 4)) == Grid((3, 4), (5,), (5,))


def test_reproduce_runs_the_tutorial_group_by_default(monkeypatch, tmp_path, capsys):
    import vgjax.reproduce as rep
    seen = []

    def fake(names, out, **kw):
        seen.append(list(names))
        return {}
    monkeypatch.setattr(rep, "run_experiments", fake)
    for argv, want in ((["reproduce"], TUTORIAL), (["reproduce", "--group", "signal"],
                                                   ex.in_group("signal")),
                       (["reproduce", "--group", "all"], list(ex.EXPERIMENTS)),
                       (["reproduce", "--group", "recurrent"], ex.in_group("recurrent")),
                       (["run", "theory", "phase-diagram"], ["theory", "phase-diagram"])):
        assert cli.main(argv + ["--out", str(tmp_path), "--no-tensorboard"]) == 0
        assert seen.pop() == want
    capsys.readouterr()
    out = tmp_path / "bad"
    assert cli.main(["reproduce", "--group", "mlp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'mlp'" in err and "remedies, recurrent, all" in err
    assert not out.exists() and seen == []
    # the phase diagram's fixed grid is what the progress bar counts
    e = ex.get("phase-diagram")
    assert rep.n_runs(["phase-diagram", "theory"], (0,)) == \
        len(e.seeds) * len(e.depths) * len(e.weight_vars)


def test_cli_list_shows_groups(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [i for i, line in enumerate(out) if line.startswith("[")]
    assert [out[i].split()[0] for i in headers] == [f"[{g}]" for g in ex.GROUPS]
    names = [line.split()[0] for line in out if line.startswith("  ")]
    assert names == list(ex.EXPERIMENTS)
    # every title starts in one column, past the longest name
    starts = {line.index(line.split()[1], 2 + len(line.split()[0]))
              for line in out if line.startswith("  ")}
    assert starts == {3 + max(map(len, ex.EXPERIMENTS))}
    assert "vgjax reproduce --group signal" in out[headers[1]]


# ------------------------------------------------------------------- signal-propagation


def test_predict_linear_closed_form():
    """Linear nets, σ_b² = 0: q^l = σ_w^{2l} q⁰ and ‖g^l‖² ∝ width σ_w^{2(L-1)} q⁰ for every
    l >= 2 (layer 1 reads F features instead of width units)."""
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    w, depth, width = 1.3, 6, 10
    q, g2 = (np.asarray(a, np.float64) for a in ss.predict(jnp.asarray(x), w, 0.0, "linear",
                                                           depth, width))
    q0 = (x.astype(np.float64) ** 2).mean(axis=1)
    np.testing.assert_allclose(q, [np.mean(w ** l * q0) for l in range(1, depth + 1)],
                               rtol=1e-5)
    np.testing.assert_allclose(g2, [3 / width] + [1.0] * (depth - 1), rtol=1e-5)


@pytest.fixture(scope="module")
def wide():
    """Width 512, depth 4, 6 seeds: the three phases measured at initialisation."""
    return ss.compute(seeds=tuple(range(6)), depth=4, width=512, n_points=64, n_grad=2)


def test_q_at_width_512_matches_the_q_map(wide):
    for name, p in wide["phases"].items():
        np.testing.assert_allclose(p["q_mean"], p["q_theory"], rtol=0.06, err_msg=name)
        # the q-map's own start: q¹ = σ_w² mean(x²) + σ_b² from the data
        assert p["q_theory"][0] == pytest.approx(
            p["weight_var"] * wide["q0_mean"] + wide["bias_var"], rel=1e-4)


def test_gradient_ratios_follow_chi1(wide):
    ph = wide["phases"]
    assert ph["ordered"]["chi1"] < 1 - 0.2 and ph["chaotic"]["chi1"] > 1 + 0.2
    assert ph["critical"]["chi1"] == pytest.approx(1.0, abs=1e-4)
    # layer 2 relative to the last hidden layer (layer 4): two layers of χ
    ordered, critical, chaotic = (ph[n]["g2_ratio_mean"][1] for n in
                                  ("ordered", "critical", "chaotic"))
    assert ordered < 0.75 < critical < 1.33 < chaotic
    for name, p in ph.items():
        assert p["g2_ratio_mean"][1] == pytest.approx(p["g2_ratio_theory"][1], rel=0.3), name
        assert p["g2_ratio_chi1"] == pytest.approx([p["chi1"] ** (3 - l) for l in range(4)])


def test_signal_write(tmp_path, wide):
    paths = ss.write(tmp_path, data=wide)
    assert {p.name for p in paths} == {"q_per_layer.png", "grad_per_layer.png", "data.json",
                                       "tables.json"}
    assert json.loads((tmp_path / "data.json").read_text()) == wide
    table = json.loads((tmp_path / "tables.json").read_text())["markdown"]
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["ordered", "critical", "chaotic"]
    for r, p in zip(rows, wide["phases"].values()):   # q^1 cell: measured ± std (theory)
        assert f"{p['q_mean'][0]:.3f} ± {p['q_std'][0]:.3f} ({p['q_theory'][0]:.3f})" in r


# ------------------------------------------------------------------------ phase-diagram


@pytest.fixture(scope="module")
def tiny_phase():
    """A phase-diagram-shaped result (2 seeds x depths 1, 3 x σ_w² 1, 3) with random
    accuracies; one cell's runs both diverged in epoch 1 (no final value)."""
    from vgjax.result import RunTable, SweepResult
    seed, depth, wv = (a.ravel() for a in np.meshgrid([0, 1], [1, 3], [1.0, 3.0],
                                                     indexing="ij"))
    n = seed.size
    div = np.where((depth == 3) & (wv == 3.0), 1, -1)
    runs = RunTable(seed, depth, np.full(n, 8), np.full(n, 0.01, np.float32), div,
                    wv.astype(np.float32), np.full(n, 0.05, np.float32))
    acc = np.random.default_rng(0).uniform(0, 1, (n, 3))
    from vgjax.experiments.signal import PHASE
    return SweepResult(PHASE, (0, 1), (1, 3), (8,), (), runs, {"train_accuracy": acc},
                       weight_vars=(1.0, 3.0))


def test_phase_diagram_figure_and_table(tiny_phase, tmp_path):
    from vgjax.experiments.signal import phase as phase_study
    from vgjax.figures.phase import XI_MULTIPLE, accuracy_grid, make_phase_diagram

    res = tiny_phase
    ws, ds, grid = accuracy_grid(res)
    acc = res.history["train_accuracy"]
    for i, d in enumerate(ds):                       # oracle: NumPy over the run table
        for j, w in enumerate(ws):
            sel = (res.runs.depth == d) & (res.runs.weight_var == np.float32(w))
            want = np.nan if (d, w) == (3, 3.0) else acc[sel, -1].mean()
            assert sel.sum() == 2 and grid[i, j] == pytest.approx(want, nan_ok=True)
    tw, xi, crit = phase_study.theory_curve(0.05, "tanh", ws)
    assert set(ws) <= set(tw)
    fig = make_phase_diagram(res, tw, xi, critical_weight_var=crit)
    line = next(l for l in fig.axes[0].lines if l.get_label().startswith(f"{XI_MULTIPLE:g} ξ_c"))
    x, y = line.get_data()
    for k in (3, 60, 140):                           # the drawn curve is theory.mean_field's
        assert y[k] == pytest.approx(XI_MULTIPLE * float(th.mean_field(x[k], 0.05, "tanh").xi_c),
                                     rel=1e-4)
    assert crit == pytest.approx(float(th.critical_weight_var(0.05, "tanh")))
    path = phase_study.write(res, tmp_path, "phase-diagram")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = json.loads((tmp_path / "tables.json").read_text())["markdown"]
    first = md.split("\n\n")[0]
    rows = [r for r in first.splitlines() if r.startswith("| 3 |") or r.startswith("| 1 |")]
    assert [r.split("|")[1].strip() for r in rows] == ["3", "1"]   # deepest first
    assert f"σ_w² = {crit:.3f}" in md


def test_phase_diagram_read_at_budgets(tiny_phase, tmp_path):
    """Read after an earlier epoch, the diagram is the seed mean of that epoch's accuracy
    (NaN for a cell whose runs all diverged by then), and the budgets' deepest trainable
    depths in ``tables.json`` follow from those grids."""
    from vgjax.experiments.signal import phase as phase_study
    from vgjax.figures.phase import accuracy_grid, make_phase_diagram

    res = tiny_phase
    acc = res.history["train_accuracy"]
    for epoch in (1, 2):
        ws, ds, grid = accuracy_grid(res, epoch=epoch)
        for i, d in enumerate(ds):
            for j, w in enumerate(ws):
                sel = (res.runs.depth == d) & (res.runs.weight_var == np.float32(w))
                want = np.nan if (d, w) == (3, 3.0) else acc[sel, epoch - 1].mean()
                assert grid[i, j] == pytest.approx(want, nan_ok=True)
    with pytest.raises(ValueError, match="epoch: 4 is out of range; allowed: 1..3"):
        accuracy_grid(res, epoch=4)
    assert phase_study.budget_epochs((2, 1, 3, 9), 3) == (1, 2, 3)
    tw, xi, crit = phase_study.theory_curve(0.05, "tanh", (1.0, 3.0))
    assert len(make_phase_diagram(res, tw, xi, epochs=(1, 3)).axes) == 4   # panels + colorbars
    phase_study.write(res, tmp_path, "phase-diagram", budgets=(1,))
    budgets = json.loads((tmp_path / "tables.json").read_text())["budgets"]
    assert [b["epochs"] for b in budgets] == [1, 3]
    per_epoch = res.config.steps_per_epoch
    assert [b["steps"] for b in budgets] == [per_epoch, 3 * per_epoch]
    for b in budgets:
        ws, ds, grid = accuracy_grid(res, epoch=b["epochs"])
        for j, w in enumerate(ws):
            ok = [d for i, d in enumerate(ds) if np.isfinite(grid[i, j]) and grid[i, j] >= 0.5]
            assert b["deepest"][f"{w:g}"] == max(ok, default=0)


# ------------------------------------------------------------------------------- report


def test_report_sections_from_a_copy_of_results(tmp_path):
    import shutil
    from pathlib import Path

    from vgjax import report
    from vgjax.experiments.signal import HEADING

    results = Path(__file__).resolve().parents[1] / "results"
    clone = tmp_path / "results"
    shutil.copytree(results, clone, ignore=shutil.ignore_patterns("*.npz", "chunks",
                                                                  "tensorboard", ".*"))
    full = report.render(clone)
    head, signal = full.split(HEADING)
    assert "| phase-diagram |" not in head          # not a row of the tutorial's table
    for name in SIGNAL:
        assert f"### {name}: " in signal
        for fig in ex.get(name).figures:
            assert f"]({name}/{fig})" in signal and (clone / name / fig).is_file()
        md = json.loads((clone / name / "tables.json").read_text())["markdown"]
        assert md.strip() in signal
    shutil.rmtree(clone / "phase-diagram")
    less = report.render(clone)
    assert less.split(HEADING)[0] == head and "### phase-diagram:" not in less
    for name in ex.in_group("signal"):  # this file's and the probe-trained ones
        shutil.rmtree(clone / name, ignore_errors=True)
    assert HEADING not in report.render(clone)
