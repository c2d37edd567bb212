"""Beyond one machine: array-job shards, multi-process JAX and Ray, all over one chunk store.

A sweep's output directory holds one file per chunk of runs (``OUT/chunks/chunk_NNNNN.npz``,
written atomically by :class:`vgjax.io.ChunkStore`), and every path below only decides *who*
computes which chunk; :func:`vgjax.pipeline.finish_sweep` then assembles the same
``summary.json``, ``history.npz`` and TensorBoard logs from the chunk files.

* **Array jobs** (SLURM ``--array``, Kubernetes Indexed Jobs): :func:`run_shard` computes the
  chunks ``c`` with ``c % N == I`` into a shared directory; the first shard claims it by
  creating ``manifest.json`` with ``os.link`` (atomic, fails if it exists), which also fixes
  the chunk size for every shard, whatever its device count. :func:`merge` assembles.
* **Multi-process JAX** (TPU pods, GPU clusters): :func:`initialize` then
  :func:`run_multiprocess`: every process runs every chunk (the run axis is sharded over the
  devices of all processes), process 0 alone reads and writes the directory.
* **Ray**: :func:`run_ray` runs each missing chunk as a Ray task and saves each result as it
  arrives.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from vgjax import io
from vgjax.config import Config, Grid, validate, validate_grid

LAYOUT_KEY = "layout"  # manifest entry of a sharded sweep: chunk_size, shards, prefix


# --------------------------------------------------------------------------- array jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; ``ValueError`` (one line) otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard: {text!r} is not allowed; allowed: I/N with integers "
                         "0 <= I < N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"shard: {text!r} is out of range; allowed: I/N with 0 <= I < N")
    return i, n


def _read_manifest(out: Path) -> dict | None:
    p = Path(out) / io.MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise ValueError(f"out: {str(p)!r} is unreadable; allowed: a manifest vgjax "
                         "wrote") from None
    if not isinstance(m, dict):
        raise ValueError(f"out: {str(p)!r} is not a vgjax manifest")
    return m


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))


def sharded_layout(out: str | Path, config: Config, grid: Grid) -> dict | None:
    """The ``layout`` of ``out`` if it holds array-job shards of this sweep, else None."""
    m = _read_manifest(Path(out)) if Path(out).is_dir() else None
    if not m or LAYOUT_KEY not in m:
        return None
    if m.get("config") != _plain(config.to_dict()) or m.get("grid") != _plain(grid.to_dict()):
        return None  # a different sweep: prepare_out_dir refuses or overwrites it
    return m[LAYOUT_KEY]


def claim_shared(out: str | Path, manifest: dict, layout: dict) -> dict:
    """Claim ``out`` for the shards of one sweep; return the layout every shard must use.

    Safe when many shards start at once: the manifest (config, grid and ``layout``) is
    written to a temp file and hard-linked to ``manifest.json``, which fails if any shard
    got there first; then the manifest in place is compared with ours. A directory holding
    another sweep, a sweep run without shards, or foreign files is refused (one line).
    """
    label = os.fspath(out)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {label!r} is a file; allowed: a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out: {label!r} cannot be created ({e.strerror}); allowed: a "
                         "directory you can write to") from None
    ours = _plain({**manifest, LAYOUT_KEY: layout})
    mpath = path / io.MANIFEST_NAME
    if not mpath.exists():
        foreign = sorted(e.name for e in path.iterdir()
                         if e.name not in io.OWNED_NAMES and not e.name.startswith("."))
        if foreign:
            raise ValueError(f"out: {label!r} is not empty and holds no vgjax sweep (found "
                             f"{foreign[0]!r}); allowed: a new or empty directory")
        tmp = path / f".{io.MANIFEST_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        io.atomic_write_text(tmp, json.dumps(ours, sort_keys=True, indent=1) + "\n")
        try:
            os.link(tmp, mpath)  # atomic and exclusive: exactly one shard wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    theirs = _read_manifest(path)
    for key in ("config", "grid"):
        if theirs.get(key) != ours[key]:
            raise ValueError(f"out: {label!r} holds a sweep with a different {key}; allowed: "
                             "the same command for every shard, or a new directory")
    got = theirs.get(LAYOUT_KEY)
    if not isinstance(got, dict):
        raise ValueError(f"out: {label!r} holds a sweep run without --shard; allowed: a new "
                         "directory for a sharded sweep")
    if got.get("shards") != layout["shards"]:
        raise ValueError(f"out: {label!r} is split into {got.get('shards')} shards, not "
                         f"{layout['shards']}; allowed: --shard I/{got.get('shards')}")
    (path / io.CHUNKS_DIR).mkdir(exist_ok=True)
    return got


def fixed_plan(config: Config, grid: Grid, chunk_size: int, devices: list | None = None):
    """A plan cutting the grid into chunks of exactly ``chunk_size`` runs on any device count.

    The mesh uses the largest number of ``devices`` (default all) that divides the chunk
    size, so chunk boundaries (hence chunk files) never depend on the machine.
    """
    import jax

    from vgjax.sweep import default_mesh, make_plan
    devices = list(devices if devices is not None else jax.devices())
    k = mesh_size(len(devices), chunk_size)
    return make_plan(config, grid, chunk_size=chunk_size, mesh=default_mesh(devices[:k]))


def mesh_size(n_devices: int, chunk_size: int) -> int:
    """The largest device count <= ``n_devices`` that divides ``chunk_size``."""
    return max(d for d in range(1, min(n_devices, chunk_size) + 1) if chunk_size % d == 0)


def shard_chunks(n_chunks: int, shard: int, n_shards: int) -> list[int]:
    """Chunks of shard ``shard`` of ``n_shards``: round robin, so shards get equal work."""
    return list(range(shard, n_chunks, n_shards))


def run_shard(config: Config, grid: Grid, out: str | Path, shard: int, n_shards: int, *,
              chunk_size: int | None = None, prefix: str = "sweep",
              progress: Callable[[int], None] | None = None) -> list[int]:
    """Compute shard ``shard`` of ``n_shards`` of the sweep into the shared directory ``out``.

    The first shard to start fixes the chunk size in ``manifest.json`` (``chunk_size``, or
    from memory and the number of shards); finished chunks are skipped, so a rerun of a
    killed shard resumes. Returns the chunk indices of this shard. Each shard records its
    device and timing in ``OUT/chunks/shard_I_of_N.json`` for the merged summary.
    """
    from vgjax import pipeline
    from vgjax.sweep import make_plan

    validate(config)
    validate_grid(grid)
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard: {shard}/{n_shards} is out of range; allowed: 0 <= I < N")
    proposal = make_plan(config, grid, chunk_size=chunk_size)
    size = proposal.chunk_size
    if chunk_size is None:  # at least one chunk per shard where the grid allows it
        n_dev = proposal.mesh.devices.size
        per_shard = -(-len(proposal.runs) // n_shards)
        size = max(n_dev, min(size, -(-per_shard // n_dev) * n_dev))
    layout = claim_shared(out, io.make_manifest(config, grid),
                          {"chunk_size": size, "shards": n_shards,
                           "prefix": io.sanitize_name(prefix)})
    if chunk_size is not None and layout["chunk_size"] != chunk_size:
        raise ValueError(f"chunk_size: {chunk_size} differs from the {layout['chunk_size']} "
                         f"fixed in {str(Path(out) / io.MANIFEST_NAME)!r}; allowed: the same "
                         "value for every shard, or none")
    if progress is not None:
        progress(0)
    plan = fixed_plan(config, grid, int(layout["chunk_size"]))
    mine = shard_chunks(plan.n_chunks, shard, n_shards)
    store = io.ChunkStore(out)
    timing = pipeline.new_timing()
    pipeline.compute_chunks(plan, store, mine, timing, on_chunk=(
        None if progress is None else lambda c, a: progress(len(a["diverged_epoch"]))))
    record = {"device": pipeline.device_kind(plan.mesh), "engine": plan.engine,
              "chunks": mine, "timing": timing}
    io.atomic_write_text(store.dir / f"shard_{shard}_of_{n_shards}.json",
                         json.dumps(record, sort_keys=True))
    return mine


def merge(out: str | Path, *, tensorboard: bool = True, prefix: str | None = None,
          logdir: str | Path | None = None, learn_threshold: float = 0.7,
          progress: Callable[[int], None] | None = None):
    """Assemble a sharded sweep in ``out`` once every chunk exists.

    Returns the :class:`vgjax.pipeline.SweepOutput`. Raises
    :class:`vgjax.pipeline.MissingChunks` (one line: which chunks, which shards) otherwise.
    ``prefix`` defaults to the one the shards were started with.
    """
    from vgjax import pipeline

    path = Path(out)
    m = _read_manifest(path) if path.is_dir() else None
    if m is None:
        raise ValueError(f"out: {os.fspath(out)!r} holds no vgjax sweep (no manifest.json); "
                         "allowed: a directory that 'vgjax sweep --shard' wrote")
    if not isinstance(m.get(LAYOUT_KEY), dict):
        raise ValueError(f"out: {os.fspath(out)!r} holds a sweep run without --shard; "
                         "allowed: a directory that 'vgjax sweep --shard' wrote (rerun "
                         "the sweep command itself to finish this one)")
    try:
        config = Config.from_dict(m["config"])
        grid = validate_grid(Grid(**{k: tuple(v) for k, v in m["grid"].items()}))
        layout = m[LAYOUT_KEY]
        size, n_shards = int(layout["chunk_size"]), int(layout["shards"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"out: {str(path / io.MANIFEST_NAME)!r} is invalid ({e})") from None
    store = io.ChunkStore(path)
    records = []
    for p in sorted(store.dir.glob(f"shard_*_of_{n_shards}.json")):
        try:
            records.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    timing = pipeline.new_timing()
    for r in records:
        for k in ("compile_s", "train_s"):
            timing[k] += float(r.get("timing", {}).get(k, 0.0))
    extra = {k: "; ".join(sorted({str(r.get(k)) for r in records})) or "unknown"
             for k in ("device", "engine")}
    n_chunks = -(-len(pipeline.run_table(grid, config)) // size)
    done = store.done()
    lacking = sorted({c % n_shards for c in range(n_chunks) if c not in done})
    hint = (f" (shards {', '.join(f'{s}/{n_shards}' for s in lacking)} have not finished; "
            "run them, then merge again)") if lacking else ""
    return pipeline.finish_sweep(config, grid, path, size, tensorboard=tensorboard,
                                 prefix=prefix or layout.get("prefix", "sweep"),
                                 logdir=logdir, learn_threshold=learn_threshold,
                                 timing=timing, extra=extra, hint=hint, progress=progress)


# --------------------------------------------------------------------- multi-process JAX

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _split_address(text: str, name: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}: {text!r} is not allowed; allowed: HOST:PORT, e.g. "
                         "127.0.0.1:12345")
    return host, int(port)


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
    host, _ = _split_address(coordinator, "coordinator")
    for name, v, lo in (("num-processes", num_processes, 1), ("process-id", process_id, 0)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: an integer >= {lo} "
                             "(with --coordinator)")
    if process_id >= num_processes:
        raise ValueError(f"process-id: {process_id} is out of range; allowed: 0.."
                         f"{num_processes - 1}")
    # Cross-process collectives on CPU (the default in jax 0.10, not in every version).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if host in LOOPBACK_HOSTS:
        kw["coordinator_bind_address"] = coordinator
        _gloo_on_loopback()
    jax.distributed.initialize(coordinator, num_processes, process_id, **kw)


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
                     prefix: str = "sweep", learn_threshold: float = 0.7,
                     progress: Callable[[int], None] | None = None):
    """The sweep on the devices of every process of a multi-process JAX job.

    Call in every process after :func:`initialize`. Every process runs every chunk (the
    run axis is sharded over all devices, gathered back to each host); process 0 alone
    claims ``out``, decides which chunks are done and the chunk size (broadcast to the
    others, so hosts need not share a file system), saves chunks and writes the outputs.
    Returns the :class:`vgjax.pipeline.SweepOutput` in process 0, None in the others.
    """
    import jax
    import numpy as np
    from jax.experimental import multihost_utils as mh

    from vgjax import pipeline
    from vgjax.sweep import make_plan

    writer = jax.process_index() == 0
    plan = make_plan(config, grid, chunk_size=chunk_size)  # validates, in every process
    prefix = io.sanitize_name(prefix)
    store = verdict = None
    if writer:
        try:
            out = io.prepare_out_dir(out, io.make_manifest(config, grid), overwrite=overwrite)
            store = io.ChunkStore(out)
            plan = pipeline.resume_layout(plan, store, chunk_size, None)
            verdict = np.array([plan.chunk_size] + [c in store.done()
                                                    for c in range(plan.n_chunks)], np.int32)
        except ValueError:
            mh.broadcast_one_to_all(np.full(1 + len(plan.runs), -1, np.int32))
            raise
    else:
        verdict = np.zeros(1 + plan.n_chunks, np.int32)
    # Same shape in every process: the first plan's chunk count bounds any resumed layout's,
    # because a saved chunk size is only kept when it is a multiple of the device count.
    verdict = np.asarray(mh.broadcast_one_to_all(_pad_to(verdict, 1 + len(plan.runs))))
    if verdict[0] < 0:
        raise ValueError("out: process 0 refused the output directory (its message says "
                         "why); nothing was computed")
    if not writer:
        plan = make_plan(config, grid, chunk_size=int(verdict[0]))
    todo = [c for c in range(plan.n_chunks) if not verdict[1 + c]]
    if progress is not None:
        progress(0)
    timing = pipeline.new_timing()
    logdir = Path(out) / io.TENSORBOARD_DIR

    def chunk_done(c: int, arrays: dict) -> None:
        if writer and tensorboard:
            pipeline.write_chunk_tensorboard(config, grid, plan.runs, plan.chunk_slice(c),
                                             arrays, store, c, logdir, prefix, timing)
        if progress is not None:
            progress(len(arrays["diverged_epoch"]))

    try:
        parts = pipeline.compute_chunks(plan, store or io.ChunkStore(out), todo, timing,
                                        done=set(), save=writer, on_chunk=chunk_done)
    except Exception as e:  # noqa: BLE001 - the other processes would wait for this one
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        what = ("lost another process" if isinstance(e, jax.errors.JaxRuntimeError)
                or "Gloo" in first else "failed")
        raise ProcessFailed(f"process {jax.process_index()} of {jax.process_count()} {what} "
                            f"mid-sweep ({first}); finished chunks are kept: start the same "
                            "command in every process to resume") from None
    result = None
    ok = np.ones(1, np.int32)
    if writer:
        try:
            result = pipeline.finish_sweep(
                config, grid, Path(out), plan.chunk_size, tensorboard=tensorboard,
                prefix=prefix, logdir=logdir, learn_threshold=learn_threshold, timing=timing,
                extra={"device": pipeline.device_kind(plan.mesh), "engine": plan.engine},
                parts=parts)
        except BaseException:
            mh.broadcast_one_to_all(ok * 0)
            raise
    if not int(np.asarray(mh.broadcast_one_to_all(ok))[0]):
        raise ValueError("out: process 0 could not write the results (its message says why)")
    return result


def _pad_to(a, n: int):
    import numpy as np
    return np.concatenate([a, np.zeros(n - len(a), a.dtype)])


# ------------------------------------------------------------------------------------ Ray

RAY_INSTALL = "pip install 'vgjax[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"ray: not installed; allowed: install it with {RAY_INSTALL}, or "
                         "run without --ray") from None
    return ray


def worker_env(cpus_per_task: int, cache_dir: str | Path | None = None,
               environ: dict | None = None) -> dict[str, str]:
    """Environment of a Ray chunk task: vgjax's CPU XLA flags for ``cpus_per_task`` devices
    and JAX's persistent compilation cache in ``cache_dir`` (default: the driver's
    ``JAX_COMPILATION_CACHE_DIR``, else ``~/.cache/vgjax/jax``; a path on each node), so a
    chunk shape compiles once per node, not once per worker process."""
    from vgjax.cli import cpu_xla_flags
    environ = dict(os.environ if environ is None else environ)
    # The driver's device count is its own; the task's follows the CPUs Ray gives it.
    flags = " ".join(f for f in environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    cache = cache_dir or environ.get("JAX_COMPILATION_CACHE_DIR") or \
        os.path.join(os.path.expanduser("~"), ".cache", "vgjax", "jax")
    env = {"XLA_FLAGS": cpu_xla_flags({"XLA_FLAGS": flags}, cpus_per_task),
           "JAX_COMPILATION_CACHE_DIR": str(cache),
           # cache every program: these compile in seconds, but do so per chunk shape
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if environ.get("JAX_PLATFORMS"):
        env["JAX_PLATFORMS"] = environ["JAX_PLATFORMS"]
    return env


def compute_one_chunk(config: dict, grid: dict, chunk_size: int,
                      c: int) -> tuple[dict, str]:
    """Train chunk ``c`` of the sweep (config and grid as plain dicts) in this process.

    The body of a Ray task: returns the chunk's history arrays (run axis first) and the
    devices it ran on (as :func:`vgjax.pipeline.device_kind` names them). The
    compiled program is cached in the process (and on disk, see :func:`worker_env`).
    """
    from vgjax.sweep import compile_plan, device_data, run_chunk
    cfg = Config.from_dict(config)
    g = Grid(**{k: tuple(v) for k, v in grid.items()})
    plan = fixed_plan(cfg, g, chunk_size)
    compiled, _ = compile_plan(plan)
    from vgjax.pipeline import device_kind
    return run_chunk(plan, compiled, device_data(plan), c), device_kind(plan.mesh)


def run_ray(config: Config, grid: Grid, out: str | Path, *, address: str | None = None,
            overwrite: bool = False, chunk_size: int | None = None, tensorboard: bool = True,
            prefix: str = "sweep", learn_threshold: float = 0.7, num_cpus: int | None = None,
            cpus_per_task: int = 1, max_retries: int = 3, cache_dir: str | Path | None = None,
            progress: Callable[[int], None] | None = None):
    """Run each missing chunk of the sweep as a Ray task; save each result as it arrives.

    ``address``: ``None`` starts a local Ray instance on 127.0.0.1 (``num_cpus`` CPUs, no
    dashboard); ``"auto"`` or ``"HOST:PORT"`` joins a running cluster. Each task is a Ray
    worker process with :func:`worker_env` (``cpus_per_task`` CPU devices); a task whose
    worker dies is retried up to ``max_retries`` times. The driver (this process) alone
    writes ``out``, one chunk file per chunk, so none is lost or written twice, and an
    interrupted driver resumes from the saved chunks when run again. Returns the
    :class:`vgjax.pipeline.SweepOutput`.
    """
    from vgjax import pipeline
    from vgjax.result import HIST_ARRAYS
    from vgjax.sweep import make_plan

    ray = _import_ray()
    if address is not None and address != "auto":
        _split_address(address, "ray")
    for name, v in (("cpus_per_task", cpus_per_task), ("max_retries", max_retries + 1)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: a positive integer")
    # The tasks' devices, not the driver's, decide how a chunk is sharded: fix its size.
    plan = fixed_plan(config, grid, chunk_size or make_plan(config, grid).chunk_size)
    prefix = io.sanitize_name(prefix)
    out = io.prepare_out_dir(out, io.make_manifest(config, grid), overwrite=overwrite)
    store = io.ChunkStore(out)
    plan = pipeline.resume_layout(plan, store, chunk_size, plan.mesh)
    if progress is not None:
        progress(0)
    timing = pipeline.new_timing()
    logdir = out / io.TENSORBOARD_DIR
    todo = [c for c in range(plan.n_chunks) if c not in store.done()]
    started = _ray_start(ray, address, num_cpus) if todo else False
    parts: dict[int, dict] = {}
    devices: set[str] = set()
    try:
        t0 = time.perf_counter()
        for c, (arrays, device) in _ray_chunks(ray, plan, todo, cpus_per_task, max_retries,
                                               cache_dir):
            store.save(c, arrays)
            devices.add(device)
            parts[c] = {k: v for k, v in arrays.items() if k not in HIST_ARRAYS}
            if tensorboard:
                pipeline.write_chunk_tensorboard(config, grid, plan.runs, plan.chunk_slice(c),
                                                 arrays, store, c, logdir, prefix, timing)
            if progress is not None:
                progress(len(arrays["diverged_epoch"]))
        timing["train_s"] = time.perf_counter() - t0 - timing["tensorboard_s"]
    finally:
        if started:
            ray.shutdown()
    return pipeline.finish_sweep(
        config, grid, out, plan.chunk_size, tensorboard=tensorboard, prefix=prefix,
        logdir=logdir, learn_threshold=learn_threshold, timing=timing,
        extra={"device": "; ".join(sorted(devices)) or "unknown", "engine": plan.engine},
        parts=parts, progress=progress)


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
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:  # interrupted: do not leave work running on the cluster
            ray.cancel(ref, force=True)
