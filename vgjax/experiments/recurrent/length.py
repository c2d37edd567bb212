"""``rnn-length``: the share of seeds that solve the adding problem (test MSE < 0.01, 6 % of the
chance 1/6) against the sequence length T, per cell: the tutorial's depth study, for time.

One grid (:func:`vgjax.recurrent.grid.run_grid`, one compiled program) trains every (net, T,
seed) with Adam and gradient-norm clipping for a fixed budget of steps; the budget is a
value of the experiment, stated in its tables and section. Every number the section shows is
read from ``tables.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import optax

from vgjax.experiments.base import Context
from vgjax.figures.common import new_figure, save_png, series_colors
from vgjax.io.store import atomic_write_text, dumps_json, jsonable
from vgjax.io.tables import read_tables, write_tables
from vgjax.recurrent import grid as rg
from vgjax.recurrent import tasks as rt

SOLVED_MSE = 0.01
FIGURE = "solved_share.png"


class Budget(NamedTuple):
    """The training budget: lengths, seeds, steps, batch, width, learning rate, clipping.

    The default is what fits the group's time limit on a 2-core machine, at every length
    the question asks about (10-400); :data:`FULL` is a budget ten times larger."""

    lengths: tuple[int, ...] = (10, 25, 50, 100, 200, 400)
    seeds: int = 5
    steps: int = 500
    eval_every: int = 250
    batch_size: int = 32
    width: int = 32
    lr: float = 3e-3
    clip_norm: float = 1.0


FULL = Budget(lengths=(10, 25, 50, 100, 200, 400), steps=5000, eval_every=500, width=64,
              lr=1e-3)


NETS = {"tanh RNN (orthogonal)": dict(cell="rnn", activation="tanh", init="orthogonal"),
        "IRNN (ReLU, identity)": dict(cell="rnn", activation="relu", init="identity"),
        "LSTM (forget bias 1)": dict(cell="lstm", init="orthogonal"),
        "GRU": dict(cell="gru", init="orthogonal")}


def make_runs(budget: Budget) -> tuple[list[str], list[rg.RunSpec]]:
    """Every (net, T, seed) of the study, and each run's net label."""
    labels, runs = [], []
    for label, kw in NETS.items():
        for length in budget.lengths:
            for seed in range(budget.seeds):
                labels.append(label)
                runs.append(rg.RunSpec(length=length, seed=seed, clip_norm=budget.clip_norm,
                                       **kw))
    return labels, runs


def solved_table(labels, runs, final_mse: np.ndarray, budget: Budget) -> list[dict]:
    """Per (net, T): seeds, share solved (final test MSE < :data:`SOLVED_MSE`), median MSE
    (NaN, written as null, when a run's loss is not finite), runs whose loss is not finite."""
    rows = []
    for label in NETS:
        for length in budget.lengths:
            sel = [i for i, (lab, r) in enumerate(zip(labels, runs))
                   if lab == label and r.length == length]
            mse = final_mse[sel]
            rows.append({"net": label, "length": length, "seeds": len(sel),
                         "solved_share": float(np.mean(np.nan_to_num(mse, nan=np.inf)
                                                       < SOLVED_MSE)),
                         "median_mse": float(np.median(mse)),
                         "non_finite": int(np.sum(~np.isfinite(mse)))})
    return rows


def _cell(row: dict) -> str:
    """One table cell: share solved (median MSE), and the runs that overflowed if any."""
    nf, seeds = row.get("non_finite", 0), row["seeds"]
    median = "–" if row["median_mse"] is None else f"{row['median_mse']:.3f}"
    extra = f"; {nf} of {seeds} non-finite" if nf else ""
    return f"{row['solved_share']:.0%} ({median}{extra})"


def _figure(rows, budget: Budget, path: Path) -> Path:
    fig, (ax,) = new_figure(1, panel_w=6.0)
    for color, label in zip(series_colors(len(NETS)), NETS):
        pts = [(r["length"], r["solved_share"]) for r in rows if r["net"] == label]
        ax.plot(*zip(*pts), marker="o", color=color, label=label)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(budget.lengths, [str(t) for t in budget.lengths])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"share of seeds with test MSE < {SOLVED_MSE}")
    ax.set_title(f"adding problem, {budget.steps} Adam steps (lr {budget.lr:g}, batch "
                 f"{budget.batch_size}, clip {budget.clip_norm:g}), width {budget.width}",
                 fontsize=9)
    ax.legend(fontsize=8)
    return save_png(fig, path)


