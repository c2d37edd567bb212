"""Multi-process JAX (TPU pods, GPU clusters): every process runs every chunk over the
mesh of all devices; process 0 alone reads and writes the output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vgjax.io import outdir
from vgjax.io.chunk_store import ChunkStore
from vgjax.io.store import sanitize_name
from vgjax.result import LEARN_THRESHOLD
from vgjax.config import Config, Grid
from vgjax.run.distributed.shards import refuse_sharded

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def initialize(coordinator: str, num_processes: int | None, process_id: int | None, *,
               heartbeat_timeout_s: int = 20, init_timeout_s: int = 120) -> None:
    """Join a multi-process JAX job; must run before anything touches a JAX backend.

    ``coordinator`` is process 0's ``HOST:PORT`` (with ``num_processes`` and
    ``process_id``), or ``"auto"`` for the cluster's own variables (TPU pod, SLURM, Open
    MPI; see ``jax.distributed.initialize``). CPU collectives use gloo. A loopback
    coordinator binds to loopback only (JAX would bind every interface) and so does gloo.
    A process that stops answering makes the others fail after ``heartbeat_timeout_s``;
    a process that never arrives, after ``init_timeout_s``.
    """
    import jax

    kw = {"initialization_timeout": init_timeout_s,
          "heartbeat_timeout_seconds": heartbeat_timeout_s}
    if coordinator == "auto":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kw)
        return
    host = check_process_flags(coordinator, num_processes, process_id)
    # Cross-process collectives on CPU (the default in jax 0.10, not in every version).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if host in LOOPBACK_HOSTS:
        kw["coordinator_bind_address"] = coordinator
        _gloo_on_loopback()
    jax.distributed.initialize(coordinator, num_processes, process_id, **kw)


def check_process_flags(coordinator: str, num_processes: int | None,
                        process_id: int | None) -> str | None:
    """``ValueError`` (one line) for a bad coordinator address, process count or id;
    returns the coordinator's host (None for ``"auto"``)."""
    if coordinator == "auto":
        return None
    host, _ = split_address(coordinator, "coordinator")
    for name, v, lo in (("num-processes", num_processes, 1), ("process-id", process_id, 0)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: an integer >= {lo} "
                             "(with --coordinator)")
    if process_id >= num_processes:
        raise ValueError(f"process-id: {process_id} is out of range; allowed: 0.."
                         f"{num_processes - 1}")
    return host


def split_address(text: str, name: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); ``ValueError`` (one line) naming ``name`` otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}: {text!r} is not allowed; allowed: HOST:PORT, e.g. "
                         "127.0.0.1:12345")
    return host, int(port)


def _gloo_on_loopback() -> None:
    """Make the CPU client's gloo collectives listen on 127.0.0.1, not the host name's
    address. Uses JAX internals, so it is skipped (the default kept) where they moved."""
    try:
        from jax._src import distributed as jdist
        from jax._src import xla_bridge
        from jax._src.lib import _jax
    except ImportError:
        return
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return

    def factory():
        coll = _jax.make_gloo_tcp_collectives(distributed_client=jdist.global_state.client,
                                              hostname="127.0.0.1")
        return xla_bridge.make_cpu_client(collectives=coll)
    xla_bridge.register_backend_factory("cpu", factory, priority=0, fail_quietly=False)


class ProcessFailed(RuntimeError):
    """A multi-process sweep cannot go on in this process (mostly: another process died)."""


