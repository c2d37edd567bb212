"""``OUT/README.md``: every experiment's numbers beside the tutorial's, then the figures.

The report is a function of the files in ``OUT`` alone, never of what was just trained: each
sweep-shaped experiment contributes the rows of its ``OUT/NAME/summary.json``, each
figure-only experiment the numbers of its ``OUT/NAME/tables.json``, every experiment the PNGs
it declares (:attr:`vgjax.experiments.Experiment.figures`) that exist, and
``OUT/benchmark.json`` the benchmark section. The tutorial group fills the accuracy table
and the figure list; the signal group gets its own sections (:mod:`vgjax.experiments.signal.report`).
So running any subset of experiments rebuilds
the whole report, and a fresh clone (which has no ``history.npz``) can rebuild it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vgjax import experiments as ex
from vgjax.io.outdir import SUMMARY_NAME
from vgjax.experiments.signal.report import signal_sections
from vgjax.io.store import atomic_write_text, sanitize_name
from vgjax.io.summary import load_summary
from vgjax.io.tables import TABLES_NAME, read_tables
from vgjax.result import SweepResult, final_metric, seed_stats

BENCH_START, BENCH_END = "<!-- benchmark -->", "<!-- /benchmark -->"


# ----------------------------------------------------------------- numbers of figure-only experiments


def _layer_labels(n_layers: int) -> list[str]:
    return [f"hidden {i + 1}" for i in range(n_layers - 1)] + ["output"]


def _epoch_mean(res: SweepResult, stat: str) -> np.ndarray:
    """[R, L] each run's mean over epochs of a per-layer statistic (finite epochs only)."""
    return seed_stats(res.history[stat], axis=1)["mean"]


def gradient_tables(tanh: SweepResult, relu: SweepResult) -> dict[str, Any]:
    """The ``gradients`` numbers: per layer, seed mean ± std of the epoch-mean |dL/dW|."""
    columns = []  # a list, not a dict: JSON keys are sorted, the column order is not
    for label, res in (("tanh", tanh), ("ReLU", relu)):
        for stat, where in (("grad_mean_abs", "steps"), ("test_grad_mean_abs", "test set")):
            st = seed_stats(_epoch_mean(res, stat)) if stat in res.history else None
            columns.append({"label": f"{label}, {where}", "mean": None if st is None else st["mean"],
                            "std": None if st is None else st["std"]})
    return {"layers": _layer_labels(tanh.n_layers), "columns": columns}


def weight_tables(tanh: SweepResult, relu: SweepResult) -> dict[str, Any]:
    """The ``weight-norms`` numbers: per layer, seed mean of the kernel L1 after epoch 1 and
    at the end (the final value: the last epoch before a run diverged)."""
    columns = []
    for label, res in (("tanh", tanh), ("ReLU", relu)):
        columns.append({"label": label,
                        "first": seed_stats(res.history["weight_l1"][:, 0])["mean"],
                        "last": seed_stats(final_metric(res, "weight_l1"))["mean"]})
    return {"layers": _layer_labels(tanh.n_layers), "columns": columns}


# ------------------------------------------------------------------------------ Markdown


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _acc_cell(st: dict[str, float | None]) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{st['mean']:.3f} ± {st['std']:.3f} [{st['min']:.3f}–{st['max']:.3f}]"


def _config_rows(name: str, exp: ex.Experiment, summary: dict[str, Any]) -> list[str]:
    rows = []
    for g in summary["groups"]:
        reported = exp.reported
        if name in ("relu-depth", "dead-relu"):
            reported = {15: "learns", 20: "no longer learns"}.get(g["depth"], "")
        rows.append(f"| {name} | {g['depth']} × {g['width']} | {reported} | "
                    f"{_acc_cell(g['final_train_accuracy'])} | "
                    f"{_acc_cell(g['final_test_accuracy'])} | {g['share_learn']:.2f} | "
                    f"{g['n_diverged']} |")
    return rows


