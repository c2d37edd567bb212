"""The tutorial group's part of ``OUT/README.md``: the protocol line, one accuracy table whose
rows the sweeps give (:meth:`Curves.rows <vgjax.experiments.tutorial.experiments.Curves.rows>`),
each experiment's own section (the sweeps' first, then the studies' that compare them), then
every figure. Host-only; a function of the files in OUT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from vgjax.io.store import sanitize_name
from vgjax.experiments.base import Sweep, figure_caption, present_figures, summary_of
from vgjax.io.tables import markdown_row, markdown_table
from vgjax.result import LEARN_THRESHOLD

TITLE = "# vgjax reproduction: *How to Fix the Vanishing Gradients Problem Using the ReLU*"
ACCURACY_HEADER = ("experiment", "depth × width", "tutorial", "train accuracy",
                   "test accuracy", "share that learns", "diverged")


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _acc_cell(st: dict[str, float | None]) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{st['mean']:.3f} ± {st['std']:.3f} [{st['min']:.3f}–{st['max']:.3f}]"


def accuracy_rows(name: str, summary: dict[str, Any], reported_at: Callable[[int], str]
                  ) -> list[str]:
    """The accuracy table's rows of one sweep, one per grid cell; ``reported_at(depth)``:
    what the tutorial reported for it."""
    return [markdown_row([name, f"{g['depth']} × {g['width']}", reported_at(g["depth"]),
                  _acc_cell(g["final_train_accuracy"]), _acc_cell(g["final_test_accuracy"]),
                  f"{g['share_learn']:.2f}", g["n_diverged"]]) for g in summary["groups"]]


def breadth_table(summary: dict[str, Any]) -> list[str]:
    """Final test accuracy (share that learns) per width (rows) x depth (columns)."""
    groups = {(g["width"], g["depth"]): g for g in summary["groups"]}
    depths, widths = summary["grid"]["depths"], summary["grid"]["widths"]
    return markdown_table(["width \\ depth", *depths], (
        [w, *(f"{_num(groups[(w, d)]['final_test_accuracy']['mean'], '.2f')} "
              f"({groups[(w, d)]['share_learn']:.0%})" for d in depths)] for w in widths))


def gradient_lines(t: dict[str, Any]) -> list[str]:
    """The gradients table: per layer, each column's mean ± std."""
    cols = t["columns"]
    return markdown_table(["layer", *(c["label"] for c in cols)], (
        [label, *("n/a" if c["mean"] is None or c["mean"][i] is None
                  else f"{c['mean'][i]:.3g} ± {c['std'][i]:.2g}" for c in cols)]
        for i, label in enumerate(t["layers"])))


def weight_lines(t: dict[str, Any]) -> list[str]:
    """The weight-norms table: per layer, each column's L1 after epoch 1 → last."""
    cols = t["columns"]
    return markdown_table(["layer", *(f"{c['label']}: L1 after epoch 1 → last" for c in cols)], (
        [label, *(f"{_num(c['first'][i], '.3g')} → {_num(c['last'][i], '.3g')}" for c in cols)]
        for i, label in enumerate(t["layers"])))


def _seed_text(seeds: list[int]) -> str:
    s = sorted(seeds)
    if s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"seeds {s[0]}–{s[-1]}"
    return "seeds " + ", ".join(map(str, s))


def protocol(summaries: dict[str, dict[str, Any]]) -> str:
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


def render(experiments: Sequence[Any], out: Path) -> list[str]:
    """The group's Markdown lines for the experiments present in ``out`` (figure links
    relative to ``out``)."""
    dirs = {e.name: Path(out) / sanitize_name(e.name) for e in experiments}
    summaries = {e.name: s for e in experiments if isinstance(e, Sweep)
                 for s in [summary_of(dirs[e.name])] if s is not None}
    threshold = next(iter(summaries.values()), {}).get("learn_threshold", LEARN_THRESHOLD)
    lines = [
        TITLE,
        "",
        f"Every number is over {protocol(summaries)}, "
        "the tutorial's protocol (two circles, 500 train / 500 test points, SGD lr 0.01 "
        "momentum 0.9, batch 32) unless the experiment says otherwise. The tutorial reports "
        "single runs. A run *learns* when it did not diverge and its final test accuracy is "
        f">= {threshold}. Cells read mean ± std [min–max] over seeds.",
        "",
        *markdown_table(ACCURACY_HEADER, []),
    ]
    for e in experiments:
        lines += e.rows(dirs[e.name])
    # the sweeps' own tables first, then those of the studies that compare sweeps
    for e in sorted(experiments, key=lambda e: not isinstance(e, Sweep)):
        lines += e.section(dirs[e.name])
    lines += ["", "## Figures", ""]
    for e in experiments:
        for fig in present_figures(e, dirs[e.name]):
            lines += [f"### {e.name}: {figure_caption(fig)}", "",
                      f"![{e.name}]({sanitize_name(e.name)}/{fig})", ""]
    return lines
