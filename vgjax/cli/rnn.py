"""``vgjax rnn``: train a grid of recurrent nets (cells x depths x lengths x inits x scales x
clipping x seeds) in one compiled program into a directory (:mod:`vgjax.recurrent.grid`).

A command of its own rather than flags on ``vgjax sweep``: a sweep's flags are the MLP
protocol (:class:`vgjax.config.Config`: data set, depth, epochs, ...), a recurrent grid's are
a task and per-run cells, sequence lengths and clipping; sharing one command would make most
flags of each meaningless to the other.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vgjax.config import parse_float_list, parse_int_list

if TYPE_CHECKING:   # jax is imported only once the command runs
    import vgjax.recurrent.grid

OPTIMIZERS = ("adam", "sgd")


def add_rnn(sub) -> None:
    """The ``rnn`` subcommand's options and handler."""
    p = sub.add_parser("rnn", help="train recurrent nets (RNN/LSTM/GRU) over sequence lengths",
                       description="Train every run of cells x layers x lengths x inits x "
                       "scales x clip-norms x seeds on a long-memory task in one compiled "
                       "program and write summary.json, history.npz (ln||dL/dh_t|| per layer "
                       "and step at every evaluation, losses, gradient norms) and TensorBoard "
                       "logs to --out. 'vgjax show OUT' prints the table.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--task", default="adding", help="adding or copy (default adding)")
    p.add_argument("--cells", default="rnn,lstm,gru", help="comma list of rnn, lstm, gru")
    p.add_argument("--layers", default="1",
                   help="stacked recurrent layers: N, A-B or a comma list (default 1)")
    p.add_argument("--lengths", default="50", help="sequence lengths T: N, A-B or a comma list")
    p.add_argument("--seeds", default="0", help="seeds: N, A-B or a comma list")
    p.add_argument("--activation", default="tanh", metavar="NAME",
                   help="the rnn cell's activation (default tanh; relu + identity = IRNN)")
    p.add_argument("--inits", default="orthogonal",
                   help="recurrent kernel inits, comma list of normal (variance scale/N), "
                   "orthogonal, identity (x scale) (default orthogonal)")
    p.add_argument("--scales", default="1", help="comma list: sigma_w^2 for normal, the gain "
                   "otherwise (default 1)")
    p.add_argument("--clip-norm", default=None, metavar="LIST",
                   help="gradient-norm clipping thresholds > 0, a comma list; 'none' in it "
                   "adds unclipped runs (default: no clipping)")
    p.add_argument("--forget-bias", type=float, default=1.0,
                   help="LSTM forget-gate bias (default 1, Keras's unit_forget_bias)")
    p.add_argument("--width", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    p.add_argument("--eval-every", type=int, default=100,
                   help="evaluate (test loss, ln||dL/dh_t||) every N steps (default 100)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--test-size", type=int, default=256, help="test sequences (default 256)")
    p.add_argument("--flow-examples", type=int, default=32,
                   help="test sequences the gradient flow is measured on (default 32)")
    p.add_argument("--optimizer", default="adam", help="adam or sgd (default adam)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier grid in --out")
    p.set_defaults(func=cmd_rnn)


def _clips(text: str | None) -> tuple[float | None, ...]:
    """--clip-norm's values: None for 'none' (checked > 0 with the runs)."""
    if text is None:
        return (None,)
    return tuple(None if t.strip().lower() == "none" else parse_float_list("clip_norm", t)[0]
                 for t in text.split(","))


def _lengths(text: str) -> tuple[int, ...]:
    values = parse_int_list("lengths", text)
    bad = [t for t in values if t < 2]   # the adding problem needs a step in each half
    if bad:
        raise ValueError(f"lengths: {bad[0]} is out of range; allowed: integers >= 2")
    return values


class RnnPlan(NamedTuple):
    """What the command line asks for: the runs (RunSpecs), the grid's TrainSpec, and the
    settings the summary records (optimizer name, learning rate)."""

    runs: list[vgjax.recurrent.grid.RunSpec]
    spec: vgjax.recurrent.grid.TrainSpec
    settings: dict


def plan(args: argparse.Namespace) -> RnnPlan:
    """The :class:`RnnPlan` of the command line, every value checked (one-line
    ``ValueError``), nothing compiled or written."""
    import optax

    from vgjax.config import check_choice, check_float
    from vgjax.recurrent import grid as rg
    from vgjax.recurrent import tasks as rt

    task = rt.make_task(args.task)
    cells = tuple(c.strip() for c in args.cells.split(","))
    inits = tuple(i.strip() for i in args.inits.split(","))
    lengths, seeds = _lengths(args.lengths), parse_int_list("seeds", args.seeds)
    depths = parse_int_list("layers", args.layers)   # >= 1: checked with the runs
    scales, clips = parse_float_list("scales", args.scales), _clips(args.clip_norm)
    check_choice("optimizer", args.optimizer, OPTIMIZERS)
    check_float("lr", args.lr, lo=0.0, lo_open=True)
    runs = [rg.RunSpec(cell, length, seed, activation=args.activation, init=init,
                       scale=scale, forget_bias=args.forget_bias, clip_norm=clip,
                       layers=layers)
            for cell in cells for layers in depths for length in lengths for init in inits
            for scale in scales for clip in clips for seed in seeds]
    opt = optax.adam(args.lr) if args.optimizer == "adam" else optax.sgd(args.lr)
    spec = rg.TrainSpec(task=task, width=args.width, batch_size=args.batch_size,
                        steps=args.steps, eval_every=args.eval_every, test_size=args.test_size,
                        flow_examples=args.flow_examples, optimizer=opt)
    rg.check_runs(runs, spec)
    return RnnPlan(runs, spec, {"optimizer": args.optimizer, "lr": args.lr})


def cmd_rnn(args: argparse.Namespace) -> int:
    """``vgjax rnn``: check everything, then train and write --out."""
    from vgjax.io.outdir import SUMMARY_NAME, TENSORBOARD_DIR
    from vgjax.recurrent import grid as rg
    from vgjax.recurrent import outputs as ro

    runs, spec, settings = plan(args)
    out = Path(args.out)
    if (out / SUMMARY_NAME).exists() and not args.overwrite:
        raise ValueError(f"out: {str(out)!r} already holds results; allowed: a new directory, "
                         "or --overwrite to replace them")
    print(f"training {len(runs)} recurrent runs in one program ...", flush=True)
    result = rg.run_grid(runs, spec)
    logdir = out / TENSORBOARD_DIR
    if logdir.exists() and args.overwrite:   # no run directories of the earlier grid left
        shutil.rmtree(logdir)
    if not args.no_tensorboard:
        ro.write_tensorboard(result, logdir)
    rg.write_grid(result, spec, out, settings)   # summary.json last: the directory is done
    print(f"compiled in {result.compile_s:.1f} s, trained in {result.train_s:.1f} s")
    ro.show(out)
    if not args.no_tensorboard:
        print(f"view: tensorboard --logdir {out / TENSORBOARD_DIR}")
    return 0
