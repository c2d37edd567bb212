"""The ``vgjax`` command line: parse, call the library, print. Bad input exits 2 in one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from vgjax import runtime
from vgjax.config import (ACTIVATIONS, DATASETS, INITIALISERS, LOSSES, OPTIMIZERS, Config, Grid,
                          parse_float_list, parse_int_list)


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
    p.add_argument("--data", default=d.data_name, metavar="NAME",
                   help=f"data set: {', '.join(DATASETS)} (default {d.data_name})")
    p.add_argument("--loss", default=None, metavar="NAME",
                   help=f"{' or '.join(LOSSES)} (default: bce for two classes, else softmax_ce)")
    p.add_argument("--weight-var", default=None, metavar="LIST",
                   help="sigma_w^2 > 0, a comma list (several values: a grid axis); kernels "
                        "have variance sigma_w^2/fan_in with --init normal or "
                        "symmetric_uniform, other initialisers get gain sqrt(sigma_w^2) "
                        f"(default {d.weight_var})")
    p.add_argument("--bias-var", default=None, metavar="LIST",
                   help="sigma_b^2 >= 0, a comma list (several values: a grid axis); biases "
                        f"drawn N(0, sigma_b^2), 0 keeps zero biases (default {d.bias_var})")


def _variance_axes(args: argparse.Namespace) -> tuple[dict, dict]:
    """(Config fields, Grid fields) of --weight-var/--bias-var: one value sets the config,
    several make a grid axis."""
    cfg, grid = {}, {}
    for flag, field in (("weight_var", "weight_var"), ("bias_var", "bias_var")):
        text = getattr(args, flag, None)
        if text is None:
            continue
        values = parse_float_list(flag, text)
        if len(values) == 1:
            cfg[field] = values[0]
        else:
            grid[field + "s"] = values
    return cfg, grid


def _config_from(args: argparse.Namespace) -> Config:
    return Config(activation=args.activation, init=args.init, output_init=args.output_init,
                  optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                  epochs=args.epochs, batch_size=args.batch_size, noise=args.noise,
                  hist_every=args.hist_every, test_gradients=args.test_gradients,
                  data=args.data, loss=args.loss, **_variance_axes(args)[0])


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
                              parse_float_list("lrs", args.lrs) if args.lrs else (),
                              **_variance_axes(args)[1]))
    if _distribution(args) is not None:
        return cmd_sweep_distributed(args, config, grid)
    # Imported only now: bad flags are reported without the seconds it takes to import jax.
    from vgjax.pipeline import expected_runs, run_sweep
    with _progress(expected_runs(grid, config), "sweep") as bar:
        res = run_sweep(config, grid, args.out, overwrite=args.overwrite,
                        chunk_size=args.chunk_size, tensorboard=not args.no_tensorboard,
                        prefix=args.name or f"{config.activation}_{config.init}",
                        progress=_on_progress(bar), save_params=args.save_params)
    _print_groups(res.summary)
    diverged = int(res.result.runs.diverged.sum())
    if diverged:
        print(f"{diverged} of {len(res.result.runs)} runs diverged (loss or weights became NaN/Inf)")
    print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}"
          + (f" and {res.out / 'params.npz'}" if args.save_params else ""))
    if not args.no_tensorboard:
        print(f"view: tensorboard --logdir {res.out / 'tensorboard'}")
    return 0


def _distribution(args: argparse.Namespace) -> str | None:
    """Which distribution flag of ``vgjax sweep`` is set (one at most), else None."""
    set_ = [f for f, on in (("--shard", args.shard is not None),
                            ("--coordinator", args.coordinator is not None),
                            ("--ray", args.ray is not None)) if on]
    if args.coordinator is None and (args.num_processes, args.process_id) != (None, None):
        flag = "--num-processes" if args.num_processes is not None else "--process-id"
        raise ValueError(f"{flag}: needs --coordinator HOST:PORT (multi-process JAX)")
    if len(set_) > 1:
        raise ValueError(f"{set_[1]}: cannot be combined with {set_[0]}; allowed: one of "
                         "--shard, --coordinator, --ray")
    return set_[0] if set_ else None


def cmd_sweep_distributed(args: argparse.Namespace, config: Config, grid: Grid) -> int:
    """``vgjax sweep`` with --shard, --coordinator or --ray (see vgjax.distributed)."""
    from vgjax import distributed as dist
    prefix = args.name or f"{config.activation}_{config.init}"
    how = _distribution(args)
    if how == "--shard":
        shard, n = dist.parse_shard(args.shard)
        if args.overwrite:
            raise ValueError("overwrite: not allowed with --shard (shards would delete each "
                             "other's chunks); remove the directory instead")
        from vgjax.pipeline import expected_runs
        with _progress(expected_runs(grid, config), f"shard {shard}/{n}") as bar:
            mine = dist.run_shard(config, grid, args.out, shard, n, chunk_size=args.chunk_size,
                                  prefix=prefix, progress=_on_progress(bar))
        print(f"shard {shard}/{n}: {len(mine)} chunk(s) in {args.out}; when every shard is "
              f"done: vgjax merge {args.out}")
        return 0
    if how == "--coordinator":
        dist.initialize(args.coordinator, args.num_processes, args.process_id)
        import jax
        bar_desc = f"process {jax.process_index()}/{jax.process_count()}"
        from vgjax.pipeline import expected_runs
        with _progress(expected_runs(grid, config), bar_desc) as bar, _exit_on(dist.ProcessFailed):
            res = dist.run_multiprocess(config, grid, args.out, overwrite=args.overwrite,
                                        chunk_size=args.chunk_size,
                                        tensorboard=not args.no_tensorboard, prefix=prefix,
                                        progress=_on_progress(bar))
        if res is None:
            print(f"{bar_desc}: done; process 0 wrote {args.out}")
        else:
            _print_groups(res.summary)
            print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
        return 0
    from vgjax.pipeline import expected_runs
    with _progress(expected_runs(grid, config), "ray") as bar, _exit_on(dist.TaskFailed):
        res = dist.run_ray(config, grid, args.out, address=None if args.ray == "local" else
                           args.ray, overwrite=args.overwrite, chunk_size=args.chunk_size,
                           tensorboard=not args.no_tensorboard, prefix=prefix,
                           progress=_on_progress(bar))
    _print_groups(res.summary)
    print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
    return 0


@contextlib.contextmanager
def _exit_on(error: type[BaseException]):
    """Report ``error`` in one line and leave at once (exit 1): after a peer of a
    multi-process job died, JAX's own exit would wait for it, then abort with a trace."""
    try:
        yield
    except error as e:
        print(f"vgjax: error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def cmd_merge(args: argparse.Namespace) -> int:
    """``vgjax merge DIR``: summary, history and TensorBoard of a sweep run in shards."""
    from vgjax.distributed import merge
    res = merge(args.dir, tensorboard=not args.no_tensorboard, prefix=args.name)
    _print_groups(res.summary)
    print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
    return 0


def _add_distribution_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``vgjax sweep`` that spread one sweep over processes or machines."""
    g = p.add_argument_group("beyond one machine (see README, 'Beyond one machine')")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="array jobs: compute only shard I of N (0 <= I < N) into the shared "
                   "--out; then 'vgjax merge OUT' (or this command without --shard)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-process JAX: address of process 0 (with --num-processes, "
                   "--process-id)")
    g.add_argument("--num-processes", type=int, default=None, help="multi-process JAX: N")
    g.add_argument("--process-id", type=int, default=None,
                   help="multi-process JAX: this process, 0..N-1")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each chunk as a Ray task: 'auto', HOST:PORT, or no value for "
                   "a local Ray instance (pip install 'vgjax[ray]')")


def _print_groups(summary: dict) -> None:
    from vgjax.result import GROUP_FIELDS
    fmt = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    # sigma_w^2 / sigma_b^2 columns only for sweeps with that axis
    fields = [f for f in GROUP_FIELDS
              if f not in ("weight_var", "bias_var") or summary["grid"].get(f + "s")]
    print(" ".join(f"{f:>8}" for f in fields) + f" {'seeds':>5}  {'train acc':>15}  "
          f"{'test acc':>15}  learn")
    for g in summary["groups"]:
        print(" ".join(f"{cell(g[f]):>8}" for f in fields)
              + f" {g['n_seeds']:>5}  {fmt(g['final_train_accuracy']):>15}  "
              f"{fmt(g['final_test_accuracy']):>15}  {g['share_learn']:.2f}")


def _print_layers(result) -> None:
    """Per config and layer: seed mean of the final mean |dL/dW| (needs history.npz)."""
    import numpy as np

    from vgjax.result import final_metric, group_indices, seed_stats
    final = final_metric(result, "grad_mean_abs")  # [R, L]
    n_layers = final.shape[1]
    names = [f"h{i + 1}" for i in range(n_layers - 1)] + ["out"]
    print("final mean |dL/dW| per layer (seed mean; '-' where the config lacks the layer)")
    print(f"{'config':>22}  " + " ".join(f"{n:>9}" for n in names))
    for key, idx in group_indices(result).items():
        mean = seed_stats(final[idx])["mean"]
        cells = ["-" if not np.isfinite(v) else f"{v:.3g}" for v in mean]
        label = ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in key)
        print(f"{label:>22}  " + " ".join(f"{c:>9}" for c in cells))


def cmd_show(args: argparse.Namespace) -> int:
    """``vgjax show DIR``: the groups table of a finished sweep, from summary.json alone.

    ``history.npz`` is checked against the summary when present and is needed only for
    ``--layers``; without it the table is still printed, with a note saying what is missing.
    """
    from vgjax.history import load_result
    from vgjax.outdir import HISTORY_NAME
    from vgjax.summary import load_summary

    summary = load_summary(args.dir)  # validated on its own: a fresh clone has no arrays
    history = Path(args.dir) / HISTORY_NAME
    if args.layers and not history.is_file():
        raise ValueError(f"show --layers: needs {str(history)!r} (the per-epoch arrays, not "
                         "committed); run the sweep again to write it")
    result = load_result(args.dir) if history.is_file() else None
    _print_groups(summary)
    n_div = sum(bool(r["diverged"]) for r in summary["runs"])
    print(f"{summary['n_runs']} runs, {summary['config']['epochs']} epochs, {n_div} diverged")
    if result is not None and args.layers:
        _print_layers(result)
    elif result is None:
        print(f"({HISTORY_NAME} absent: the table above is from summary.json; "
              "--layers, figures and TensorBoard need the per-epoch arrays)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``vgjax list``: the experiments by group, and what the tutorial (or paper) reported."""
    from vgjax.experiments import EXPERIMENTS, GROUPS
    for group in GROUPS:
        how = "vgjax reproduce" if group == "tutorial" else f"vgjax reproduce --group {group}"
        print(f"[{group}]  ({how})")
        for e in EXPERIMENTS.values():
            if e.group == group:
                source = "tutorial" if group == "tutorial" else "reference"
                print(f"  {e.name:<18} {e.title}  [{source}: {e.reported}]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``vgjax run NAME...`` and ``vgjax reproduce``: experiments into --out."""
    from vgjax import experiments as ex
    from vgjax.config import MAX_SEED

    names = (list(args.names) if getattr(args, "names", None)
             else ex.in_group(getattr(args, "group", "tutorial")))
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
    from vgjax.bench import SECOND_PROCESS_COMPILE_TARGET_S, TARGETS, render_table, run_benchmark
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
    if res["w600_second_process"]["compile_s"] > SECOND_PROCESS_COMPILE_TARGET_S:
        missed.append("second-process compile_s")
    print("all W600 targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    """``vgjax theory``: mean-field q*, χ₁, c*, χ_c, ξ_c for lists of σ_w² and σ_b²."""
    import json
    import math

    from vgjax.config import check_choice

    check_choice("activation", args.activation, ACTIVATIONS)
    weight_vars = parse_float_list("weight-var", args.weight_var)
    bias_vars = parse_float_list("bias-var", args.bias_var)
    for name, values, ok in (("weight-var", weight_vars, lambda v: v > 0),
                             ("bias-var", bias_vars, lambda v: v >= 0)):
        bad = [v for v in values if not (math.isfinite(v) and ok(v))]
        if bad:
            allowed = "finite numbers > 0" if name == "weight-var" else "finite numbers >= 0"
            raise ValueError(f"{name}: {bad[0]!r} is out of range; allowed: {allowed}")
    if args.figures:
        from vgjax.theory_studies import write_all
        written = write_all(Path(args.figures))
        for path in written:
            print(f"wrote {path}")
        return 0
    from vgjax.theory import FIELDS, table  # imports jax: after the cheap checks
    rows = table(weight_vars, bias_vars, args.activation)
    if args.json:
        # JSON has no inf/NaN: null where a value is not finite (q* diverges; ξ_c at χ_c = 1).
        clean = [{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                  for k, v in r.items()} for r in rows]
        print(json.dumps(clean[0] if len(clean) == 1 else clean))
        return 0
    print(f"{'weight_var':>10} {'bias_var':>9} " + " ".join(f"{k:>10}" for k in FIELDS))
    for r in rows:
        print(f"{r['weight_var']:>10.4g} {r['bias_var']:>9.4g} "
              + " ".join(f"{r[k]:>10.5g}" for k in FIELDS))
    return 0


def _add_output_args(p: argparse.ArgumentParser, *, overwrite_help: str) -> None:
    """Options every training subcommand shares: chunking, TensorBoard, overwriting."""
    p.add_argument("--chunk-size", type=int, default=None,
                   help="runs per compiled call (default: chosen from memory)")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Where compiled programs are kept between processes (see vgjax.runtime)."""
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache: a directory, or 'off' (default: "
                   "$VGJAX_CACHE_DIR, else $XDG_CACHE_HOME/vgjax/jax or ~/.cache/vgjax/jax)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0-29", help="seeds: N, A-B or a comma list (default 0-29)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 500)")
    p.add_argument("--out", default="results", help="output directory (default: results)")
    _add_output_args(p, overwrite_help="replace results made with a different config")
    _add_runtime_args(p)
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
    p.add_argument("--save-params", action="store_true",
                   help="also write every run's final parameters to OUT/params.npz "
                        "(load one run with vgjax.model.unpack_run)")
    _add_output_args(p, overwrite_help="replace an output directory that holds a different sweep")
    _add_runtime_args(p)
    _add_distribution_args(p)
    p.set_defaults(func=cmd_sweep)

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
    p.add_argument("--group", default="tutorial", choices=("tutorial", "signal", "all"),
                   help="which experiments: the tutorial's (default), the signal-propagation "
                   "studies (theory beside measurement) or all (see 'vgjax list')")

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vgjax`` console script; returns the exit code.

    ``import vgjax`` has already applied the JAX defaults (:mod:`vgjax.runtime`), the same
    as for the Python API; ``--compile-cache`` only moves or turns off the cache.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "compile_cache", None) is not None:
        off = args.compile_cache.strip().lower() in ("off", "none", "")
        runtime.setup(cache_dir=None if off else args.compile_cache)
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
