"""The ``signal`` group's report pieces: its heading and introduction, the section of a study
(prose, protocol, ``tables.json`` Markdown, figures) and the tables of the probe-trained
experiments. Host-only; every number comes from the files in ``OUT/NAME/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vgjax.experiments.base import Experiment, figure_lines, present_figures, tables_of
from vgjax.io.tables import markdown_table

HEADING = "## Signal propagation: theory beside measurement"

INTRO = ("Mean-field theory of deep random networks (Poole et al. 2016, Schoenholz et al. "
         "2017, Pennington et al. 2017) next to what vgjax measures on real nets. "
         "`vgjax reproduce --group signal` (or `vgjax run NAME`) rebuilds these sections; "
         "`vgjax reproduce` alone runs the tutorial group only.")

def study_section(exp: Experiment, exp_dir: Path, text: str,
                  protocol: str | None = None) -> list[str]:
    """The section of a study or sweep with prose: ``### NAME: title``, ``text``, the
    ``protocol`` line (when given), its ``tables.json`` Markdown and its figures; [] when
    ``exp_dir`` holds neither tables nor figures of it."""
    tables, figs = tables_of(exp_dir), present_figures(exp, exp_dir)
    if tables is None and not figs:
        return []
    lines = [f"### {exp.name}: {exp.title}", "", text, ""]
    if protocol:
        lines += [protocol, ""]
    md = (tables or {}).get("markdown")
    if md:
        lines += [md.rstrip("\n"), ""]
    return lines + figure_lines(exp, exp_dir)


def sweep_protocol(summary: dict[str, Any]) -> str:
    """A σ_w²-axis sweep's protocol line, read from its summary.json (run time included)."""
    c, g = summary["config"], summary["grid"]
    return (f"Protocol: {c['data']} ({c['n_train']} training, {c['n_samples'] - c['n_train']} "
            f"test points), width {', '.join(map(str, g['widths']))}, depths "
            f"{min(g['depths'])}–{max(g['depths'])} ({len(g['depths'])} values), σ_w² "
            f"{min(g['weight_vars'])}–{max(g['weight_vars'])} ({len(g['weight_vars'])} values), "
            f"{c['init']} init, {c['optimizer']} lr {c['lr']:g}"
            + (f" momentum {c['momentum']:g}" if c["optimizer"] == "sgd" else "") + ", "
            f"batch {c['batch_size']}, {c['epochs']} epochs, "
            f"{len(g['seeds'])} seed{'s' if len(g['seeds']) != 1 else ''}."
            + _timing(summary))


def _timing(summary: dict[str, Any]) -> str:
    t = summary.get("timing") or {}
    if "train_s" not in t:
        return ""
    device = summary.get("versions", {}).get("device", "this machine")
    return (f" Run time: compile {t.get('compile_s', 0.0):.0f} s, training {t['train_s']:.0f} s "
            f"({device}).")


def _ms(st: dict[str, Any], i: int | None = None, fmt: str = ".2f") -> str:
    """'mean ± std' of a seed-statistics entry (element ``i`` of per-layer lists)."""
    m, sd = (st["mean"], st["std"]) if i is None else (st["mean"][i], st["std"][i])
    return "n/a" if m is None else f"{m:{fmt}} ± {sd:{fmt}}"


def saturation_section(t: dict[str, Any]) -> list[str]:
    """The ``saturation`` section: saturated share per layer at init, epoch 1 and the end,
    and what it says about U(0,1) weights."""
    cols = t["columns"]
    lines = ["", "### saturation: saturated tanh units per layer (|φ′| < 0.05 on the training set)",
             "", "Share of (unit, training point) pairs of each hidden layer whose tanh is "
             "saturated (Glorot & Bengio 2010), mean ± std over seeds, at initialisation, "
             "after epoch 1 and at the end; 5 hidden layers of 5 units, recorded with "
             "`--probe signal`.", "",
             *markdown_table(
                 ["layer", *(f"{c['label']}: init → epoch 1 → end" for c in cols)],
                 ([label, *(f"{_ms(c['init'], i)} → {_ms(c['epoch1'], i)} → "
                            f"{_ms(c['final'], i)}" for c in cols)]
                  for i, label in enumerate(t["layers"])))]
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


DEAD_HEADER = ("depth", "seeds", "share that learns", "dead share, init", "dead share, end",
               "fully dead layer, init", "fully dead layer, end",
               "learns: without / with a fully dead layer (end)")
# The depths the tutorial calls deep: 15 layers still learn, 20 no longer do.
DEEP = 15


def _share(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def dead_relu_section(t: dict[str, Any]) -> list[str]:
    """The ``dead-relu`` section: dead ReLU units against depth and whether a fully dead
    layer explains the runs that stop learning."""
    lines = ["", "### dead-relu: dead ReLU units against depth (ReLU/He, width 5)", "",
             "A unit is dead when its ReLU is 0 on every training point; a layer is fully "
             "dead when all its units are (the net's output is then constant and no gradient "
             "reaches the layers below). Dead share: mean over a run's layers, then mean ± std "
             "over seeds; 'learns' as everywhere in this report.", "",
             *markdown_table(DEAD_HEADER, (
                 [r["depth"], r["n_seeds"], f"{r['share_learn']:.2f}", _ms(r["dead_init"]),
                  _ms(r["dead_final"]), f"{r['share_fully_dead_init']:.2f}",
                  f"{r['share_fully_dead_final']:.2f}",
                  f"{_share(r['learn_without_dead_layer'])} / "
                  f"{_share(r['learn_with_dead_layer'])}"] for r in t["rows"]))]
    deep = [r for r in t["rows"] if r["depth"] >= DEEP]
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
        lines += ["", f"At depths {deep[0]['depth']}–{deep[-1]['depth']}, {n_learn:.0f} of "
                  f"{n_all} runs learn. "
                  f"{n_dead:.0f} runs end with a fully dead layer and {learn_dead:.0f} of "
                  f"those learn; {fail_dead:.0f} of the {n_fail:.0f} runs that do not learn "
                  f"have one ({share:.0%}), {verdict} (cf. Lu et al. 2019, *Dying ReLU and "
                  "initialization*: deep narrow ReLU nets collapse to a constant function)."]
    return lines
