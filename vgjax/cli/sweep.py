"""``vgjax sweep`` (on one machine, or spread with --shard, --coordinator, --ray) and
``vgjax merge``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from vgjax.cli.options import architecture_axes, config_from, run_prefix, variance_axes
from vgjax.cli.output import on_progress, print_groups, progress_bar
from vgjax.config import Config, Grid, parse_float_list, parse_int_list


def cmd_sweep(args: argparse.Namespace) -> int:
    """``vgjax sweep``: one grid, written to --out."""
    config = config_from(args)  # both check their fields as they are built
    grid = Grid(parse_int_list("seeds", args.seeds), parse_int_list("depths", args.depths),
                parse_int_list("widths", args.widths),
                parse_float_list("lrs", args.lrs) if args.lrs else (),
                **variance_axes(args)[1], **architecture_axes(args)[1])
    if _distribution(args) is not None:
        return cmd_sweep_distributed(args, config, grid)
    # Imported only now: bad flags are reported without the seconds it takes to import jax.
    from vgjax.io.outdir import sharded_layout
    from vgjax.run.pipeline import run_sweep
    if sharded_layout(args.out, config, grid) is not None:
        # the array-job shards of this sweep: only merged, as `vgjax merge` does
        return cmd_merge(argparse.Namespace(dir=args.out, name=args.name,
                                            no_tensorboard=args.no_tensorboard))
    with progress_bar(grid.n_runs, "sweep") as bar:
        res = run_sweep(config, grid, args.out, overwrite=args.overwrite,
                        chunk_size=args.chunk_size, tensorboard=not args.no_tensorboard,
                        prefix=args.name or run_prefix(config),
                        progress=on_progress(bar), save_params=args.save_params)
    print_groups(res.summary)
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
    """``vgjax sweep`` with --shard, --coordinator or --ray (see vgjax.run.distributed)."""
    from vgjax.run import distributed as dist
    prefix = args.name or run_prefix(config)
    how = _distribution(args)
    if how == "--shard":
        shard, n = dist.parse_shard(args.shard)
        if args.overwrite:
            raise ValueError("overwrite: not allowed with --shard (shards would delete each "
                             "other's chunks); remove the directory instead")
        with progress_bar(grid.n_runs, f"shard {shard}/{n}") as bar:
            mine = dist.run_shard(config, grid, args.out, shard, n, chunk_size=args.chunk_size,
                                  prefix=prefix, progress=on_progress(bar))
        print(f"shard {shard}/{n}: {len(mine)} chunk(s) in {args.out}; when every shard is "
              f"done: vgjax merge {args.out}")
        return 0
    if how == "--coordinator":
        if not dist.supervise.is_worker():  # the sweep runs in a watched child process
            dist.check_process_flags(args.coordinator, args.num_processes, args.process_id)
            return dist.supervise.supervise(args.argv, args.process_id, args.num_processes,
                                            coordinator=args.coordinator)
        dist.supervise.watch_parent()
        dist.initialize(args.coordinator, args.num_processes, args.process_id)
        import jax
        bar_desc = f"process {jax.process_index()}/{jax.process_count()}"
        with progress_bar(grid.n_runs, bar_desc) as bar, _exit_on(dist.ProcessFailed):
            res = dist.run_multiprocess(config, grid, args.out, overwrite=args.overwrite,
                                        chunk_size=args.chunk_size,
                                        tensorboard=not args.no_tensorboard, prefix=prefix,
                                        progress=on_progress(bar))
        if res is None:
            print(f"{bar_desc}: done; process 0 wrote {args.out}")
        else:
            print_groups(res.summary)
            print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
        return 0
    with progress_bar(grid.n_runs, "ray") as bar, _exit_on(dist.TaskFailed):
        res = dist.run_ray(config, grid, args.out, address=None if args.ray == "local" else
                           args.ray, overwrite=args.overwrite, chunk_size=args.chunk_size,
                           tensorboard=not args.no_tensorboard, prefix=prefix,
                           progress=on_progress(bar))
    print_groups(res.summary)
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
    from vgjax.run.distributed import merge
    res = merge(args.dir, tensorboard=not args.no_tensorboard, prefix=args.name)
    print_groups(res.summary)
    print(f"wrote {res.out / 'summary.json'} and {res.out / 'history.npz'}")
    return 0
