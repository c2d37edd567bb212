"""``OUT/README.md``: every experiment's numbers beside the tutorial's, then the figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vgjax import experiments as ex
from vgjax import io, plots
from vgjax.result import SweepResult


def _acc_cell(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std():.3f} [{v.min():.3f}–{v.max():.3f}]"


def _config_rows(name: str, exp: ex.Experiment, res: SweepResult) -> list[str]:
    finals = io.final_values(res)
    runs = res.runs
    rows = []
    for depth in res.depths:
        for width in res.widths:
            idx = np.flatnonzero((runs.depth == depth) & (runs.width == width))
            tr, te = finals["train_accuracy"][idx], finals["test_accuracy"][idx]
            learn = np.mean(np.nan_to_num(te, nan=0.0) >= ex.LEARN_THRESHOLD)
            reported = exp.reported
            if name == "relu-depth":
                reported = {15: "learns", 20: "no longer learns"}.get(depth, "")
            rows.append(f"| {name} | {depth} × {width} | {reported} | {_acc_cell(tr)} | "
                        f"{_acc_cell(te)} | {learn:.2f} | {int(runs.diverged[idx].sum())} |")
    return rows


def _epoch_mean(res: SweepResult, stat: str) -> np.ndarray:
    """[R, L] each run's mean over epochs of a per-layer statistic (NaN-aware)."""
    a = res.history[stat]
    with np.errstate(invalid="ignore"):
        return np.nanmean(a, axis=1) if np.isfinite(a).any() else np.full(a.shape[::2], np.nan)


def _layer_labels(depth: int) -> list[tuple[int, str]]:
    return [(i, f"hidden {i + 1}") for i in range(depth)] + [(-1, "output")]


