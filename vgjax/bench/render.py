"""What a benchmark.json becomes: the markdown table (W600 against its targets, scaling, wide
grids, crossover) and the two-panel figure."""

from __future__ import annotations

from pathlib import Path

from vgjax.bench.remedies_cases import render_remedies
from vgjax.bench.recurrent_cases import render_recurrent
from vgjax.io.tables import markdown_table


TARGETS = {"train_s": 30.0, "total_s": 60.0, "compile_s": 20.0, "peak_rss_mb": 2048.0}


# W600's compile seconds in a second process, with the persistent compilation cache.
SECOND_PROCESS_COMPILE_TARGET_S = 2.0
REPRODUCE_TARGET_MIN = 10  # the target: `vgjax reproduce` (30 seeds, 500 epochs) on a 2-core machine
GROUP_TARGET_MIN = 15      # the target of each other group, `vgjax reproduce --group NAME`


def _second_process_rows(b: dict) -> list[list[str]]:
    c = b.get("w600_second_process")  # absent from benchmarks made before it existed
    if not c:
        return []
    return [[f"compilation in a second process (persistent cache: {c['cache_hits']} hits)",
             f"{c['compile_s']:.1f} s", f"<= {SECOND_PROCESS_COMPILE_TARGET_S:.0f} s"]] + [
        ["the same, tracing the programs again (no stored programs)", f"{t['compile_s']:.1f} s",
         ""] for t in [b.get("w600_second_process_traced")] if t]


def render_table(b: dict) -> str:
    """Markdown table of a benchmark.json dict."""
    w = b["w600"]
    lines = markdown_table([f"W600 (600 runs x {w['epochs']} epochs)", "measured", "target"], [
        ["training", f"{w['train_s']:.1f} s ({w['ms_per_run_epoch']:.3f} ms per run-epoch, "
         f"{w['run_epochs_per_s']:.0f} run-epochs/s)", "<= 30 s"],
        ["compilation (2 programs)", f"{w['compile_s']:.1f} s", "<= 20 s"],
        ["TensorBoard / history + summary / figures", f"{w['tensorboard_s']:.1f} / "
         f"{w['history_summary_s']:.1f} / {w['figures_s']:.1f} s", ""],
        ["everything written, end to end", f"{w['total_s']:.1f} s", "<= 60 s"],
        ["peak resident memory", f"{w['peak_rss_mb']:.0f} MB", "<= 2048 MB"],
        ["FLOPs: real layers / as computed (all 10 layers, padded)",
         f"{w['useful_gflop']:.0f} / {w['padded_gflop']:.0f} GFLOP", ""],
        ["useful GFLOP/s vs large-matmul ceiling", f"{w['useful_gflop_per_s']:.2f} of "
         f"{b['ceiling']['gflop_per_s']:.0f} GFLOP/s ({100 * w['ceiling_fraction']:.1f} %)", ""],
        ["second sweep of the same shape recompiles", f"{w['second_sweep_recompiles']} times",
         "0"],
        *_second_process_rows(b),
        [f"training on {w.get('devices', '?')} devices vs 1 device (separate runs)",
         f"{w['train_s']:.1f} s vs {b['w600_one_device']['train_s']:.1f} s", ""],
        ["single deep-relu run, after compilation", f"{b['latency']['latency_s']:.2f} s "
         f"({b['latency']['ms_per_epoch']:.3f} ms per epoch)", ""],
    ])
    lines += ["", *markdown_table(
        ["runs", "epochs", "chunk size x chunks", "ms per run-epoch", "peak memory"],
        ([r["runs"], r["epochs"], f"{r['chunk_size']} x {r['n_chunks']}",
          f"{r['ms_per_run_epoch']:.4f}", f"{r['peak_rss_mb']:.0f} MB"] for r in b["scaling"]))]
    lines += render_wide(b)
    lines += ["", "![benchmark](benchmark.png)"]
    return "\n".join(lines)


def render_wide(b: dict) -> list[str]:
    """Markdown lines for the wide grids, the engine crossover and the reproduction."""
    lines: list[str] = []
    if b.get("wide"):
        lines += ["", *markdown_table(
            ["wide grid (20 epochs, auto engine)", "compile", "training", "useful GFLOP/s",
             "batched-matmul ceiling", "fraction (target)"],
            ([f"{r['name']}: depths {','.join(map(str, r['depths']))} x width {r['width']} x "
              f"{r['seeds']} seeds ({r['engine']}, {r['n_blocks']} depth blocks)",
              f"{r['compile_s']:.1f} s (<= 10 s: {'met' if r['compile_s'] <= 10.0 else 'missed'})",
              f"{r['train_s']:.1f} s", f"{r['useful_gflop_per_s']:.1f}",
              f"{r['ceiling_gflop_per_s']:.1f} GFLOP/s",
              f"{100 * r['ceiling_fraction']:.0f} % (>= {100 * r['target_fraction']:.0f} %: "
              f"{'met' if r['ceiling_fraction'] >= r['target_fraction'] else 'missed'})"]
             for r in b["wide"]))]
    if b.get("crossover"):
        lines += ["", *markdown_table(
            ["tanh-breadth shape (depths 1-10 x 30 seeds), width", "fast engine ms/run-epoch",
             "wide engine ms/run-epoch", "compile fast / wide"],
            ([r["width"], f"{r['fast']['ms_per_run_epoch']:.4f}",
              f"{r['wide']['ms_per_run_epoch']:.4f}",
              f"{r['fast']['compile_s']:.1f} / {r['wide']['compile_s']:.1f} s"]
             for r in b["crossover"]))]
    if b.get("fastroad"):
        lines += ["", *render_fastroad(b["fastroad"])]
    if b.get("remedies"):
        lines += ["", *render_remedies(b["remedies"])]
    if b.get("recurrent"):
        lines += ["", *render_recurrent(b["recurrent"])]
    if b.get("reproduce"):
        minutes = b["reproduce"]["total_s"] / 60
        ok = "met" if minutes <= REPRODUCE_TARGET_MIN else f"missed by {minutes - REPRODUCE_TARGET_MIN:.1f} min"
        lines += ["", f"`vgjax reproduce` end to end, cold compilation cache: {minutes:.1f} min "
                  f"(<= {REPRODUCE_TARGET_MIN} min: {ok})"]
        runs = b["reproduce"].get("runs") or {}
        if runs:
            lines.append(f"(per experiment, {_experiment_times(runs)})")
    for group, r in sorted((b.get("groups") or {}).items()):
        minutes = r["total_s"] / 60
        ok = "met" if minutes <= GROUP_TARGET_MIN else "missed"
        runs = r.get("runs") or {}
        lines += ["", f"`vgjax reproduce --group {group}` end to end, cold compilation cache: "
                  f"{minutes:.1f} min (<= {GROUP_TARGET_MIN} min: {ok})"
                  + (f" (trained experiments, {_experiment_times(runs)})" if runs else "")]
    return lines


