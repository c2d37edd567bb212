"""Ray: each missing chunk of a sweep is a Ray task; the driver saves results as they
arrive, so an interrupted driver resumes and a dead worker's task is retried."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from vgjax.io import outdir
from vgjax.io.chunk_store import ChunkStore
from vgjax.io.store import sanitize_name
from vgjax.result import LEARN_THRESHOLD
from vgjax.config import Config, Grid
from vgjax.run.distributed.multiprocess import split_address
from vgjax.run.distributed.shards import fixed_plan, refuse_sharded

RAY_INSTALL = "pip install 'vgjax[ray]'"


class TaskFailed(RuntimeError):
    """A chunk's Ray task failed for good (an error in it, or its workers kept dying)."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"ray: not installed; allowed: install it with {RAY_INSTALL}, or "
                         "run without --ray") from None
    return ray


def worker_env(cpus_per_task: int, cache_dir: str | Path | None = None,
               environ: dict | None = None) -> dict[str, str]:
    """Environment of a Ray chunk task: ``cpus_per_task`` CPU devices (JAX_NUM_CPU_DEVICES,
    which :mod:`vgjax.runtime` honours) and JAX's persistent compilation cache in
    ``cache_dir`` (default: the driver's cache, else :func:`vgjax.runtime.default_cache_dir`;
    a path on each node), so a chunk shape compiles once per node, not once per worker."""
    from vgjax import runtime
    environ = dict(os.environ if environ is None else environ)
    # The driver's device count is its own; the task's follows the CPUs Ray gives it.
    flags = " ".join(f for f in environ.get("XLA_FLAGS", "").split()
                     if not f.startswith(runtime.XLA_DEVICES_FLAG))
    cache = cache_dir or environ.get(runtime.JAX_CACHE_ENV) or runtime.default_cache_dir(environ)
    env = {runtime.JAX_DEVICES_ENV: str(max(1, cpus_per_task)),
           "XLA_FLAGS": flags,
           # cache every program: these compile in seconds, but do so per chunk shape
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if cache:
        env[runtime.JAX_CACHE_ENV] = str(cache)
    if environ.get("JAX_PLATFORMS"):
        env["JAX_PLATFORMS"] = environ["JAX_PLATFORMS"]
    return env


def compute_one_chunk(config: dict, grid: dict, chunk_size: int,
                      c: int) -> tuple[dict, str]:
    """Train chunk ``c`` of the sweep (config and grid as plain dicts) in this process.

    The body of a Ray task: returns the chunk's history arrays (run axis first) and the
    devices it ran on (as :func:`vgjax.run.pipeline.device_kind` names them). The
    compiled program is cached in the process (and on disk, see :func:`worker_env`).
    """
    from vgjax.run.chunks import in_process, new_timing
    from vgjax.run.pipeline import device_kind
    plan = fixed_plan(Config.from_dict(config), Grid.from_dict(grid), chunk_size)
    [(_, arrays)] = in_process(plan, [c], new_timing())
    return arrays, device_kind(plan.mesh)


def run_ray(config: Config, grid: Grid, out: str | Path, *, address: str | None = None,
            overwrite: bool = False, chunk_size: int | None = None, tensorboard: bool = True,
            prefix: str = "sweep", learn_threshold: float = LEARN_THRESHOLD, num_cpus: int | None = None,
            cpus_per_task: int = 1, max_retries: int = 3, cache_dir: str | Path | None = None,
            progress: Callable[[int], None] | None = None):
    """Run each missing chunk of the sweep as a Ray task; save each result as it arrives.

    ``address``: ``None`` starts a local Ray instance on 127.0.0.1 (``num_cpus`` CPUs, no
    dashboard); ``"auto"`` or ``"HOST:PORT"`` joins a running cluster. Each task is a Ray
    worker process with :func:`worker_env` (``cpus_per_task`` CPU devices); a task whose
    worker dies is retried up to ``max_retries`` times. The driver (this process) alone
    writes ``out``, one chunk file per chunk, so none is lost or written twice, and an
    interrupted driver resumes from the saved chunks when run again. Returns the
    :class:`vgjax.run.pipeline.SweepOutput`.
    """
    from vgjax.run import pipeline
    from vgjax.run.chunks import Scheduler, compute_chunks, new_timing, without_bulk

    ray = _import_ray()
    _check_ray_args(address, cpus_per_task, max_retries)
    prefix = sanitize_name(prefix)
    plan, store, out = _claim(config, grid, out, chunk_size, overwrite)
    if progress is not None:
        progress(0)
    timing = new_timing()
    logdir = out / outdir.TENSORBOARD_DIR
    devices: set[str] = set()
    execute = ray_execute(ray, address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task,
                          max_retries=max_retries, cache_dir=cache_dir, devices=devices)
    hooks = pipeline.file_hooks(plan.layout, store, timing, tensorboard=tensorboard,
                                logdir=logdir, prefix=prefix, progress=progress)
    parts = compute_chunks(plan, scheduler=Scheduler(execute=execute), hooks=hooks,
                           stored=store, keep=without_bulk, timing=timing)
    return pipeline.finish_sweep(
        plan.layout, out, tensorboard=tensorboard, prefix=prefix,
        logdir=logdir, learn_threshold=learn_threshold, timing=timing,
        extra={"device": "; ".join(sorted(devices)) or "unknown", "engine": plan.engine},
        parts=parts, progress=progress)


def ray_execute(ray, *, address: str | None, num_cpus: int | None, cpus_per_task: int,
                max_retries: int, cache_dir, devices: set[str]):
    """A :class:`vgjax.run.chunks.Scheduler` ``execute`` that trains each chunk as a Ray task.

    Connects to Ray (``address``, see :func:`run_ray`) only if there is a chunk to train and
    shuts down an instance it started when done or interrupted. Yields ``(c, arrays)`` as
    tasks finish, adds each task's devices to ``devices`` and the seconds spent waiting for
    tasks to ``timing["train_s"]``.
    """
    def execute(plan, chunks, timing):
        if not chunks:
            return
        started = _ray_start(ray, address, num_cpus)
        try:
            t0 = time.perf_counter()
            for c, (arrays, device) in _ray_chunks(ray, plan, list(chunks), cpus_per_task,
                                                   max_retries, cache_dir):
                devices.add(device)
                timing["train_s"] += time.perf_counter() - t0
                yield c, arrays
                t0 = time.perf_counter()  # the hooks' time (files, TensorBoard) is not training
        finally:
            if started:
                ray.shutdown()
    return execute


def _claim(config: Config, grid: Grid, out, chunk_size: int | None, overwrite: bool):
    """(plan, chunk store, output path) of a Ray sweep, after claiming ``out``. The tasks'
    devices, not the driver's, decide how a chunk is sharded: the chunk size is fixed."""
    from vgjax.run import pipeline
    from vgjax.grid.plan import make_plan

    plan = fixed_plan(config, grid, chunk_size or make_plan(config, grid).chunk_size)
    refuse_sharded(out, config, grid)
    out = outdir.prepare_out_dir(out, outdir.make_manifest(config, grid), overwrite=overwrite)
    store = ChunkStore(out)
    return pipeline.resume_layout(plan, store, chunk_size, plan.mesh), store, out


def _check_ray_args(address: str | None, cpus_per_task: int, max_retries: int) -> None:
    """``ValueError`` (one line) for a bad cluster address, CPUs per task or retry count."""
    if address is not None and address != "auto":
        split_address(address, "ray")
    for name, v in (("cpus_per_task", cpus_per_task), ("max_retries", max_retries + 1)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: a positive integer")


def _ray_start(ray, address: str | None, num_cpus: int | None) -> bool:
    """Connect to Ray; True if this call started it (so the caller shuts it down)."""
    if ray.is_initialized():
        return False
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports to the internet
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def _ray_chunks(ray, plan, todo: list[int], cpus_per_task: int, max_retries: int,
                cache_dir):
    """Yield (chunk, arrays) as Ray tasks finish, with at most twice the cluster's task
    slots in flight (so results never pile up in the object store)."""
    if not todo:
        return
    task = ray.remote(compute_one_chunk).options(
        num_cpus=cpus_per_task, max_retries=max_retries, retry_exceptions=False,
        runtime_env={"env_vars": worker_env(cpus_per_task, cache_dir)})
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_task)
    args = (plan.config.to_dict(), plan.grid.to_dict(), plan.chunk_size)
    queue, pending = list(todo), {}
    try:
        while queue or pending:
            while queue and len(pending) < 2 * slots:
                c = queue.pop(0)
                pending[task.remote(*args, c)] = c
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    raise TaskFailed(f"ray: chunk {c} failed ({type(e).__name__}: {first}) "
                                     f"after up to {max_retries} retries; finished chunks "
                                     "are kept, run the same command to resume") from None
                yield c, value
    finally:
        for ref in pending:  # interrupted: do not leave work running on the cluster
            ray.cancel(ref, force=True)
