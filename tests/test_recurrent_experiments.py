"""The recurrent experiments' host side: the runs they make, the solved-share table, and
sections rendered only from the files in the experiment's directory."""

import numpy as np
import pytest

from vgjax.experiments.recurrent import EXPERIMENTS, GROUP
from vgjax.experiments.recurrent import clipping as cl
from vgjax.experiments.recurrent import gradient_flow as gf
from vgjax.experiments.recurrent import length as ln
from vgjax.io.tables import write_tables


def test_the_group_lists_its_experiments_with_the_protocol_fields():
    assert [e.name for e in EXPERIMENTS] == ["rnn-gradient-flow", "rnn-clipping", "rnn-length"]
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
    rows = [{"net": net, "length": t, "seeds": 5, "solved_share": s, "median_mse": m}
            for net, t, s, m in (("tanh", 10, 0.2, 0.05), ("tanh", 25, 0.0, 0.15),
                                 ("LSTM", 10, 0.8, 0.0042), ("LSTM", 25, 0.2, 0.1234))]
    write_tables(d, {"budget": ln.Budget(lengths=(10, 25), steps=777)._asdict(),
                     "solved_mse": 0.01, "baseline": 1 / 6, "rows": rows,
                     "timing": {"compile_s": 12.0, "train_s": 345.0, "runs": 10}})
    text = "\n".join(ln.Length().section(d))
    assert "777 Adam steps" in text and "80% (0.004)" in text and "20% (0.123)" in text
    assert "trained in 345 s" in text
    assert "LSTM: 25." in text                  # T = 10: the tanh RNN solves a seed too
    assert "Not in this budget: T = 50, 100, 200, 400" in text
    assert ln.separation_sentence(rows, "tanh").endswith("on none — LSTM: 25.")

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
    assert "Stacked layers" not in text             # files without the stacked study
    stacked = [{"net": "LSTM x2", "layer": 1, "layers": 2, "below_top_last": np.log(0.5),
                "below_top_first": np.log(0.01), "measured_decay": 0.0321,
                "lambda1_gamma": None, "saturation": 0.25},
               {"net": "LSTM x2", "layer": 2, "layers": 2, "below_top_last": 0.0,
                "below_top_first": -1.5, "measured_decay": 0.0123, "lambda1_gamma": None,
                "saturation": 0.125}]
    write_tables(g, {"protocol": protocol, "task_inputs": [row], "isotropic": [iso],
                     "stacked": stacked})
    text = "\n".join(gf.GradientFlow().section(g))
    for s in ("| LSTM x2 | 1 | -0.693 | -4.605 | 0.0321 | – | 25.0% |",
              "| LSTM x2 | 2 | +0.000 | -1.500 | 0.0123 | – | 12.5% |",
              "in the LSTM x2 the first layer's gradient at the last step is 0.5 times the top "
              "layer's and 0.01 times at the first step, and it decays by 0.0321 per step back "
              "in time against 0.0123 in layer 2."):
        assert s in text, s


def test_stacked_flow_per_layer_at_tiny_sizes(tmp_path):
    # every layer of a stacked net measured, rows per layer, the figure's layer panels
    nets = tuple(n._replace(label=f"{n.cell} x{n.layers}") for n in gf.STACKED)
    length = 8
    measured = gf.measure(nets, length=length, width=4, seeds=(0, 1), examples=2)
    for net in nets:
        m = measured[net.label]
        assert m["log_rms"].shape == (2, 3, length) and np.isfinite(m["log_rms"]).all()
        assert m["lambda1"].shape == (2, 3) and "spectral_radius" not in m
    rows = gf.stacked_rows(measured, nets, length=length, fit=(1, 6))
    assert [(r["net"], r["layer"]) for r in rows] == [(n.label, k) for n in nets
                                                      for k in (1, 2, 3)]
    top = measured["rnn x3"]["log_rms"].mean(axis=0)[-1, -1]
    first = measured["rnn x3"]["log_rms"].mean(axis=0)[0, 0]
    assert rows[0]["below_top_first"] == pytest.approx(first - top)
    assert rows[2]["below_top_last"] == 0.0 and rows[3]["lambda1_gamma"] is None
    curve = gf._curve(measured["rnn x3"]["log_rms"][:, 0], length)
    data = {"length": length, "width": 4, "curves": {"a": {**curve, "theory": None}},
            "isotropic": {"1.0": {"mean": [0.0, -1.0], "theory": [0.0, -1.0]}},
            "stacked": {n.label: {str(k + 1): gf._curve(measured[n.label]["log_rms"][:, k],
                                                        length) for k in range(3)}
                        for n in nets}}
    assert gf._figure(data, tmp_path / "f.png").stat().st_size > 0


def test_clipping_table_counts_blow_ups_and_renders_from_its_file(tmp_path):
    p = cl.Protocol(weight_vars=(4.0,), clips=(None, 1.0), seeds=2, steps=3)
    runs = cl.make_runs(p)
    assert [(r.scale, r.clip_norm, r.seed) for r in runs] == [
        (4.0, None, 0), (4.0, None, 1), (4.0, 1.0, 0), (4.0, 1.0, 1)]
    assert {(r.cell, r.activation, r.init) for r in runs} == {("rnn", "tanh", "normal")}
    train = np.array([[1.0, 2.0, np.nan], [1.0, 0.5, 0.2], [1.0, 0.9, 0.8], [1.0, 0.9, 0.7]])
    grad = np.array([[50.0, 900.0, np.nan], [40.0, 10.0, 5.0], [60.0, 0.5, 3.0],
                     [20.0, 2.0, 0.1]])
    test = np.array([[0.2, np.nan], [0.2, 0.1], [0.2, 0.17], [0.2, 0.15]])
    free, clipped = cl.summarize(runs, train, grad, test, np.array([2.0, 3.0, 2.5, 2.7]), 1 / 6)
    assert free["lambda1_gamma"] == 2.5 and clipped["lambda1_gamma"] == 2.6
    assert free["nonfinite_share"] == 0.5 and clipped["nonfinite_share"] == 0.0
    assert free["worse_than_chance_share"] == 0.5          # the NaN run; 0.1 < 1/6
    assert clipped["worse_than_chance_share"] == 0.5       # 0.17 >= 1/6
    assert free["initial_grad_norm"] == 45.0 and free["max_grad_norm"] == np.median([900, 40])
    assert free["clipped_step_share"] is None and clipped["clipped_step_share"] == 4 / 6
    assert free["median_final_mse"] == np.inf

    d = tmp_path / "rnn-clipping"
    d.mkdir()
    assert cl.Clipping().section(d) == []
    write_tables(d, {"protocol": {**p._asdict(), "optimizer": "sgd", "task": "adding"},
                     "baseline": 1 / 6, "rows": [free, clipped],
                     "timing": {"compile_s": 7.0, "train_s": 89.0, "runs": 4}})
    text = "\n".join(cl.Clipping().section(d))
    for s in ("| 4 | no clipping | 50% | 50% | ∞ (NaN) | 2.50 | 45 |", "| 4 | clip 1 | 0% | 50% |",
              "λ₁γ ≥ 2.50 > 1, their necessary condition",
              "trained in 89 s", "Without clipping 1 of 2 runs became non-finite, with "
              "clipping 0 of 2"):
        assert s in text, s