def _experiment_times(runs: dict) -> str:
    # a reproduction's trained experiments, slowest first (case_reproduce's ``runs``)
    order = sorted(runs.items(), key=lambda kv: -kv[1]["total_s"])
    return "total / of it compiling: " + ", ".join(
        f"{k} {v['total_s']:.0f} / {v['compile_s']:.1f} s" for k, v in order)


def render_fastroad(pairs: list[dict]) -> list[str]:
    """Markdown lines for the off-road pairs (each measured back to back in one process) and
    the PyTorch peer of the Adam pair."""
    def engines(sides):
        return "/".join(sorted({f"{r['engine']} x{r['devices']}" for r in sides}))
    lines = markdown_table(
        ["off the road (same grid on the road)", "off-road training", "road training",
         "ratio (target)", "engine x devices"],
        ([f"{r['pair']} ({r['epochs']} epochs)", f"{r['off_train_s']:.1f} s",
          f"{r['road_train_s']:.1f} s",
          f"{r['ratio']:.2f}x (<= {r['target_ratio']}x: "
          f"{'met' if r['ratio'] <= r['target_ratio'] else 'missed'})",
          f"{engines(r['off'])} / {engines(r['road'])}"] for r in pairs))
    for r in pairs:
        t = r.get("torch") or {}
        if t.get("speedup") is None:
            continue
        verdict = (f"{t['speedup']:.2f}x faster (>= {t['target_speedup']}x: "
                   f"{'met' if t['speedup'] >= t['target_speedup'] else 'missed'})")
        if t.get("torch_curves_s") is None:   # a peer timed before it recorded curves
            lines += ["", f"torch.func vmap ensemble of the {r['pair']} pair's nets with "
                      f"torch.optim.Adam: {t['torch_train_s']:.1f} s, so vgjax is {verdict}"]
        else:
            lines += ["", f"torch.func vmap ensemble of the {r['pair']} pair's nets with "
                      "torch.optim.Adam, recording every net's training and test loss and "
                      "accuracy after every epoch as vgjax's history does: "
                      f"{t['torch_curves_s']:.1f} s, so vgjax is {verdict}; training alone, "
                      f"without the curves: {t['torch_train_s']:.1f} s "
                      f"({t['train_only_speedup']:.2f}x)"]
    return lines


def plot_benchmark(b: dict, path: Path) -> Path:
    """Two panels: time per run-epoch and peak memory against the number of runs (log x),
    with W600's point and the memory targets marked. Saved atomically as a PNG."""
    from matplotlib.figure import Figure

    from vgjax.figures import save_png
    runs = [r["runs"] for r in b["scaling"]]
    fig = Figure(figsize=(10, 3.8), dpi=110, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(runs, [r["ms_per_run_epoch"] for r in b["scaling"]], "o-", label="ReLU/He, depths 1-10")
    w = b["w600"]
    ax1.plot([w["runs"]], [w["ms_per_run_epoch"]], "s", color="C3", label="W600 (tanh + ReLU)")
    ax1.axhline(0.1, ls=":", color="gray", label="W600 target (30 s)")
    ax1.set(xscale="log", yscale="log", xlabel="runs in the sweep", ylabel="ms per run-epoch",
            title="training time per run-epoch")
    ax1.legend(fontsize="small")
    ax2.plot(runs, [r["peak_rss_mb"] for r in b["scaling"]], "o-", label="peak resident memory")
    ax2.plot([w["runs"]], [w["peak_rss_mb"]], "s", color="C3", label="W600, all outputs")
    ax2.axhline(2048, ls=":", color="C3", label="W600 target (2 GB)")
    ax2.axhline(4096, ls=":", color="gray", label="10,000-run target (4 GB)")
    ax2.set(xscale="log", ylim=(0, 4500), xlabel="runs in the sweep", ylabel="MB",
            title="peak memory (chunked: flat in runs)")
    ax2.legend(fontsize="small")
    fig.suptitle(f"vgjax bench on {b['machine']['cpus']} CPU cores "
                 f"(10,000 runs at {b['scaling'][-1]['epochs']} epochs)")
    return save_png(fig, path)
