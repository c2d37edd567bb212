"""The subcommands besides sweep and merge: show, list, run/reproduce, bench, theory."""

from __future__ import annotations

import argparse
from pathlib import Path

from vgjax.cli.output import on_progress, print_groups, print_layers, progress_bar
from vgjax.config import ACTIVATIONS, parse_float_list, parse_int_list


def cmd_show(args: argparse.Namespace) -> int:
    """``vgjax show DIR``: the groups table of a finished sweep, from summary.json alone.

    ``history.npz`` is checked against the summary when present and is needed only for
    ``--layers``; without it the table is still printed, with a note saying what is missing.
    """
    from vgjax.io.history import load_result
    from vgjax.io.outdir import HISTORY_NAME
    from vgjax.io.summary import load_summary
    from vgjax.watch.show import is_watch_dir, show

    if is_watch_dir(args.dir):  # a user's Flax model (vgjax.watch): its own table
        show(args.dir, layers=True)
        return 0
    from vgjax.recurrent import outputs as recurrent
    if recurrent.is_recurrent_dir(args.dir):  # a recurrent grid (vgjax rnn): its own table
        recurrent.show(args.dir)
        return 0

    summary = load_summary(args.dir)  # validated on its own: a fresh clone has no arrays
    history = Path(args.dir) / HISTORY_NAME
    if args.layers and not history.is_file():
        raise ValueError(f"show --layers: needs {str(history)!r} (the per-epoch arrays, not "
                         "committed); run the sweep again to write it")
    result = load_result(args.dir) if history.is_file() else None
    print_groups(summary)
    n_div = sum(bool(r["diverged"]) for r in summary["runs"])
    print(f"{summary['n_runs']} runs, {summary['config']['epochs']} epochs, {n_div} diverged")
    if result is not None and args.layers:
        print_layers(result)
    elif result is None:
        print(f"({HISTORY_NAME} absent: the table above is from summary.json; "
              "--layers, figures and TensorBoard need the per-epoch arrays)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``vgjax list``: the experiments by group, and what the tutorial (or paper) reported."""
    from vgjax.experiments import DEFAULT_GROUP, EXPERIMENTS, GROUP_MODULES
    width = max(map(len, EXPERIMENTS))   # one title column for every group
    for group in GROUP_MODULES:
        how = "vgjax reproduce" + ("" if group.GROUP == DEFAULT_GROUP
                                   else f" --group {group.GROUP}")
        print(f"[{group.GROUP}]  ({how})")
        for e in group.EXPERIMENTS:
            print(f"  {e.name:<{width}} {e.title}  [{group.SOURCE}: {e.reported}]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``vgjax run NAME...`` and ``vgjax reproduce``: experiments into --out."""
    from vgjax import experiments as ex
    from vgjax.config import MAX_SEED

    names = (list(args.names) if getattr(args, "names", None)
             else ex.in_group(getattr(args, "group", ex.DEFAULT_GROUP)))
    for n in names:
        ex.get(n)
    seeds = parse_int_list("seeds", args.seeds)
    if any(s < 0 or s > MAX_SEED for s in seeds):
        bad = next(s for s in seeds if s < 0 or s > MAX_SEED)
        raise ValueError(f"seeds: {bad} is out of range; allowed: integers in 0..{MAX_SEED}")
    from vgjax.reproduce import n_runs, run_experiments  # imports jax: after the cheap checks
    order = ex.dependencies(names)
    with progress_bar(n_runs(order, seeds), "reproduce") as bar:
        figures = run_experiments(names, args.out, seeds=seeds, epochs=args.epochs,
                                  overwrite=args.overwrite, tensorboard=not args.no_tensorboard,
                                  chunk_size=args.chunk_size, progress=on_progress(bar),
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

    if args.only:
        from vgjax.bench.run import update_cases
        res = update_cases(Path(args.out), args.only.split(","))
        refresh_benchmark(Path(args.out))
        print(render_table(res))
        return 0
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
        from vgjax.experiments.signal.theory_studies import write_all
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
