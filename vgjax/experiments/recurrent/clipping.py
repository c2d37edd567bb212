"""``rnn-clipping``: exploding gradients in tanh RNNs with σ_w² > 1 on the adding problem,
trained by plain SGD with and without gradient-norm clipping (Pascanu, Mikolov & Bengio 2013).

A tanh RNN with a Gaussian recurrent kernel of variance σ_w²/N > 1/N is on the chaotic side
of the order-to-chaos line: ‖∂ℓ/∂h_t‖ grows back in time, so the gradient of a loss read out
after T steps can be orders of magnitude above one, and an SGD step of that size throws the
weights far away (the "cliffs" of Pascanu et al.). ``clip_by_global_norm`` rescales every
gradient whose norm exceeds the threshold, bounding each step. SGD is used, not Adam: Adam
divides by a running gradient scale, which hides exploding gradients from the step size.

One grid (:func:`vgjax.recurrent.grid.run_grid`, one compiled program) trains every
(σ_w², clipping, seed); the clipping threshold is a per-run value (``inf`` = none). Every
number the section shows is read from ``tables.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optax

from vgjax.experiments.base import Context
from vgjax.figures.common import new_figure, save_png, series_colors
from vgjax.io.store import atomic_write_text, dumps_json, jsonable
from vgjax.io.tables import read_tables, write_tables
from vgjax.recurrent import flow as rf
from vgjax.recurrent import grid as rg
from vgjax.recurrent import tasks as rt

FIGURE = "clipping.png"


class Protocol(NamedTuple):
    """The study: recurrent σ_w² values, clipping thresholds (None: none), sequence length T,
    seeds, SGD steps, evaluation period, batch, width, learning rate."""

    weight_vars: tuple[float, ...] = (2.0, 4.0)
    clips: tuple[float | None, ...] = (None, 1.0)
    length: int = 50
    seeds: int = 8
    steps: int = 500
    eval_every: int = 50
    batch_size: int = 32
    width: int = 32
    lr: float = 0.05


def make_runs(p: Protocol) -> list[rg.RunSpec]:
    """Every (σ_w², clip, seed): tanh RNNs with a Gaussian recurrent kernel N(0, σ_w²/N)."""
    return [rg.RunSpec("rnn", p.length, seed, activation="tanh", init="normal", scale=wv,
                       clip_norm=clip)
            for wv in p.weight_vars for clip in p.clips for seed in range(p.seeds)]


def clip_label(clip: float | None) -> str:
    """'no clipping' or 'clip 1'."""
    return "no clipping" if clip is None else f"clip {clip:g}"


def summarize(runs, train_loss: np.ndarray, grad_norm: np.ndarray, test_loss: np.ndarray,
              lambda1_gamma: np.ndarray, baseline: float) -> list[dict]:
    """Per (σ_w², clip): seeds, share of runs whose training loss became non-finite (NaN/inf),
    share ending worse than chance (final test MSE ≥ ``baseline`` or non-finite), median
    final test MSE, the median λ₁γ at initialisation (Pascanu et al.: > 1 is necessary for
    exploding gradients), and gradient norms (before clipping): the median at step 1, the
    median over runs of each run's median and largest finite norm over training, and the
    share of steps above the threshold.

    train_loss, grad_norm: [R, steps]; test_loss: [R, E + 1]; lambda1_gamma: [R].
    """
    rows = []
    keys = list(dict.fromkeys((r.scale, r.clip_norm) for r in runs))
    for wv, clip in keys:
        sel = np.asarray([i for i, r in enumerate(runs) if (r.scale, r.clip_norm) == (wv, clip)])
        tl, gn, final = train_loss[sel], grad_norm[sel], test_loss[sel, -1]
        blew_up = ~np.isfinite(tl).all(axis=1)
        finite = np.where(np.isfinite(gn), gn, np.nan)
        with warnings.catch_warnings():   # a run that is NaN from step 1: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            run_median = np.nanmedian(finite, axis=1)
            run_max = np.nanmax(finite, axis=1)
        above = (None if clip is None else
                 float(np.mean(np.nan_to_num(gn, nan=np.inf) > clip)))
        rows.append({
            "weight_var": wv, "clip": clip, "seeds": int(len(sel)),
            "nonfinite_share": float(np.mean(blew_up)),
            "worse_than_chance_share": float(np.mean(~(np.nan_to_num(final, nan=np.inf)
                                                        < baseline))),
            "median_final_mse": float(np.median(np.nan_to_num(final, nan=np.inf))),
            "lambda1_gamma": float(np.median(lambda1_gamma[sel])),
            "initial_grad_norm": float(np.median(gn[:, 0])),
            "median_grad_norm": float(np.median(np.nan_to_num(run_median, nan=np.inf))),
            "max_grad_norm": float(np.median(np.nan_to_num(run_max, nan=np.inf))),
            "clipped_step_share": above})
    return rows


def _floats(values) -> np.ndarray:
    # data.json holds null where a value is not finite (JSON has no NaN/inf)
    return np.asarray([np.nan if v is None else v for v in values], np.float64)


def _figure(data: dict, path: Path) -> Path:
    """The figure from ``data.json``'s content (as read back: None where not finite)."""
    fig, (ax, ax2) = new_figure(2, panel_w=6.0, panel_h=4.4)
    colors = series_colors(len(data["curves"]))
    for color, (label, c) in zip(colors, data["curves"].items()):
        ls = "-" if c["clip"] is None else "--"
        median = _floats(c["grad_norm_median"])
        steps = np.arange(1, len(median) + 1)
        ax.plot(steps, median, color=color, ls=ls, lw=1.2, label=label)
        ax.fill_between(steps, _floats(c["grad_norm_lo"]), _floats(c["grad_norm_hi"]),
                        color=color, alpha=0.15, lw=0)
        ax2.plot(data["eval_steps"], _floats(c["test_mse_median"]), color=color, ls=ls,
                 marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("‖∇ℓ‖ before clipping")
    ax.set_title(f"tanh RNN, adding problem, T = {data['length']}: gradient norm\n"
                 "median over seeds (NaN as ∞), band: finite min–max", fontsize=9)
    ax.legend(fontsize=7)
    ax2.axhline(data["baseline"], color="0.5", lw=0.8, ls=":")
    ax2.text(0, data["baseline"], " chance 1/6", va="bottom", fontsize=7, color="0.4")
    ax2.set_yscale("log")
    ax2.set_xlabel("SGD step")
    ax2.set_ylabel("test MSE")
    ax2.set_title("test MSE, median over seeds (NaN as ∞;\nmissing points: median not finite)",
                  fontsize=9)
    ax2.legend(fontsize=7)
    return save_png(fig, path)


class Clipping:
    """The experiment object (see :mod:`vgjax.experiments.recurrent`)."""

    name = "rnn-clipping"
    group = "recurrent"
    title = ("Exploding gradients in tanh RNNs with σ_w² > 1 on the adding problem: SGD with "
             "and without gradient-norm clipping")
    uses: tuple[str, ...] = ()
    reported = ("Pascanu, Mikolov & Bengio 2013: clipping the gradient norm stops the "
                "divergence exploding gradients cause")
    figures: tuple[str, ...] = (FIGURE,)

    def __init__(self, protocol: Protocol = Protocol()):
        self.protocol = protocol

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs it trains (its protocol fixes its seeds)."""
        p = self.protocol
        return len(p.weight_vars) * len(p.clips) * p.seeds

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Nothing to refuse: the protocol fixes the seeds and the steps."""

    def run(self, ctx: Context) -> list[Path]:
        p = self.protocol
        exp_dir = Path(ctx.exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        runs = make_runs(p)
        spec = rg.TrainSpec(task=rt.make_task("adding"), width=p.width,
                            batch_size=p.batch_size, steps=p.steps, eval_every=p.eval_every,
                            test_size=256, flow_examples=8, optimizer=optax.sgd(p.lr))
        res = rg.run_grid(runs, spec)
        if ctx.progress is not None:
            ctx.progress(len(runs))
        baseline = rt.baseline(spec.task, p.length)
        rows = summarize(runs, res.train_loss, res.grad_norm, res.test_loss,
                         res.lambda1[:, 0, 0] * rf.gamma("tanh"), baseline)
        curves = {}
        for wv in p.weight_vars:
            for clip in p.clips:
                sel = [i for i, r in enumerate(runs) if (r.scale, r.clip_norm) == (wv, clip)]
                gn = np.where(np.isfinite(res.grad_norm[sel]), res.grad_norm[sel], np.nan)
                with warnings.catch_warnings():   # steps where every seed is NaN: NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    curves[f"σ_w² = {wv:g}, {clip_label(clip)}"] = {
                        "weight_var": wv, "clip": clip,
                        # NaN counts as ∞: no median once half the seeds have blown up
                        "grad_norm_median": np.median(np.nan_to_num(gn, nan=np.inf), axis=0),
                        "grad_norm_lo": np.nanmin(gn, axis=0),
                        "grad_norm_hi": np.nanmax(gn, axis=0),
                        "test_mse_median": np.median(np.nan_to_num(res.test_loss[sel],
                                                                   nan=np.inf), axis=0)}
        data = {"length": p.length, "baseline": baseline, "eval_steps": res.eval_steps,
                "curves": curves}
        atomic_write_text(exp_dir / "data.json", dumps_json(jsonable(data)))
        write_tables(exp_dir, {"protocol": {**p._asdict(), "optimizer": "sgd",
                                            "task": "adding"},
                               "baseline": baseline, "rows": rows,
                               "timing": {"compile_s": res.compile_s, "train_s": res.train_s,
                                          "runs": len(runs)}})
        return [exp_dir / "data.json", exp_dir / "tables.json",
                _figure(jsonable(data), exp_dir / FIGURE)]

    def section(self, exp_dir: Path) -> list[str]:
        tables = read_tables(Path(exp_dir) / "tables.json")
        if tables is None:
            return []
        p, t, rows = tables["protocol"], tables["timing"], tables["rows"]
        pct = lambda v: "–" if v is None else f"{v:.0%}"
        num = lambda v: "∞ (NaN)" if v is None or not np.isfinite(v) else f"{v:.3g}"
        lines = [f"### {self.name}: {self.title}", "",
                 f"Tanh RNNs of width {p['width']} with a Gaussian recurrent kernel "
                 f"N(0, σ_w²/N), adding problem at T = {p['length']}, {p['steps']} plain SGD "
                 f"steps (lr {p['lr']:g}, batch {p['batch_size']}), {p['seeds']} seeds per "
                 "row, clipping by the global gradient norm (`optax.clip_by_global_norm`) or "
                 f"none. {t['runs']} runs in one program: compiled in {t['compile_s']:.0f} s, "
                 f"trained in {t['train_s']:.0f} s on this machine. Gradient norms are "
                 "measured before clipping; non-finite = the training loss became NaN or "
                 f"inf; chance MSE {tables['baseline']:.3f}.", "",
                 "| σ_w² | clipping | non-finite runs | final MSE ≥ chance | median final MSE | "
                 "λ₁γ at init | ‖∇ℓ‖ at step 1 | median ‖∇ℓ‖ | largest ‖∇ℓ‖ | steps clipped |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['weight_var']:g} | {clip_label(r['clip'])} | "
                         f"{pct(r['nonfinite_share'])} | {pct(r['worse_than_chance_share'])} | "
                         f"{num(r['median_final_mse'])} | {r['lambda1_gamma']:.2f} | "
                         f"{num(r['initial_grad_norm'])} | "
                         f"{num(r['median_grad_norm'])} | {num(r['max_grad_norm'])} | "
                         f"{pct(r['clipped_step_share'])} |")
        lines += ["", "Gradient norms are medians over seeds (of each run's median or "
                  "largest finite norm over training).", "", _verdict(rows), "",
                  f"![clipping]({self.name}/{FIGURE})", ""]
        return lines


def _verdict(rows: list[dict]) -> str:
    """What the table shows against Pascanu et al. 2013, counted from ``rows``."""
    def count(clipped: bool, key: str) -> tuple[int, int]:
        sel = [r for r in rows if (r["clip"] is not None) == clipped]
        return (round(sum(r[key] * r["seeds"] for r in sel)), sum(r["seeds"] for r in sel))
    bad_free, n_free = count(False, "nonfinite_share")
    bad_clip, n_clip = count(True, "nonfinite_share")
    chance_free, _ = count(False, "worse_than_chance_share")
    chance_clip, _ = count(True, "worse_than_chance_share")
    init = max(r["initial_grad_norm"] for r in rows)
    lg = min(r["lambda1_gamma"] for r in rows)
    text = (f"Against Pascanu, Mikolov & Bengio 2013: every net has λ₁γ ≥ {lg:.2f}"
            f"{' > 1, their necessary condition for exploding gradients' if lg > 1 else ''}, "
            f"and the gradient norm at the first step reaches {init:.3g} (largest row "
            "median). ")
    if bad_free > bad_clip:
        text += (f"Without clipping {bad_free} of {n_free} runs became non-finite, with "
                 f"clipping {bad_clip} of {n_clip}: rescaling the gradient's norm removes the "
                 "divergence, as they propose. ")
    else:
        text += (f"Here {bad_free} of {n_free} unclipped and {bad_clip} of {n_clip} clipped "
                 "runs became non-finite: at this budget clipping does not change whether "
                 "runs diverge. ")
    text += (f"Runs ending no better than chance: {chance_free} of {n_free} without, "
             f"{chance_clip} of {n_clip} with clipping; clipping bounds each step, it does "
             "not restore the vanishing long-range gradient the adding problem needs "
             "(Pascanu et al. treat that separately, with a regulariser).")
    return text
