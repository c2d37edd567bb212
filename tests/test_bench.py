"""Benchmark bookkeeping (not timings: those belong to `vgjax bench`, not to tests)."""

import matplotlib.image as mpimg

from vgjax.bench import padded_flops, plot_benchmark, render_table, useful_flops


def test_flop_counts_by_hand():
    # depth 1, width 5: 2*5 + 5 = 15 weights; 6 FLOPs x 500 train + 2 x 1000 eval examples
    assert useful_flops([1], 5, epochs=1) == 15 * (6 * 500 + 2 * 1000)
    # depth 3 padded to depth 3: 10 + 2*25 + 5 = 65 weights per run
    assert padded_flops([1, 3], 5, epochs=2) == 65 * 5000 * 2 * 2
    assert useful_flops([1, 3], 5, epochs=2) == (15 + 65) * 5000 * 2


def _bench():
    w = dict(epochs=500, train_s=20.0, ms_per_run_epoch=0.067, run_epochs_per_s=15000,
             compile_s=18.0, tensorboard_s=7.0, history_summary_s=1.5, figures_s=1.7,
             total_s=49.0, peak_rss_mb=1100, useful_gflop=191, padded_gflop=360,
             useful_gflop_per_s=9.5, ceiling_fraction=0.05, second_sweep_recompiles=0,
             runs=600, devices=2)
    scale = [dict(runs=n, epochs=500, chunk_size=min(n, 300), n_chunks=1, ms_per_run_epoch=0.1,
                  peak_rss_mb=600 + n / 10) for n in (1, 10, 100)]
    return dict(w600=w, ceiling=dict(gflop_per_s=200.0), latency=dict(latency_s=0.05, ms_per_epoch=0.1),
                w600_one_device=dict(train_s=30.0), scaling=scale, machine=dict(cpus=2),
                w600_second_process=dict(compile_s=1.25, cache_hits=2, cache_misses=0))


def test_table_and_figure(tmp_path):
    table = render_table(_bench())
    assert "| training | 20.0 s" in table and "<= 30 s" in table and "30.0 s" in table
    assert table.count("\n| 1") >= 1 and "benchmark.png" in table
    img = mpimg.imread(plot_benchmark(_bench(), tmp_path / "b.png"))
    assert img.shape[0] > 100 and img.std() > 0


def test_second_process_compile_row():
    row = "| compilation in a second process (persistent cache: 2 hits) | 1.2 s | <= 2 s |"
    assert row in render_table(_bench()).splitlines()
    old = {k: v for k, v in _bench().items() if k != "w600_second_process"}
    assert "second process" not in render_table(old)  # a benchmark.json from before it


def test_reproduce_row_says_met_or_by_how_much_it_missed():
    b = _bench()
    b["reproduce"] = {"total_s": 540.0, "runs": {
        "deep-relu": {"total_s": 20.4, "compile_s": 4.96},
        "tanh-breadth": {"total_s": 200.0, "compile_s": 8.0}}}
    lines = render_table(b).splitlines()
    assert "`vgjax reproduce` end to end, cold compilation cache: 9.0 min (<= 10 min: met)" in lines
    assert ("(per experiment, total / of it compiling: tanh-breadth 200 / 8.0 s, "
            "deep-relu 20 / 5.0 s)") in lines
    b["reproduce"]["total_s"] = 690.0
    assert "11.5 min (<= 10 min: missed by 1.5 min)" in render_table(b)


def test_group_rows_say_met_or_missed():
    b = _bench()
    b["groups"] = {"signal": {"total_s": 540.0, "runs": {
        "phase-diagram": {"total_s": 300.4, "compile_s": 6.2},
        "dead-relu": {"total_s": 120.0, "compile_s": 30.0}}},
        "recurrent": {"total_s": 960.0, "runs": {}}}
    lines = render_table(b).splitlines()
    assert ("`vgjax reproduce --group signal` end to end, cold compilation cache: 9.0 min "
            "(<= 15 min: met) (trained experiments, total / of it compiling: phase-diagram "
            "300 / 6.2 s, dead-relu 120 / 30.0 s)") in lines
    assert ("`vgjax reproduce --group recurrent` end to end, cold compilation cache: 16.0 min "
            "(<= 15 min: missed)") in lines


def test_only_needs_an_existing_benchmark_and_known_cases(tmp_path, capsys):
    from vgjax import cli
    assert cli.main(["bench", "--only", "reproduce", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "benchmark.json" in err and "does not exist" in err
    assert cli.main(["bench", "--only", "fastroad,w600", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'w600'" in err and "reproduce, fastroad, remedies, recurrent" in err
    assert "signal-group, remedies-group, recurrent-group" in err
    assert list(tmp_path.iterdir()) == []


def test_recurrent_line_says_met_or_missed():
    b = _bench()
    b["recurrent"] = dict(cells=["rnn", "lstm", "gru"], lengths=[50, 100, 200], seeds=8,
                          width=64, batch=32, steps=20, runs=72, jax_train_s=40.0,
                          jax_compile_s=50.0, torch_train_s=200.0, torch_version="2.13.0",
                          torch_threads=2, speedup=5.0, target_speedup=3.0)
    line = ("Recurrent grid (rnn/lstm/gru x T 50/100/200 x 8 seeds, width 64, batch 32, 20 Adam "
            "steps, adding problem): one JAX program trains in 40.0 s (compile 50.0 s); a "
            "PyTorch loop over the same 72 runs (nn.RNN/nn.LSTM/nn.GRU, torch 2.13.0, 2 threads) "
            "200.0 s, so vgjax is 5.00x faster (>= 3x: met)")
    assert line in render_table(b).splitlines()
    b["recurrent"].update(torch_train_s=100.0, speedup=2.5)
    assert "2.50x faster (>= 3x: missed)" in render_table(b)
    b["recurrent"].update(torch_train_s=None, speedup=None)
    assert "PyTorch not installed, no peer." in render_table(b)


def test_fastroad_torch_line_is_on_equal_outputs():
    """The Adam pair's PyTorch line: the verdict on the peer that records the same curves,
    the train-only time beside it; a peer timed before it recorded curves keeps its line."""
    from vgjax.bench.render import render_fastroad

    side = [dict(engine="wide", devices=2, train_s=10.0, compile_s=5.0)]
    pair = dict(pair="adam", epochs=20, off=side, road=side, off_train_s=10.0,
                road_train_s=9.0, ratio=10.0 / 9.0, target_ratio=1.5,
                torch=dict(torch_train_s=19.0, torch_curves_s=24.0, speedup=2.4,
                           train_only_speedup=1.9, target_speedup=2.0))
    text = "\n".join(render_fastroad([pair]))
    assert ("recording every net's training and test loss and accuracy after every epoch as "
            "vgjax's history does: 24.0 s, so vgjax is 2.40x faster (>= 2.0x: met); training "
            "alone, without the curves: 19.0 s (1.90x)") in text
    pair["torch"].update(torch_curves_s=18.0, speedup=1.8)
    assert "1.80x faster (>= 2.0x: missed)" in "\n".join(render_fastroad([pair]))
    pair["torch"] = dict(torch_train_s=21.0, speedup=2.1, target_speedup=2.0)
    assert ("torch.optim.Adam: 21.0 s, so vgjax is 2.10x faster (>= 2.0x: met)"
            in "\n".join(render_fastroad([pair])))
