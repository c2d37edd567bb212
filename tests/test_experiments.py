"""Experiments as objects: the catalog and its protocol, a new group plugged in, the runner and
the report free of name dispatch, prose numbers read from the committed files, and the one
Markdown-table helper."""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import vgjax
from vgjax import experiments as ex
from vgjax.experiments.base import (Context, StoredResults, Study, Sweep, group_report,
                                    tables_of)
from vgjax.io.tables import markdown_row, markdown_table, write_tables

RESULTS = Path(__file__).resolve().parents[1] / "results"


# ------------------------------------------------------------------------------- catalog


def test_every_group_module_and_experiment_follows_the_protocol():
    assert ex.GROUPS == tuple(m.GROUP for m in ex.GROUP_MODULES)
    assert ex.GROUPS[:2] == ("tutorial", "signal") and ex.DEFAULT_GROUP == "tutorial"
    seen = []
    for module in ex.GROUP_MODULES:
        assert isinstance(module.SOURCE, str) and callable(module.render)
        for e in module.EXPERIMENTS:
            assert e.group == module.GROUP and e.name not in seen
            assert all(u in seen for u in e.uses), e.name  # what it reads runs before it
            assert isinstance(e.title, str) and "\n" not in e.title
            assert all(f.endswith(".png") for f in e.figures)
            for method in ("n_runs", "check", "run", "section"):
                assert callable(getattr(e, method)), (e.name, method)
            seen.append(e.name)
    assert list(ex.EXPERIMENTS) == seen
    # a sweep counts its grid's runs; a study trains nothing
    e = ex.get("tanh-breadth")
    assert isinstance(e, Sweep) and e.n_runs((0, 1, 2)) == 3 * 10 * 5
    assert ex.get("phase-diagram").n_runs((0,)) == 7 * 7 * 3  # its own fixed seeds
    assert isinstance(ex.get("theory"), Study) and ex.get("theory").n_runs((0, 1)) == 0


def test_check_refuses_a_bad_grid_before_anything_runs():
    with pytest.raises(ValueError, match="^epochs: "):
        ex.get("deep-relu").check((0,), 0)
    ex.get("theory").check((0,), 0)  # trains nothing: nothing to refuse


def test_a_new_group_is_objects_and_a_render_function(tmp_path):
    """What a new group writes: a Study subclass with draw and section; group_report gives
    its part of the report from the files alone."""

    @dataclass(frozen=True)
    class Squares(Study):
        figures: tuple[str, ...] = ()

        def draw(self, ctx):
            write_tables(ctx.exp_dir, {"squares": [s * s for s in ctx.seeds]})
            return []

        def section(self, exp_dir):
            t = tables_of(exp_dir)
            return [] if t is None else [f"### {self.name}", "",
                                         *markdown_table(["square"], ([v] for v in t["squares"]))]

    e = Squares("squares", "seeds squared", group="demo")
    assert group_report("## Demo", "intro", [e], tmp_path) == []     # nothing there yet
    ctx = Context(tmp_path, tmp_path / "squares", (2, 3), None, False, False, None, None,
                  StoredResults(tmp_path, []))
    assert e.run(ctx) == []
    assert group_report("## Demo", "intro", [e], tmp_path) == [
        "## Demo", "", "intro", "", "### squares", "", "| square |", "|---|", "| 4 |", "| 9 |"]


def test_stored_results_are_read_only_when_looked_up(tmp_path):
    res = StoredResults(tmp_path, ["deep-relu"])
    assert list(res) == ["deep-relu"] and "deep-relu" in res and "other" not in res
    with pytest.raises(KeyError):
        res["other"]
    with pytest.raises(ValueError, match="summary.json"):   # looked up: read, and it is absent
        res["deep-relu"]


