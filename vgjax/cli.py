"""The ``vgjax`` command line: parse, call the library, print. Bad input exits 2 in one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from vgjax.config import (ACTIVATIONS, INITIALISERS, OPTIMIZERS, Config, Grid, parse_float_list,
                          parse_int_list)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"vgjax: error: {message}\n")


def _add_protocol_args(p: argparse.ArgumentParser, *, defaults: Config | None = None) -> None:
    d = defaults or Config()
    p.add_argument("--activation", default=d.activation, metavar="NAME",
                   help=f"hidden activation: {', '.join(ACTIVATIONS)} (default {d.activation})")
    p.add_argument("--init", default=d.init, metavar="NAME",
                   help=f"hidden kernel initialiser: {', '.join(INITIALISERS)} (default {d.init})")
    p.add_argument("--output-init", default=d.output_init, metavar="NAME",
                   help="output kernel initialiser (default: same as --init)")
    p.add_argument("--optimizer", default=d.optimizer, metavar="NAME",
                   help=f"{' or '.join(OPTIMIZERS)} (default {d.optimizer})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--momentum", type=float, default=d.momentum,
                   help=f"SGD momentum in [0, 1) (default {d.momentum})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"minibatch size, 1..n_train (default {d.batch_size})")
    p.add_argument("--noise", type=float, default=d.noise,
                   help=f"make_circles noise, >= 0 (default {d.noise})")
    p.add_argument("--hist-every", type=int, default=d.hist_every,
                   help=f"histograms every N epochs, 0 = off (default {d.hist_every})")
    p.add_argument("--test-gradients", action="store_true",
                   help="also record each epoch's gradients on the test set")


def _config_from(args: argparse.Namespace) -> Config:
    return Config(activation=args.activation, init=args.init, output_init=args.output_init,
                  optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                  epochs=args.epochs, batch_size=args.batch_size, noise=args.noise,
                  hist_every=args.hist_every, test_gradients=args.test_gradients)


def _progress(total: int, desc: str):
    from tqdm import tqdm
    # delay: the bar first appears after 0.5 s, so an error raised at once (a bad --out) is
    # the only line on a terminal's stderr, not a half-drawn bar plus the error.
    return tqdm(total=total, desc=desc, unit="run", disable=None, dynamic_ncols=True, delay=0.5)


def _on_progress(bar) -> Callable[[int], None]:
    """run_sweep's progress callback for ``bar``: 0 means the output directory is ready (draw
    the bar now, before compiling); n > 0 means n more runs finished."""
    return lambda n: bar.update(n) if n else bar.refresh()


def cmd_sweep(args: argparse.Namespace) -> int:
    """``vgjax sweep``: one grid, written to --out."""
    from vgjax.config import validate, validate_grid

    config = validate(_config_from(args))
    grid = validate_grid(Grid(parse_int_list("seeds", args.seeds),
                              parse_int_list("depths", args.depths),
                              parse_int_list("widths", args.widths),
                              parse_float_list("lrs", args.lrs) if args.lrs else ()))
    # Imported only now: bad flags are reported without the seconds it takes to import jax.
    from vgjax.pipeline import expected_runs, run_sweep
    with _progress(expected_runs(grid, config), "sweep") as bar:
        res = run_sweep(config, grid, args.out, overwrite=args.overwrite,
                        chunk_size=args.chunk_size, tensorboard=not args.no_tensorboard,
                        prefix=args.name or f"{config.activation}_{config.init}",
                        progress=_on_progress(bar))
    _print_groups(res.summary)
    diverged = int(res.result.runs.diverged.sum())
    if diverged:
        print(f"{diverged} of {len(res.result.runs)} runs diverged (loss or weights became NaN/Inf)")
    print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
    if not args.no_tensorboard:
        print(f"view: tensorboard --logdir {res.out / 'tensorboard'}")
    return 0


def _print_groups(summary: dict) -> None:
    print(f"{'depth':>5} {'width':>5} {'lr':>8} {'seeds':>5}  {'train acc':>15}  "
          f"{'test acc':>15}  learn")
    for g in summary["groups"]:
        tr, te = g["final_train_accuracy"], g["final_test_accuracy"]
        fmt = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
        print(f"{g['depth']:>5} {g['width']:>5} {g['lr']:>8.4g} {g['n_seeds']:>5}  "
              f"{fmt(tr):>15}  {fmt(te):>15}  {g['share_learn']:.2f}")


def cmd_show(args: argparse.Namespace) -> int:
    """``vgjax show DIR``: the groups table of a finished sweep (validates the files)."""
    from vgjax.io import build_summary, load_result

    result = load_result(args.dir)
    summary = build_summary(result, timing={})
    _print_groups(summary)
    diverged = int(result.runs.diverged.sum())
    print(f"{len(result.runs)} runs, {result.config.epochs} epochs, {diverged} diverged")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``vgjax list``: the experiments and what the tutorial reported."""
    from vgjax.experiments import EXPERIMENTS
    for e in EXPERIMENTS.values():
        print(f"{e.name:<14} {e.title}  [tutorial: {e.reported}]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``vgjax run NAME...`` and ``vgjax reproduce``: experiments into --out."""
    from vgjax import experiments as ex
    from vgjax.config import MAX_SEED

    names = list(args.names) if getattr(args, "names", None) else list(ex.EXPERIMENTS)
    for n in names:
        ex.get(n)
    seeds = parse_int_list("seeds", args.seeds)
    if any(s < 0 or s > MAX_SEED for s in seeds):
        bad = next(s for s in seeds if s < 0 or s > MAX_SEED)
        raise ValueError(f"seeds: {bad} is out of range; allowed: integers in 0..{MAX_SEED}")
    from vgjax.reproduce import n_runs, run_experiments  # imports jax: after the cheap checks
    order = ex.dependencies(names)
    with _progress(n_runs(order, seeds), "reproduce") as bar:
        figures = run_experiments(names, args.out, seeds=seeds, epochs=args.epochs,
                                  overwrite=args.overwrite, tensorboard=not args.no_tensorboard,
                                  chunk_size=args.chunk_size, progress=_on_progress(bar),
                                  on_start=lambda n: bar.set_description(n))
    out = Path(args.out)
    print(f"wrote {sum(map(len, figures.values()))} figures and {out / 'README.md'}")
    if not args.no_tensorboard:
        print(f"view: tensorboard --logdir {out / 'tensorboard'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``vgjax bench``: the performance benchmark into OUT/benchmark.json and OUT/README.md."""
    from vgjax.bench import TARGETS, render_table, run_benchmark
    from vgjax.report import refresh_benchmark

    scale = tuple(parse_int_list("scale", args.scale))
    if args.epochs < 1:
        raise ValueError(f"epochs: {args.epochs} is out of range; allowed: integers >= 1")
    res = run_benchmark(Path(args.out), epochs=args.epochs, seeds=args.seeds, scale=scale,
                        scale_epochs=args.epochs, big_epochs=min(args.epochs, 50),
                        wide=not args.no_wide, reproduce=args.reproduce)
    refresh_benchmark(Path(args.out))
    print(render_table(res))
    w = res["w600"]
    missed = [k for k, v in TARGETS.items() if w[k] > v]
    print("all W600 targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


def _add_output_args(p: argparse.ArgumentParser, *, overwrite_help: str) -> None:
    """Options every training subcommand shares: chunking, TensorBoard, overwriting."""
    p.add_argument("--chunk-size", type=int, default=None,
                   help="runs per compiled call (default: chosen from memory)")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0-29", help="seeds: N, A-B or a comma list (default 0-29)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 500)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    _add_output_args(p, overwrite_help="replace results made with a different config")
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="vgjax", description="Study vanishing and exploding gradients: "
                     "train whole grids of small MLPs in one compiled JAX program.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("sweep", help="train seeds x depths x widths in one program",
                       description="Train every run of seeds x depths x widths (x lrs) in one "
                       "compiled program and write summary.json, history.npz and TensorBoard "
                       "logs to --out. Re-running the same command resumes.")
    _add_protocol_args(p)
    p.add_argument("--depths", default="1", help="hidden layers: N, A-B or a comma list")
    p.add_argument("--widths", default="5", help="units per hidden layer: N, A-B or a list")
    p.add_argument("--seeds", default="0", help="seeds: N, A-B or a comma list")
    p.add_argument("--lrs", default=None,
                   help="optional comma list of learning rates, an extra grid axis")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default=None, help="TensorBoard run-name prefix")
    _add_output_args(p, overwrite_help="replace an output directory that holds a different sweep")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("show", help="print the results table of a finished sweep",
                       description="Load DIR/summary.json and DIR/history.npz (checking "
                       "them) and print the per-config table.")
    p.add_argument("dir", help="a directory written by 'vgjax sweep'")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("list", help="list the tutorial's experiments",
                       description="List the named experiments that run and reproduce use.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run named experiments",
                       description="Run one or more named experiments (see 'vgjax list') "
                       "into --out, with figures and OUT/README.md.")
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment name(s)")
    _add_run_args(p)

    p = sub.add_parser("bench", help="measure speed and memory (writes OUT/benchmark.json)",
                       description="Benchmark: the 600-run depth study (W600) with every "
                       "output, single-run latency, scaling to 10,000 runs and the machine's "
                       "matmul ceiling. Each case runs in its own process.")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    p.add_argument("--epochs", type=int, default=500, help="epochs per run (default 500)")
    p.add_argument("--seeds", type=int, default=30, help="seeds per W600 config (default 30)")
    p.add_argument("--scale", default="1,10,100,1000,10000",
                   help="run counts for the scaling table (10,000+ use 50 epochs)")
    p.add_argument("--no-wide", action="store_true",
                   help="skip the wide-net grids and the fast/wide engine crossover")
    p.add_argument("--reproduce", action="store_true",
                   help="also time `vgjax reproduce` end to end (about 10 minutes)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="run every experiment of the tutorial (the main job)",
                       description="Run every experiment of the tutorial and its extensions "
                       "on the CPU by default, writing OUT/NAME/ results, figures, TensorBoard "
                       "logs under OUT/tensorboard/ and OUT/README.md. Resumable.")
    _add_run_args(p)
    return parser


def cpu_xla_flags(environ: dict, n_cpus: int | None) -> str:
    """XLA_FLAGS for this process: the user's, plus two CPU defaults they did not set.

    * one XLA CPU device per core, so the run axis is sharded over every core;
    * YNNPACK library fusions off: on the tiny tensors of these grids they are several
      times slower than XLA's own loop fusions (measured; see results/README.md).
    Both only affect the CPU backend; on a GPU or TPU they change nothing.
    """
    flags = environ.get("XLA_FLAGS", "").split()
    if not any(f.startswith("--xla_force_host_platform_device_count") for f in flags):
        flags.append(f"--xla_force_host_platform_device_count={max(1, n_cpus or 1)}")
    if not any(f.startswith("--xla_cpu_experimental_ynn_fusion_type") for f in flags):
        flags.append("--xla_cpu_experimental_ynn_fusion_type=")
    return " ".join(flags)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vgjax`` console script; returns the exit code."""
    if "jax" not in sys.modules:  # flags are read once, when jax starts its backends
        os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ, os.cpu_count())
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ValueError as err:
        print(f"vgjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vgjax: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