class Length:
    """The experiment object (see :mod:`vgjax.experiments.recurrent`)."""

    name = "rnn-length"
    group = "recurrent"
    title = "Share of seeds solving the adding problem against the sequence length, per cell"
    uses: tuple[str, ...] = ()
    reported = "Le, Jaitly & Hinton 2015: IRNN and LSTM solve the adding problem, tanh RNN fails"
    figures: tuple[str, ...] = (FIGURE,)

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs it trains (its budget fixes its seeds): every (net, T, seed)."""
        return len(self.budget.lengths) * self.budget.seeds * len(NETS)

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Nothing to refuse: the budget fixes the seeds and the steps."""

    def __init__(self, budget: Budget = Budget()):
        self.budget = budget

    def run(self, ctx: Context) -> list[Path]:
        b = self.budget
        exp_dir = Path(ctx.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        labels, runs = make_runs(b)
        spec = rg.TrainSpec(task=rt.make_task("adding"), width=b.width,
                            batch_size=b.batch_size, steps=b.steps, eval_every=b.eval_every,
                            test_size=256, flow_examples=8, optimizer=optax.adam(b.lr))
        res = rg.run_grid(runs, spec)
        if ctx.progress is not None:
            ctx.progress(len(runs))
        paths = rg.write_grid(res, spec, exp_dir / "grid")
        rows = solved_table(labels, runs, rg.final_test_loss(res), b)
        curves = {label: {str(t): np.median(res.test_loss[[i for i, (lab, r) in
                                                           enumerate(zip(labels, runs))
                                                           if lab == label and r.length == t]],
                                            axis=0).tolist() for t in b.lengths}
                  for label in NETS}
        atomic_write_text(exp_dir / "data.json", dumps_json(jsonable(
            {"eval_steps": res.eval_steps, "median_test_mse": curves})))
        write_tables(exp_dir, {"budget": b._asdict(), "solved_mse": SOLVED_MSE,
                               "baseline": rt.baseline(spec.task, 2), "rows": rows,
                               "timing": {"compile_s": res.compile_s, "train_s": res.train_s,
                                          "runs": len(runs)}})
        return paths + [exp_dir / "data.json", exp_dir / "tables.json",
                        _figure(rows, b, exp_dir / FIGURE)]

    def section(self, exp_dir: Path) -> list[str]:
        tables = read_tables(Path(exp_dir) / "tables.json")
        if tables is None:
            return []
        b, t = tables["budget"], tables["timing"]
        lengths = b["lengths"]
        lines = [f"### {self.name}: {self.title}", "",
                 f"Budget: {b['steps']} Adam steps (lr {b['lr']:g}, batch {b['batch_size']}, "
                 f"gradient norm clipped at {b['clip_norm']:g}), width {b['width']}, "
                 f"{b['seeds']} seeds per point, fresh batches every step; solved = final test "
                 f"MSE < {tables['solved_mse']} (chance {tables['baseline']:.3f}). "
                 f"{t['runs']} runs in one program: compiled in {t['compile_s']:.0f} s, "
                 f"trained in {t['train_s']:.0f} s on this machine.", "",
                 "| net | " + " | ".join(f"T = {x}" for x in lengths) + " |",
                 "|---|" + "---|" * len(lengths)]
        by = {(r["net"], r["length"]): r for r in tables["rows"]}
        for net in dict.fromkeys(r["net"] for r in tables["rows"]):
            cells = [_cell(by[(net, x)]) for x in lengths]
            lines.append(f"| {net} | " + " | ".join(cells) + " |")
        lines += ["", "Each cell: share solved (median final test MSE; runs whose loss "
                  "overflowed to a non-finite value counted apart). "
                  + " ".join(filter(None, (separation_sentence(tables["rows"]),
                                           missing_sentence(lengths)))), "",
                  f"![solved share]({self.name}/{FIGURE})", ""]
        return lines


def separation_sentence(rows: list[dict], reference: str | None = None) -> str:
    """Per net, the lengths where it solves the problem on at least one seed while
    ``reference`` (default: the first net of ``rows``, the tanh RNN) solves it on none, from
    the table's ``rows``."""
    reference = rows[0]["net"] if reference is None else reference
    by = {(r["net"], r["length"]): r["solved_share"] for r in rows}
    lengths = list(dict.fromkeys(r["length"] for r in rows))
    parts = []
    for net in dict.fromkeys(r["net"] for r in rows):
        if net == reference:
            continue
        won = [t for t in lengths if by[(net, t)] > 0 and by[(reference, t)] == 0]
        parts.append(f"{net}: {', '.join(map(str, won)) if won else 'none'}")
    return (f"Lengths T where a net solves the problem on at least one seed and the "
            f"{reference} on none — " + "; ".join(parts) + ".")


def missing_sentence(lengths) -> str:
    """Which of :data:`FULL`'s lengths this budget leaves out, and why ('' when none)."""
    missing = [t for t in FULL.lengths if t not in lengths]
    if not missing:
        return ""
    return (f"Not in this budget: T = {', '.join(map(str, missing))} (of the study's "
            f"{', '.join(map(str, FULL.lengths))}): a step's cost grows with T, and a "
            f"budget that can separate the cells there (`length.FULL`: {FULL.steps} steps, "
            f"width {FULL.width}) is far beyond the group's time limit on a 2-core machine.")
