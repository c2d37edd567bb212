"""``OUT/README.md``: every experiment's numbers beside the tutorial's, then the figures.

The report is a function of the files in ``OUT`` alone, never of what was just trained: each
sweep-shaped experiment contributes the rows of its ``OUT/NAME/summary.json``, each
figure-only experiment the numbers of its ``OUT/NAME/tables.json``, every experiment the PNGs
it declares (:attr:`vgjax.experiments.Experiment.figures`) that exist, and
``OUT/benchmark.json`` the benchmark section. So running any subset of experiments rebuilds
the whole report, and a fresh clone (which has no ``history.npz``) can rebuild it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vgjax import experiments as ex
from vgjax.outdir import SUMMARY_NAME
from vgjax.store import atomic_write_text, dumps_json, jsonable, sanitize_name
from vgjax.summary import load_summary
from vgjax.result import SweepResult, final_metric, seed_stats

TABLES_NAME = "tables.json"
TABLES_FORMAT, TABLES_VERSION = "vgjax.tables", 1
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


def write_tables(exp_dir: Path, tables: dict[str, Any]) -> Path:
    """Write a figure-only experiment's numbers as ``EXP_DIR/tables.json`` (atomically)."""
    path = Path(exp_dir) / TABLES_NAME
    atomic_write_text(path, dumps_json(jsonable(
        {"format": TABLES_FORMAT, "version": TABLES_VERSION, **tables})))
    return path