def _gradient_table(tanh: SweepResult, relu: SweepResult) -> list[str]:
    lines = ["| layer | tanh, steps | tanh, test set | ReLU, steps | ReLU, test set |",
             "|---|---|---|---|---|"]
    cols = []
    for res in (tanh, relu):
        for stat in ("grad_mean_abs", "test_grad_mean_abs"):
            cols.append(_epoch_mean(res, stat) if stat in res.history else None)
    for i, label in _layer_labels(max(tanh.depths)):
        cells = []
        for c in cols:
            v = None if c is None else c[:, i][np.isfinite(c[:, i])]
            cells.append("n/a" if v is None or v.size == 0 else f"{v.mean():.3g} ± {v.std():.2g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _weight_table(tanh: SweepResult, relu: SweepResult) -> list[str]:
    lines = ["| layer | tanh: L1 after epoch 1 → last | ReLU: L1 after epoch 1 → last |",
             "|---|---|---|"]
    for i, label in _layer_labels(max(tanh.depths)):
        cells = []
        for res in (tanh, relu):
            first = np.nanmean(res.history["weight_l1"][:, 0, i])
            last = np.nanmean(plots.final_metric(res, "weight_l1")[:, i])
            cells.append(f"{first:.3g} → {last:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _breadth_table(res: SweepResult) -> list[str]:
    finals = io.final_values(res)["test_accuracy"]
    runs = res.runs
    head = "| width \\ depth | " + " | ".join(str(d) for d in res.depths) + " |"
    lines = [head, "|---" * (len(res.depths) + 1) + "|"]
    for w in res.widths:
        cells = []
        for d in res.depths:
            v = finals[(runs.depth == d) & (runs.width == w)]
            learn = np.mean(np.nan_to_num(v, nan=0.0) >= ex.LEARN_THRESHOLD)
            cells.append(f"{np.nanmean(v):.2f} ({learn:.0%})")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def render(out: Path, names: list[str], results: dict[str, SweepResult],
           figures: dict[str, list[Path]], *, seeds: tuple[int, ...]) -> str:
    """The report as Markdown text (figure links relative to ``out``)."""
    any_res = next(iter(results.values()), None)
    epochs = any_res.config.epochs if any_res is not None else 0
    lines = [
        "# vgjax reproduction: *How to Fix the Vanishing Gradients Problem Using the ReLU*",
        "",
        f"Every number is over **{len(seeds)} seeds** ({_seed_text(seeds)}), {epochs} epochs, "
        "the tutorial's protocol (two circles, 500 train / 500 test points, SGD lr 0.01 "
        "momentum 0.9, batch 32) unless the experiment says otherwise. The tutorial reports "
        "single runs. A run *learns* when its final test accuracy is "
        f">= {ex.LEARN_THRESHOLD}. Cells read mean ± std [min–max] over seeds.",
        "",
        "| experiment | depth × width | tutorial | train accuracy | test accuracy | "
        "share that learns | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        exp = ex.get(name)
        if name in results and name != "tanh-breadth":
            lines += _config_rows(name, exp, results[name])
    if "tanh-breadth" in results:
        lines += ["", "## tanh-breadth (extension 5): final test accuracy (share that learns)",
                  "", *_breadth_table(results["tanh-breadth"])]
    if "deep-tanh" in results and "deep-relu" in results:
        if "gradients" in names:
            lines += ["", "## gradients: mean |dL/dW| per layer, averaged over epochs",
                      "", f"Tutorial: {ex.get('gradients').reported}. 'steps' averages the "
                      "training minibatch gradients; 'test set' is the gradient on the test "
                      "data at each epoch's end, as the tutorial's Keras callback computed it.",
                      "", *_gradient_table(results["deep-tanh"], results["deep-relu"])]
        if "weight-norms" in names:
            lines += ["", "## weight-norms (extension 3): seed-mean L1 norm of each kernel",
                      "", *_weight_table(results["deep-tanh"], results["deep-relu"])]
    lines += ["", "## Figures", ""]
    for name in names:
        for fig in figures.get(name, []):
            rel = Path(os.path.relpath(fig, out)).as_posix()
            lines += [f"### {name}: {fig.stem.replace('_', ' ')}", "", f"![{name}]({rel})", ""]
    lines += ["TensorBoard logs (not committed): `tensorboard --logdir "
              f"{(out / 'tensorboard').as_posix()}`", ""]
    return "\n".join(lines) + benchmark_section(out)


BENCH_START, BENCH_END = "<!-- benchmark -->", "<!-- /benchmark -->"


def benchmark_section(out: Path) -> str:
    """The benchmark table from ``OUT/benchmark.json`` between markers ('' if absent)."""
    path = Path(out) / "benchmark.json"
    if not path.exists():
        return ""
    from vgjax.bench import render_table
    table = render_table(json.loads(path.read_text()))
    return (f"\n{BENCH_START}\n## Benchmark (`vgjax bench`, this machine)\n\n{table}\n"
            f"{BENCH_END}\n")


def refresh_benchmark(out: Path) -> Path:
    """Replace (or append) the benchmark section of ``OUT/README.md``."""
    path = Path(out) / "README.md"
    text = path.read_text() if path.exists() else ""
    if BENCH_START in text and BENCH_END in text:
        head, rest = text.split(BENCH_START, 1)
        text = head.rstrip("\n") + "\n" + rest.split(BENCH_END, 1)[1].lstrip("\n")
    io.atomic_write_text(path, text.rstrip("\n") + "\n" + benchmark_section(out))
    return path


def _seed_text(seeds: tuple[int, ...]) -> str:
    s = sorted(seeds)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"seeds {s[0]}–{s[-1]}"
    return "seeds " + ", ".join(map(str, s))


def write_report(out: Path, names: list[str], results: dict[str, SweepResult],
                 figures: dict[str, list[Path]], *, seeds: tuple[int, ...]) -> Path:
    """Write ``OUT/README.md`` atomically and return its path."""
    path = Path(out) / "README.md"
    io.atomic_write_text(path, render(Path(out), names, results, figures, seeds=seeds))
    return path
