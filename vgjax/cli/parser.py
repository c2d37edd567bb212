"""The argument parser: one function per subcommand, each adding its options and handler."""

from __future__ import annotations

import argparse

from vgjax.cli.commands import cmd_bench, cmd_list, cmd_run, cmd_show, cmd_theory
from vgjax.cli.options import (add_distribution_args, add_output_args, add_protocol_args,
                               add_runtime_args, Parser)
from vgjax.cli.rnn import add_rnn
from vgjax.cli.sweep import cmd_merge, cmd_sweep
from vgjax.config import ACTIVATIONS


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0-29", help="seeds: N, A-B or a comma list (default 0-29)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 500)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    add_output_args(p, overwrite_help="replace results made with a different config")
    add_runtime_args(p)
    p.set_defaults(func=cmd_run)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train seeds x depths x widths in one program",
                       description="Train every run of seeds x depths x widths (x lrs) in one "
                       "compiled program and write summary.json, history.npz and TensorBoard "
                       "logs to --out. Re-running the same command resumes.")
    add_protocol_args(p)
    p.add_argument("--depths", default="1", help="hidden layers: N, A-B or a comma list")
    p.add_argument("--widths", default="5", help="units per hidden layer: N, A-B or a list")
    p.add_argument("--seeds", default="0", help="seeds: N, A-B or a comma list")
    p.add_argument("--lrs", default=None,
                   help="optional comma list of learning rates, an extra grid axis")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default=None, help="TensorBoard run-name prefix")
    p.add_argument("--save-params", action="store_true",
                   help="also write every run's final parameters to OUT/params.npz "
                        "(load one run with vgjax.model.unpack_run)")
    add_output_args(p, overwrite_help="replace an output directory that holds a different sweep")
    add_runtime_args(p)
    add_distribution_args(p)
    p.set_defaults(func=cmd_sweep)


def _add_merge_show_list(sub) -> None:
    p = sub.add_parser("merge", help="assemble a sweep computed by 'sweep --shard' jobs",
                       description="Once every shard of a sweep has finished, write "
                       "DIR/summary.json, DIR/history.npz and the TensorBoard logs from its "
                       "chunk files; if chunks are missing, name them and exit 2.")
    p.add_argument("dir", help="the shared --out directory of the shards")
    p.add_argument("--name", default=None, help="TensorBoard run-name prefix (default: the "
                   "shards')")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("show", help="print the results table of a finished sweep",
                       description="Print the per-config table from DIR/summary.json "
                       "(checked; DIR/history.npz is checked too when present, and is needed "
                       "only for --layers).")
    p.add_argument("dir", help="a directory written by 'vgjax sweep' (or OUT/NAME of 'vgjax run')")
    p.add_argument("--layers", action="store_true",
                   help="also print each config's final mean |dL/dW| per layer "
                   "(needs DIR/history.npz)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("list", help="list the tutorial's experiments",
                       description="List the named experiments that run and reproduce use.")
    p.set_defaults(func=cmd_list)


def _add_run_reproduce(sub) -> None:
    p = sub.add_parser("run", help="run named experiments",
                       description="Run one or more named experiments (see 'vgjax list') "
                       "into --out, with figures and OUT/README.md.")
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment name(s)")
    _add_run_args(p)

    p = sub.add_parser("reproduce", help="run every experiment of the tutorial (the main job)",
                       description="Run every experiment of the tutorial and its extensions "
                       "on the CPU by default, writing OUT/NAME/ results, figures, TensorBoard "
                       "logs under OUT/tensorboard/ and OUT/README.md. Resumable.")
    _add_run_args(p)
    # the groups are the catalog's (checked when the command runs: the parser imports no JAX)
    p.add_argument("--group", default="tutorial",
                   help="which experiments: the tutorial's (default), another group of "
                   "'vgjax list' (signal, remedies, recurrent) or all")


def _add_bench(sub) -> None:
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
                   help="also time `vgjax reproduce` end to end (about 8 minutes on 2 CPU cores)")
    p.add_argument("--only", metavar="CASES",
                   help="only time these cases again (comma-separated: reproduce, fastroad, "
                   "remedies, recurrent, signal-group, remedies-group, recurrent-group: "
                   "`vgjax reproduce --group NAME`) "
                   "and put them into the existing OUT/benchmark.json (the other cases' "
                   "figures are kept)")
    p.set_defaults(func=cmd_bench)


def _add_theory(sub) -> None:
    p = sub.add_parser("theory", help="mean-field theory: q*, chi1, c*, chi_c, xi_c",
                       description="Mean-field signal propagation (Poole et al. 2016, "
                       "Schoenholz et al. 2017) for a random MLP with kernel variance "
                       "weight-var/fan_in and bias variance bias-var: the length fixed point "
                       "q*, chi1 (per-layer gradient factor), the correlation fixed point c*, "
                       "chi_c and the depth scale xi_c = -1/ln chi_c. Comma lists give a table "
                       "over their outer product.")
    p.add_argument("--activation", default="tanh", metavar="NAME",
                   help=f"{', '.join(ACTIVATIONS)} (default tanh)")
    p.add_argument("--weight-var", default="1.5", help="sigma_w^2 > 0, or a comma list")
    p.add_argument("--bias-var", default="0.05", help="sigma_b^2 >= 0, or a comma list")
    p.add_argument("--json", action="store_true",
                   help="print JSON (one object, or a list for several pairs; null where "
                   "not finite)")
    p.add_argument("--figures", default=None, metavar="OUT",
                   help="instead: draw the theory and jacobian-spectra figures into "
                   "OUT/theory/ and OUT/jacobian-spectra/")
    p.set_defaults(func=cmd_theory)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="vgjax", description="Study vanishing and exploding gradients: "
                     "train whole grids of small MLPs in one compiled JAX program.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in (_add_sweep, _add_merge_show_list, _add_run_reproduce, _add_bench, _add_theory,
                add_rnn):
        add(sub)
    return parser