def _read_tables(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"report: {str(path)!r} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != TABLES_FORMAT \
            or data.get("version") != TABLES_VERSION:
        raise ValueError(f"report: {str(path)!r} is not a vgjax tables file version "
                         f"{TABLES_VERSION}")
    return data


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


def _ms(st: dict[str, Any], i: int | None = None, fmt: str = ".2f") -> str:
    """'mean ± std' of a seed-statistics entry (element ``i`` of per-layer lists)."""
    m, sd = (st["mean"], st["std"]) if i is None else (st["mean"][i], st["std"][i])
    return "n/a" if m is None else f"{m:{fmt}} ± {sd:{fmt}}"


def saturation_section(t: dict[str, Any]) -> list[str]:
    """The ``saturation`` section: saturated share per layer at init, epoch 1 and the end,
    and what it says about U(0,1) weights (issue #12)."""
    cols = t["columns"]
    lines = ["", "## saturation: saturated tanh units per layer (|φ′| < 0.05 on the training set)",
             "", "Share of (unit, training point) pairs of each hidden layer whose tanh is "
             "saturated (Glorot & Bengio 2010), mean ± std over seeds, at initialisation, "
             "after epoch 1 and at the end; 5 hidden layers of 5 units, recorded with "
             "`--probe signal`.", "",
             "| layer | " + " | ".join(f"{c['label']}: init → epoch 1 → end" for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for i, label in enumerate(t["layers"]):
        cells = [f"{_ms(c['init'], i)} → {_ms(c['epoch1'], i)} → {_ms(c['final'], i)}"
                 for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    u, g = cols[0], cols[-1]
    lines += ["", "U(0,1) weights have mean E[w] = 0.5, so every unit of layer l + 1 receives "
              "the same drift 0.5 · Σ_j tanh(h_l,j) on top of a zero-mean part: the "
              "zero-mean mean-field theory (q-map and χ₁ of Poole et al. 2016, `vgjax theory`) "
              "does not describe these nets. What the probe measures instead: the saturated "
              f"share of the {u['label']} nets grows layer by layer, at initialisation "
              f"{_layer_walk(u['init'])} and at the end {_layer_walk(u['final'])}, while the "
              f"{g['label']} nets start at {_layer_walk(g['init'])} and end at "
              f"{_layer_walk(g['final'])}. A saturated unit passes almost no gradient "
              "(|φ′| < 0.05), so the deep layers of the U(0,1) nets learn little: the "
              "mechanism behind the tutorial's failing 5-layer net (Glorot & Bengio 2010)."]
    return lines


def _layer_walk(st: dict[str, Any]) -> str:
    """'0.00 → 0.18 → 0.64' over the layers (seed means)."""
    return " → ".join("n/a" if m is None else f"{m:.2f}" for m in st["mean"])


def dead_relu_section(t: dict[str, Any]) -> list[str]:
    """The ``dead-relu`` section: dead ReLU units against depth and whether a fully dead
    layer explains the runs that stop learning (issue #12)."""
    lines = ["", "## dead-relu: dead ReLU units against depth (ReLU/He, width 5)", "",
             "A unit is dead when its ReLU is 0 on every training point; a layer is fully "
             "dead when all its units are (the net's output is then constant and no gradient "
             "reaches the layers below). Dead share: mean over a run's layers, then mean ± std "
             "over seeds; 'learns' as everywhere in this report.", "",
             "| depth | seeds | share that learns | dead share, init | dead share, end | "
             "fully dead layer, init | fully dead layer, end | learns: without / with a fully "
             "dead layer (end) |", "|---" * 8 + "|"]
    for r in t["rows"]:
        without = "–" if r["learn_without_dead_layer"] is None else f"{r['learn_without_dead_layer']:.2f}"
        with_ = "–" if r["learn_with_dead_layer"] is None else f"{r['learn_with_dead_layer']:.2f}"
        lines.append(f"| {r['depth']} | {r['n_seeds']} | {r['share_learn']:.2f} | "
                     f"{_ms(r['dead_init'])} | {_ms(r['dead_final'])} | "
                     f"{r['share_fully_dead_init']:.2f} | {r['share_fully_dead_final']:.2f} | "
                     f"{without} / {with_} |")
    deep = [r for r in t["rows"] if r["depth"] >= 15]
    if deep:
        n_dead = sum(r["share_fully_dead_final"] * r["n_seeds"] for r in deep)
        n_all = sum(r["n_seeds"] for r in deep)
        n_learn = sum(r["share_learn"] * r["n_seeds"] for r in deep)
        learn_dead = sum((r["learn_with_dead_layer"] or 0.0) * r["share_fully_dead_final"]
                         * r["n_seeds"] for r in deep)
        n_fail, fail_dead = n_all - n_learn, n_dead - learn_dead
        share = fail_dead / n_fail if n_fail else 0.0
        verdict = ("so a fully dead layer accounts for nearly every deep run that stops "
                   "learning" if share >= 0.8 else
                   "so a fully dead layer accounts for part of the deep runs that stop "
                   "learning, not all")
        lines += ["", f"At depths 15–25, {n_learn:.0f} of {n_all} runs learn. "
                  f"{n_dead:.0f} runs end with a fully dead layer and {learn_dead:.0f} of "
                  f"those learn; {fail_dead:.0f} of the {n_fail:.0f} runs that do not learn "
                  f"have one ({share:.0%}), {verdict} (cf. Lu et al. 2019, *Dying ReLU and "
                  "initialization*: deep narrow ReLU nets collapse to a constant function)."]
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
        t = _read_tables(exp_dir / TABLES_NAME)
        if t is not None:
            tables[name] = t
    return summaries, tables


def render(out: str | Path) -> str:
    """The report of everything in ``out`` as Markdown (figure links relative to ``out``)."""
    out = Path(out)
    summaries, tables = _load_all(out)
    threshold = next(iter(summaries.values()), {}).get("learn_threshold", ex.LEARN_THRESHOLD)
    lines = [
        "# vgjax reproduction: *How to Fix the Vanishing Gradients Problem Using the ReLU*",
        "",
        f"Every number is over {_protocol(summaries)}, "
        "the tutorial's protocol (two circles, 500 train / 500 test points, SGD lr 0.01 "
        "momentum 0.9, batch 32) unless the experiment says otherwise. The tutorial reports "
        "single runs. A run *learns* when it did not diverge and its final test accuracy is "
        f">= {threshold}. Cells read mean ± std [min–max] over seeds.",
        "",
        "| experiment | depth × width | tutorial | train accuracy | test accuracy | "
        "share that learns | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        if name != "tanh-breadth":
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
    if "saturation" in tables:
        lines += saturation_section(tables["saturation"])
    if "dead-relu" in tables:
        lines += dead_relu_section(tables["dead-relu"])
    lines += ["", "## Figures", ""]
    for name, exp in ex.EXPERIMENTS.items():
        for fig in exp.figures:
            if (out / sanitize_name(name) / fig).is_file():
                rel = f"{sanitize_name(name)}/{fig}"
                lines += [f"### {name}: {Path(fig).stem.replace('_', ' ')}", "",
                          f"![{name}]({rel})", ""]
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