def run_multiprocess(config: Config, grid: Grid, out: str | Path, *, overwrite: bool = False,
                     chunk_size: int | None = None, tensorboard: bool = True,
                     prefix: str = "sweep", learn_threshold: float = LEARN_THRESHOLD,
                     progress: Callable[[int], None] | None = None):
    """The sweep on the devices of every process of a multi-process JAX job.

    Call in every process after :func:`initialize`. Every process runs every chunk (the
    run axis is sharded over all devices, gathered back to each host); process 0 alone
    claims ``out``, decides which chunks are done and the chunk size (broadcast to the
    others, so hosts need not share a file system), saves chunks and writes the outputs.
    Returns the :class:`vgjax.run.pipeline.SweepOutput` in process 0, None in the others.
    """
    import jax

    from vgjax.run import pipeline
    from vgjax.run.chunks import Scheduler, compute_chunks, new_timing, without_bulk

    writer = jax.process_index() == 0
    prefix = sanitize_name(prefix)
    plan, store, todo = _agree_on_plan(config, grid, out, overwrite, chunk_size, writer)
    if progress is not None:
        progress(0)
    timing = new_timing()
    logdir = Path(out) / outdir.TENSORBOARD_DIR
    # Every process trains the agreed chunks (collectives span all of them); only process 0
    # has a store, so only it saves chunk files and writes TensorBoard.
    hooks = pipeline.file_hooks(plan.layout, store, timing, tensorboard=tensorboard,
                                logdir=logdir, prefix=prefix, progress=progress)
    try:
        parts = compute_chunks(plan, scheduler=Scheduler(select=lambda n: todo), hooks=hooks,
                               keep=without_bulk, timing=timing)
    except Exception as e:  # noqa: BLE001 - the other processes would wait for this one
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        what = ("lost another process" if isinstance(e, jax.errors.JaxRuntimeError)
                or "Gloo" in first else "failed")
        raise ProcessFailed(f"process {jax.process_index()} of {jax.process_count()} {what} "
                            f"mid-sweep ({first}); finished chunks are kept: start the same "
                            "command in every process to resume") from None
    return _write_once(writer, lambda: pipeline.finish_sweep(
        plan.layout, Path(out), tensorboard=tensorboard, prefix=prefix,
        logdir=logdir, learn_threshold=learn_threshold, timing=timing,
        extra={"device": pipeline.device_kind(plan.mesh), "engine": plan.engine},
        parts=parts))


def _agree_on_plan(config: Config, grid: Grid, out, overwrite: bool, chunk_size: int | None,
                   writer: bool):
    """(plan, store, chunks to compute), the same in every process: process 0 claims
    ``out`` (store: its chunk store, None elsewhere) and broadcasts the chunk size and the
    finished chunks; a refusal there is a one-line ``ValueError`` everywhere."""
    import numpy as np
    from jax.experimental import multihost_utils as mh

    from vgjax.run import pipeline
    from vgjax.grid.plan import make_plan

    plan = make_plan(config, grid, chunk_size=chunk_size)  # validates, in every process
    store = None
    if writer:
        try:
            refuse_sharded(out, config, grid)
            out = outdir.prepare_out_dir(out, outdir.make_manifest(config, grid),
                                         overwrite=overwrite)
            store = ChunkStore(out)
            plan = pipeline.resume_layout(plan, store, chunk_size, None)
            verdict = np.array([plan.chunk_size] + [c in store.done()
                                                    for c in range(plan.n_chunks)], np.int32)
        except ValueError:
            mh.broadcast_one_to_all(np.full(1 + len(plan.runs), -1, np.int32))
            raise
    else:
        verdict = np.zeros(1 + plan.n_chunks, np.int32)
    # Padded to R + 1 (there are at most R chunks): every process broadcasts one shape.
    verdict = np.asarray(mh.broadcast_one_to_all(_pad_to(verdict, 1 + len(plan.runs))))
    if verdict[0] < 0:
        raise ValueError("out: process 0 refused the output directory (its message says "
                         "why); nothing was computed")
    if not writer:
        plan = make_plan(config, grid, chunk_size=int(verdict[0]))
    return plan, store, [c for c in range(plan.n_chunks) if not verdict[1 + c]]


def _write_once(writer: bool, write: Callable[[], object]):
    """Process 0 runs ``write`` and tells the others whether it succeeded; returns its
    result there, None elsewhere (a ``ValueError`` everywhere if it failed)."""
    import numpy as np
    from jax.experimental import multihost_utils as mh

    result = None
    ok = np.ones(1, np.int32)
    if writer:
        try:
            result = write()
        except BaseException:
            mh.broadcast_one_to_all(ok * 0)
            raise
    if not int(np.asarray(mh.broadcast_one_to_all(ok))[0]):
        raise ValueError("out: process 0 could not write the results (its message says why)")
    return result


def _pad_to(a, n: int):
    import numpy as np
    return np.concatenate([a, np.zeros(n - len(a), a.dtype)])