def _breadth_table(summary: dict[str, Any]) -> list[str]:
    groups = {(g["width"], g["depth"]): g for g in summary["groups"]}
    depths, widths = summary["grid"]["depths"], summary["grid"]["widths"]
    lines = ["| width \\ depth | " + " | ".join(str(d) for d in depths) + " |",
             "|---" * (len(depths) + 1) + "|"]
    for w in widths:
        cells = []
        for d in depths:
            g = groups[(w, d)]
            cells.append(f"{_num(g['final_test_accuracy']['mean'], '.2f')} "
                         f"({g['share_learn']:.0%})")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def _gradient_lines(t: dict[str, Any]) -> list[str]:
    cols = t["columns"]
    lines = ["| layer | " + " | ".join(c["label"] for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for i, label in enumerate(t["layers"]):
        cells = ["n/a" if c["mean"] is None or c["mean"][i] is None
                 else f"{c['mean'][i]:.3g} ± {c['std'][i]:.2g}" for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _weight_lines(t: dict[str, Any]) -> list[str]:
    cols = t["columns"]
    lines = ["| layer | " + " | ".join(f"{c['label']}: L1 after epoch 1 → last" for c in cols)
             + " |",
             "|---" * (len(cols) + 1) + "|"]
    for i, label in enumerate(t["layers"]):
        cells = [f"{_num(c['first'][i], '.3g')} → {_num(c['last'][i], '.3g')}"
                 for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _seed_text(seeds: list[int]) -> str:
    s = sorted(seeds)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"seeds {s[0]}–{s[-1]}"
    return "seeds " + ", ".join(map(str, s))


def _protocol(summaries: dict[str, dict[str, Any]]) -> str:
    """'N seeds (...), E epochs' shared by most experiments, naming those that differ."""
    def key(s):
        return (tuple(s["grid"]["seeds"]), s["config"]["epochs"])
    if not summaries:
        return "no sweep results yet"
    keys = [key(s) for s in summaries.values()]
    common = max(set(keys), key=keys.count)
    text = f"**{len(common[0])} seeds** ({_seed_text(list(common[0]))}), {common[1]} epochs"
    others = [f"{n}: {len(key(s)[0])} seeds ({_seed_text(list(key(s)[0]))}), "
              f"{key(s)[1]} epochs" for n, s in summaries.items() if key(s) != common]
    return text + (f" (except {'; '.join(others)})" if others else "")


def _load_all(out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every experiment's summary and tables present in ``out``, in experiment order."""
    summaries, tables = {}, {}
    for name, exp in ex.EXPERIMENTS.items():
        exp_dir = out / sanitize_name(name)
        if exp.config is not None and (exp_dir / SUMMARY_NAME).is_file():
            summaries[name] = load_summary(exp_dir)
        t = read_tables(exp_dir / TABLES_NAME)
        if t is not None:
            tables[name] = t
    return summaries, tables


def render(out: str | Path) -> str:
    """The report of everything in ``out`` as Markdown (figure links relative to ``out``)."""
    out = Path(out)
    summaries, tables = _load_all(out)
    tutorial_summaries = {n: s for n, s in summaries.items() if n in ex.in_group("tutorial")}
    threshold = next(iter(tutorial_summaries.values()), {}).get("learn_threshold", ex.LEARN_THRESHOLD)
    lines = [
        "# vgjax reproduction: *How to Fix the Vanishing Gradients Problem Using the ReLU*",
        "",
        f"Every number is over {_protocol(tutorial_summaries)}, "
        "the tutorial's protocol (two circles, 500 train / 500 test points, SGD lr 0.01 "
        "momentum 0.9, batch 32) unless the experiment says otherwise. The tutorial reports "
        "single runs. A run *learns* when it did not diverge and its final test accuracy is "
        f">= {threshold}. Cells read mean ± std [min–max] over seeds.",
        "",
        "| experiment | depth × width | tutorial | train accuracy | test accuracy | "
        "share that learns | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    tutorial = set(ex.in_group("tutorial"))
    for name, summary in summaries.items():
        if name != "tanh-breadth" and name in tutorial:
            lines += _config_rows(name, ex.get(name), summary)
    if "tanh-breadth" in summaries:
        lines += ["", "## tanh-breadth (extension 5): final test accuracy (share that learns)",
                  "", *_breadth_table(summaries["tanh-breadth"])]
    if "gradients" in tables:
        lines += ["", "## gradients: mean |dL/dW| per layer, averaged over epochs",
                  "", f"Tutorial: {ex.get('gradients').reported}. 'steps' averages the "
                  "training minibatch gradients; 'test set' is the gradient on the test "
                  "data at each epoch's end, as the tutorial's Keras callback computed it.",
                  "", *_gradient_lines(tables["gradients"])]
    if "weight-norms" in tables:
        lines += ["", "## weight-norms (extension 3): seed-mean L1 norm of each kernel",
                  "", *_weight_lines(tables["weight-norms"])]
    lines += ["", "## Figures", ""]
    for name, exp in ex.EXPERIMENTS.items():
        for fig in exp.figures if name in tutorial else ():
            if (out / sanitize_name(name) / fig).is_file():
                rel = f"{sanitize_name(name)}/{fig}"
                lines += [f"### {name}: {Path(fig).stem.replace('_', ' ')}", "",
                          f"![{name}]({rel})", ""]
    lines += signal_sections(out, tables, summaries)
    lines += ["TensorBoard logs (not committed): `tensorboard --logdir "
              f"{(out / 'tensorboard').as_posix()}`", ""]
    return "\n".join(lines) + benchmark_section(out)


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
    atomic_write_text(path, text.rstrip("\n") + "\n" + benchmark_section(out))
    return path


def write_report(out: str | Path) -> Path:
    """Rebuild ``OUT/README.md`` from every experiment in ``OUT`` (atomically); its path."""
    path = Path(out) / "README.md"
    atomic_write_text(path, render(out))
    return path