def _string_constants(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_runner_and_report_do_not_dispatch_on_names():
    import vgjax.report
    import vgjax.reproduce
    for module in (vgjax.reproduce, vgjax.report):
        assert not _string_constants(module) & set(ex.EXPERIMENTS), module.__name__


def test_no_measured_duration_typed_into_the_experiments():
    """Run times are rendered from summary.json, never typed into an experiment's prose."""
    root = Path(vgjax.__file__).parent / "experiments"
    typed = re.compile(r"\d+ min \d+ s|\d s wall|\d+(\.\d+)? s on the")
    for path in root.rglob("*.py"):
        assert not typed.search(path.read_text()), path.name


# --------------------------------------------------------- prose numbers from the files


def test_phase_prose_reads_the_summary(tmp_path):
    """The deepest trainable depth per σ_w² the prose quotes (from summary.json's groups)
    equals the one the run wrote into its table (from the per-epoch history), and so does
    6 ξ_c; each is classed against 6 ξ_c on the grid's depths."""
    from vgjax.experiments.signal.phase import deepest_trainable, verdicts
    from vgjax.experiments.signal.studies import phase_text

    summary = json.loads((RESULTS / "phase-diagram" / "summary.json").read_text())
    tables = json.loads((RESULTS / "phase-diagram" / "tables.json").read_text())
    rows = [r.strip("|").split("|") for r in tables["markdown"].split("\n\n")[1].splitlines()[2:]]
    table = {float(r[0]): int(r[-2]) for r in rows}   # after the last epoch, then 6 ξ_c
    got = deepest_trainable((g["weight_var"], g["depth"], g["final_train_accuracy"]["mean"])
                            for g in summary["groups"])
    assert got == table
    bound = {float(w): b for w, b in tables["xi_bound"].items()}
    for r in rows:  # the table's 6 ξ_c is the bound the prose reads
        assert r[-1].strip() == "∞" or float(r[-1]) == pytest.approx(bound[float(r[0])],
                                                                     abs=0.051)
    budgets = tables["budgets"]
    assert {float(w): d for w, d in budgets[-1]["deepest"].items()} == table
    for k, b in enumerate(budgets):   # every budget's column is the one the prose reads
        assert [int(r[1 + k]) for r in rows] == [b["deepest"][f"{float(r[0]):g}"] for r in rows]
    text = phase_text("phase-diagram", summary, bound, budgets)
    v = verdicts(got, summary["grid"]["depths"], bound)
    for w, x in v.items():
        assert f"σ_w² = {w:g} ({x.deepest} vs 6 ξ_c = " in text
        # the class: 6 ξ_c between the deepest depth that trains and the next, or not
        assert (x.how == "follows") == (x.deepest <= x.bound
                                        and (x.next_depth is None or x.next_depth > x.bound))
    steps = summary["config"]["epochs"] * -(-summary["config"]["n_train"]
                                            // summary["config"]["batch_size"])
    assert f"{steps} Adam steps" in text
    # the ordered side's first budget, where its boundary still follows 6 ξ_c, is quoted
    crit = max(bound, key=bound.get)
    first = verdicts({float(w): d for w, d in budgets[0]["deepest"].items() if float(w) < crit},
                     summary["grid"]["depths"], bound)
    for w, x in first.items():
        said = f"σ_w² = {w:g} ({x.deepest} vs 6 ξ_c = {x.bound:.0f})"
        assert (said in text.split("Adam trains past 6 ξ_c")[-1].split(":")[0]) \
            == (x.how == "follows" and any(y.how == "beyond" and u < crit for u, y in v.items()))
    # closest to criticality the grid's deepest depth trained, and the prose says so
    top = max(summary["grid"]["depths"])
    assert (f"the grid's deepest nets ({top} layers)" in text) == (got[crit] == top)
    # a different run gives different prose: with no accuracy left, every σ_w² falls short
    for g in summary["groups"]:
        g["final_train_accuracy"]["mean"] *= 0.0
    text = phase_text("phase-diagram", summary, bound, budgets)
    assert "falls short of 6 ξ_c" in text and "follows 6 ξ_c (" not in text


def test_phase_contrast_prose_reads_both_summaries():
    """The Gaussian contrast's deepest trainable depths and the diagram's, per σ_w² of the
    contrast, are the ones in the two summaries; the finite-width explanation is given only
    when the Gaussian nets closest to criticality stop short of the orthogonal ones."""
    from vgjax.experiments.signal.phase import deepest_trainable
    from vgjax.experiments.signal.studies import contrast_text, phase_bound

    main = json.loads((RESULTS / "phase-diagram" / "summary.json").read_text())
    other = json.loads((RESULTS / "phase-diagram-gaussian" / "summary.json").read_text())
    assert (main["config"]["init"], other["config"]["init"]) == ("orthogonal", "normal")
    bound = phase_bound(main, RESULTS / "phase-diagram")
    deepest = [deepest_trainable((g["weight_var"], g["depth"],
                                  g["final_train_accuracy"]["mean"]) for g in s["groups"])
               for s in (main, other)]
    ws = sorted(deepest[1])
    text = contrast_text("phase-diagram-gaussian", main, other, bound)
    first = min(other["grid"]["depths"])
    assert "trains to depth " + ", ".join(
        f"{deepest[1][w] or f'none of depths ≥ {first}'} at σ_w² = {w:g}" for w in ws) in text
    assert "against " + ", ".join(str(deepest[0][w]) for w in ws) + " here" in text
    near = max(ws, key=lambda w: bound[w])
    assert ("finite-width effect" in text) == (deepest[0][near] > deepest[1][near])
    # Gaussian nets that trained at every depth: their depths, and no explanation
    for g in other["groups"]:
        g["final_train_accuracy"]["mean"] = 1.0
    text = contrast_text("phase-diagram-gaussian", main, other, bound)
    top = max(other["grid"]["depths"])
    assert all(f"{top} at σ_w² = {w:g}" in text for w in ws)
    assert "finite-width effect" not in text


def test_propagation_prose_reads_the_data():
    from vgjax.experiments.signal.studies import propagation_text, sci

    data = json.loads((RESULTS / "signal-propagation" / "data.json").read_text())
    text = propagation_text(data)
    ordered = data["phases"]["ordered"]
    assert f"χ₁ = {ordered['chi1']:.3g} per layer" in text
    m = ordered["g2_ratio_mean"][0]
    e = int(np.floor(np.log10(m)))
    assert f"measured {m / 10 ** e:.2f}·10" in text and sci(m, 3).startswith(f"{m / 10 ** e:.2f}")
    flat = np.asarray(data["phases"]["critical"]["g2_ratio_mean"][1:])
    assert f"{flat.min():.2f}–{flat.max():.2f}" in text
    assert sci(21661.8, 2) == "2.2·10⁴" and sci(9.96e-3, 2) == "1.0·10⁻²"


# ----------------------------------------------------------------------- Markdown tables


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"], ["", 2.5]]) == [
        "| a | b |", "|---|---|", "| 1 | x |", "|  | 2.5 |"]
    assert markdown_table(("only",), []) == ["| only |", "|---|"]
    assert markdown_row(["p", 3]) == "| p | 3 |"
    with pytest.raises(ValueError, match="^markdown_table: row 1 has 1 cells; allowed: 2"):
        markdown_table(["a", "b"], [[1, 2], [3]])
