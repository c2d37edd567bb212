"""The recurrent experiments' host side: the runs they make, the solved-share table, and
sections rendered only from the files in the experiment's directory."""

import numpy as np

from vgjax.experiments.recurrent import EXPERIMENTS, GROUP
from vgjax.experiments.recurrent import gradient_flow as gf
from vgjax.experiments.recurrent import length as ln
from vgjax.io.tables import write_tables


def test_the_group_lists_its_experiments_with_the_protocol_fields():
    assert [e.name for e in EXPERIMENTS] == ["rnn-gradient-flow", "rnn-length"]
    for e in EXPERIMENTS:
        assert e.group == GROUP == "recurrent" and e.title and e.uses == ()
        assert callable(e.run) and callable(e.section)


def test_length_runs_and_solved_share():
    budget = ln.Budget(lengths=(10, 50), seeds=3)
    labels, runs = ln.make_runs(budget)
    assert len(runs) == len(ln.NETS) * 2 * 3
    assert {(r.cell, r.activation, r.init) for r in runs if labels[runs.index(r)].startswith(
        "IRNN")} == {("rnn", "relu", "identity")}
    mse = np.full(len(runs), 0.1)
    # the LSTM solves every seed at T = 10 and one of three at T = 50; one diverged run (NaN)
    lstm = [i for i, lab in enumerate(labels) if lab.startswith("LSTM")]
    mse[lstm[:3]] = 0.001
    mse[lstm[3]] = 0.005
    mse[lstm[4]] = np.nan
    rows = {(r["net"], r["length"]): r for r in ln.solved_table(labels, runs, mse, budget)}
    assert rows[("LSTM (forget bias 1)", 10)]["solved_share"] == 1.0
    assert rows[("LSTM (forget bias 1)", 50)]["solved_share"] == 1 / 3
    assert rows[("GRU", 10)]["solved_share"] == 0.0


def test_sections_render_the_numbers_of_their_files(tmp_path):
    d = tmp_path / "rnn-length"
    d.mkdir()
    assert ln.Length().section(d) == []                    # nothing there: no section
    rows = [{"net": "LSTM", "length": t, "seeds": 5, "solved_share": s, "median_mse": m}
            for t, s, m in ((10, 0.8, 0.0042), (25, 0.2, 0.1234))]
    write_tables(d, {"budget": ln.Budget(lengths=(10, 25), steps=777)._asdict(),
                     "solved_mse": 0.01, "baseline": 1 / 6, "rows": rows,
                     "timing": {"compile_s": 12.0, "train_s": 345.0, "runs": 10}})
    text = "\n".join(ln.Length().section(d))
    assert "777 Adam steps" in text and "80% (0.004)" in text and "20% (0.123)" in text
    assert "trained in 345 s" in text

    g = tmp_path / "rnn-gradient-flow"
    g.mkdir()
    row = {"net": "tanh", "measured_decay": 0.1234, "theory_decay": 0.125,
           "theory_decay_at_q_star": 0.126, "relative_difference": -0.0128,
           "lambda1_gamma": 1.987, "saturation": None, "linear_decay": 0.0567}
    iso = {"weight_var": 0.8, "effective_bias_var": 0.222, "measured_decay": 0.4321,
           "theory_decay": 0.4333, "relative_difference": -0.0028}
    protocol = {"length": 200, "width": 128, "seeds": 5, "examples": 32, "fit_distances": [10, 150],
                "effective_bias_var": 0.0052, "isotropic": {**gf.ISO, "weight_vars": [0.8]}}
    write_tables(g, {"protocol": protocol, "task_inputs": [row], "isotropic": [iso]})
    text = "\n".join(gf.GradientFlow().section(g))
    for s in ("0.1234", "0.1250", "-1.3%", "1.987", "0.4321", "-0.3%", "T = 200", "0.0567",
              "For 1 of the 1 tanh RNNs"):
        assert s in text, s
