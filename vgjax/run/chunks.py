"""Compile a plan's programs and train its chunks.

:func:`compile_plan` compiles one program per group of widths (the one training loop of
:mod:`vgjax.engines.loop` with the kernels of the group's engine); :func:`run_chunk` trains
one chunk of the run table with them and returns its history arrays on the host, in
run-table order. :func:`compute_chunks` is the one execution path of every way to run a
sweep: a :class:`Scheduler` says which chunks and how (in this process, or as Ray tasks),
hooks say what happens to each finished chunk; :func:`sweep` runs a whole grid in memory
with it. Every call of a group's program has the same shape, so each compiles once per
grid shape.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import fields, replace
from typing import Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import diagnostics as diag
from vgjax import probes, runtime
from vgjax.config import Config, Grid, hist_epochs
from vgjax.data import make_data
from vgjax.engines import chunk_train
from vgjax.engines.loop import PARAM_KEYS, PARAM_PREFIX, DeviceData, RunSpec
from vgjax.grid.plan import Layout, Plan, make_plan, min_width
from vgjax.grid.width_groups import group_runs, pad_param, padded_widths
from vgjax.io.chunk_store import ChunkStore
from vgjax.model import Features
from vgjax.result import HIST_ARRAYS, SIGNAL_JAC_EDGES, SweepResult
from vgjax.run import programs

# The chunk program's inputs, so its traced form can be kept on disk (vgjax.run.programs).
programs.register_namedtuples(RunSpec, DeviceData)


@functools.lru_cache(maxsize=16)
def _compile(static_config: Config, max_depth: int, p: int, chunk_size: int, mesh: Mesh,
             engine: str, keep_params: bool = False, n_blocks: int = 1,
             features: Features = Features()):
    """Ahead-of-time compiled grid program for one chunk shape, and its compile seconds.

    Cached in the process, so a second sweep of the same shape (other seeds, learning
    rates) reuses it; across processes the traced program is kept by :mod:`vgjax.run.programs`
    and the executable by JAX's persistent compilation cache, so a second process neither
    traces nor compiles it.
    """
    runs = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    data = make_data(static_config)  # its shapes (the data set itself is needed anyway)
    start = time.perf_counter()
    per_run = lambda dtype: jax.ShapeDtypeStruct((chunk_size,), dtype)
    spec = RunSpec(jax.ShapeDtypeStruct((chunk_size, 2), jnp.uint32), per_run(jnp.int32),
                   per_run(jnp.int32), per_run(jnp.float32), per_run(jnp.float32),
                   per_run(jnp.float32), per_run(jnp.int32), per_run(jnp.float32),
                   per_run(jnp.int32))
    shapes = DeviceData(*(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in data))
    key = programs.program_key(static_config, {
        "max_depth": max_depth, "p": p, "chunk_size": chunk_size, "engine": engine,
        "keep_params": keep_params, "n_blocks": n_blocks,
        "features": [name for name, on in features._asdict().items() if on]}, mesh)

    def trace():
        grid_fn = chunk_train(static_config, max_depth, p, mesh, engine, keep_params, n_blocks,
                              features)
        return jax.jit(grid_fn, in_shardings=(runs, replicated), out_shardings=runs)

    lowered = _lower_via_export(key, trace, (runs, replicated), runs, spec, shapes)
    # runtime: the CPU compile options (YNNPACK fusions off) where the mesh is on the CPU
    compiled = runtime.compile_lowered(lowered, mesh.devices.flat[0].platform)
    return compiled, time.perf_counter() - start


def _lower_via_export(key: str | None, trace: Callable, in_shardings, out_shardings,
                      *args):
    """The lowered program: from :mod:`vgjax.run.programs` when it holds ``key``, else traced
    (and, with a key, exported and stored for the next process).

    Either way a keyed program is lowered from the *deserialized* export, so the first
    process and every later one hand the same module to JAX's compilation cache. Any
    failure of the stored path (corrupt file, another JAX's format) falls back to tracing.
    """
    if key is None:
        return trace().lower(*args)
    payload = programs.load_payload(key)
    if payload is not None:
        lowered = _lower_call(programs.deserialize(payload), in_shardings, out_shardings, args)
        if lowered is not None:
            return lowered
        programs.discard(key)
    try:
        exported = jax.export.export(trace())(*args)
    except Exception:  # noqa: BLE001 - a program export cannot express: plain jit
        return trace().lower(*args)
    payload = programs.save(key, exported)
    lowered = None if payload is None else _lower_call(programs.deserialize(payload),
                                                       in_shardings, out_shardings, args)
    return lowered if lowered is not None else trace().lower(*args)


def _lower_call(exported, in_shardings, out_shardings, args):
    """``jit(exported.call)`` lowered for ``args``, or None if that fails."""
    if exported is None:
        return None
    def train_grid(*a):  # named: JAX names the compilation cache's entries after it
        return exported.call(*a)
    try:
        return jax.jit(train_grid, in_shardings=in_shardings,
                       out_shardings=out_shardings).lower(*args)
    except Exception:  # noqa: BLE001 - a stored program that does not fit: trace instead
        return None


def compile_plan(plan: Plan):
    """(compiled programs, one per group; seconds spent compiling them now, 0.0 for those
    that came from the cache)."""
    programs_, total = [], 0.0
    for g in plan.groups:
        hits = _compile.cache_info().hits
        compiled, seconds = _compile(_static_config(plan.config), plan.max_depth, g.p, g.size,
                                     plan.mesh, g.engine, plan.keep_params, g.n_blocks,
                                     plan.features)
        programs_.append(compiled)
        total += 0.0 if _compile.cache_info().hits > hits else seconds
    return tuple(programs_), total


def _static_config(config: Config) -> Config:
    # The learning rate, variances and architecture are per-run traced inputs: they must not
    # key the cache (the architectures the program computes are the plan's features).
    return replace(config, lr=1.0, weight_var=1.0, bias_var=0.0, residual="none", norm="none")


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:  # multi-host: gather the run axis from every process
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def device_data(plan: Plan) -> DeviceData:
    """The plan's data set, replicated on every device of its mesh."""
    replicated = NamedSharding(plan.mesh, PartitionSpec())
    return DeviceData(*(jax.device_put(a, replicated) for a in make_data(plan.config)))


def run_chunk(plan: Plan, compiled, data: DeviceData, c: int) -> dict[str, np.ndarray]:
    """Train chunk ``c`` and return its history arrays on the host (run axis first).

    Each group's program (``compiled``, from :func:`compile_plan`) trains the chunk's runs of
    its widths, padded to its call size by repeating the last of them; the outputs come
    back in run-table order (final parameters zero-padded to the plan's width). Includes
    ``diverged_epoch`` [r].
    """
    sl = plan.chunk_slice(c)
    runs = NamedSharding(plan.mesh, PartitionSpec("runs"))
    padded = padded_widths(plan.runs, min_width(plan.config))
    calls = []  # every call dispatched first (asynchronously), then gathered to the host
    for group, program, idx in zip(plan.groups, compiled, group_runs(plan.groups, padded, sl)):
        for s in range(0, len(idx), group.size):
            call = idx[s:s + group.size]
            take = call[np.minimum(np.arange(group.size), len(call) - 1)]
            chunk = RunSpec(*(jax.device_put(np.asarray(a)[take], runs) for a in plan.specs))
            calls.append((call, program(chunk, data)))
    out: dict[str, np.ndarray] = {}
    for call, arrays in calls:
        for k, v in arrays.items():
            v = pad_param(k, _to_host(v)[:len(call)], plan.p)
            if k not in out:
                out[k] = np.empty((sl.stop - sl.start,) + v.shape[1:], v.dtype)
            out[k][call - sl.start] = v
    return out


def new_timing() -> dict[str, float]:
    """The ``timing`` record of a sweep (seconds), all zeros; :func:`compute_chunks` adds to it."""
    return {"compile_s": 0.0, "train_s": 0.0, "tensorboard_s": 0.0, "write_s": 0.0}


def in_process(plan: Plan, chunks: Sequence[int],
               timing: dict[str, float]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Train ``chunks`` in this process, one after another, yielding ``(c, arrays)``.

    Compiles the plan's programs before the first chunk (so not at all when there is none)
    and adds the seconds to ``timing``.
    """
    compiled = data = None
    for c in chunks:
        if compiled is None:
            compiled, timing["compile_s"] = compile_plan(plan)
            data = device_data(plan)
        t0 = time.perf_counter()
        arrays = run_chunk(plan, compiled, data, c)
        timing["train_s"] += time.perf_counter() - t0
        yield c, arrays


Execute = Callable[[Plan, Sequence[int], dict], Iterator[tuple[int, dict]]]


class Scheduler(NamedTuple):
    """Which chunks this worker computes, and how.

    select: the number of chunks -> the indices this worker is responsible for, in order
    (default: all; an array-job shard takes every N-th); execute: trains a list of chunks
    and yields ``(c, arrays)`` as each finishes (default :func:`in_process`; Ray tasks:
    :func:`vgjax.run.distributed.ray_tasks.ray_execute`).
    """

    select: Callable[[int], Sequence[int]] = range
    execute: Execute = in_process


class ChunkDone(NamedTuple):
    """A finished chunk as a hook sees it: its index, its history arrays (run axis first)
    and whether it was trained now (False: read from an earlier run's chunk file)."""

    index: int
    arrays: dict[str, np.ndarray]
    trained: bool


ChunkHook = Callable[[ChunkDone], None]


def without_bulk(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A chunk's arrays without histograms and final parameters (those stay in its file)."""
    return {k: v for k, v in arrays.items()
            if k not in HIST_ARRAYS and not k.startswith(PARAM_PREFIX)}


def compute_chunks(plan: Plan, *, scheduler: Scheduler = Scheduler(),
                   hooks: Sequence[ChunkHook] = (), stored: ChunkStore | None = None,
                   keep: Callable[[dict], dict] = dict,
                   timing: dict[str, float] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Compute the chunks ``scheduler`` selects, passing each finished one through ``hooks``.

    Every way of running a sweep goes through here: in memory (:func:`sweep`), into a
    directory (:func:`vgjax.run.pipeline.run_sweep`), as an array-job shard, in every process
    of a multi-process job and as Ray tasks (:mod:`vgjax.run.distributed`); they differ in
    the scheduler and the hooks (keep in memory, save a chunk file, write TensorBoard, count
    progress).

    Args:
      plan: the planned grid.
      scheduler: which chunks, and how they are trained (:class:`Scheduler`).
      hooks: called in order with a :class:`ChunkDone` for every selected chunk, trained or
        read from ``stored``.
      stored: a chunk store to resume from: a selected chunk already in it is read, not
        trained (one saved without the final parameters a ``keep_params`` plan needs is
        trained again). Reading comes first, then training.
      keep: what is kept of a chunk's arrays in the returned dict (default: all of them;
        :func:`without_bulk` keeps memory flat in the number of runs).
      timing: a :func:`new_timing` record the scheduler adds its seconds to.
    Returns:
      chunk index -> ``keep(arrays)``, in the order the chunks finished.
    """
    timing = new_timing() if timing is None else timing
    chunks = list(scheduler.select(plan.n_chunks))
    done = stored.done() if stored is not None else set()
    have = [c for c in chunks if c in done and (not plan.keep_params or _has_params(stored, c))]
    trained = scheduler.execute(plan, [c for c in chunks if c not in set(have)], timing)
    parts: dict[int, dict[str, np.ndarray]] = {}
    finished = itertools.chain(((c, stored.load(c), False) for c in have),
                               ((c, arrays, True) for c, arrays in trained))
    try:
        for c, arrays, fresh in finished:
            for hook in hooks:
                hook(ChunkDone(c, arrays, fresh))
            parts[c] = keep(arrays)
    finally:  # a failed hook stops the scheduler too (Ray: cancels its tasks, shuts down)
        close = getattr(trained, "close", None)
        if close is not None:
            close()
    return parts


def _has_params(store: ChunkStore, c: int) -> bool:
    """Whether chunk ``c``'s file holds the final parameters (reads its zip directory)."""
    with np.load(store.path(c), allow_pickle=False) as z:
        return PARAM_PREFIX + PARAM_KEYS[0] in z.files


def assemble(layout: Layout, parts: dict[int, dict[str, np.ndarray]]) -> SweepResult:
    """The :class:`SweepResult` of the chunks in ``parts`` (chunk -> arrays, run axis first),
    in chunk order: the whole sweep, or the runs of some chunks (one chunk's TensorBoard)."""
    order = sorted(parts)
    config, grid = layout.config, layout.grid
    rows = np.concatenate([np.arange(len(layout.runs))[layout.chunk_slice(c)] for c in order])
    history = {k: np.concatenate([parts[c][k] for c in order])
               for k in parts[order[0]] if k != "diverged_epoch"}
    params = {k[len(PARAM_PREFIX):]: history.pop(k) for k in list(history)
              if k.startswith(PARAM_PREFIX)}
    history["hist_epochs"] = np.asarray(hist_epochs(config), np.int32)
    history["hist_edges"] = diag.HIST_EDGES.copy()
    if config.probes:
        history[SIGNAL_JAC_EDGES] = np.asarray(probes.LOG_SIGMA_EDGES, np.float32)
    diverged = np.concatenate([parts[c]["diverged_epoch"] for c in order]).astype(np.int32)
    runs = layout.runs
    if len(rows) != len(runs):
        runs = replace(runs, **{f.name: getattr(runs, f.name)[rows] for f in fields(runs)})
    runs = replace(runs, diverged_epoch=diverged)
    return SweepResult(config=config, seeds=tuple(grid.seeds), depths=tuple(grid.depths),
                       widths=tuple(grid.widths), lrs=tuple(grid.lrs), runs=runs,
                       history=history, weight_vars=tuple(grid.weight_vars),
                       bias_vars=tuple(grid.bias_vars), params=params or None,
                       residuals=tuple(grid.residuals), norms=tuple(grid.norms))


def sweep(config: Config, *, seeds=(0,), depths=(1,), widths=(5,), lrs=(), weight_vars=(),
          bias_vars=(), residuals=(), norms=(), chunk_size: int | None = None,
          mesh: Mesh | None = None, engine: str = "auto", keep_params: bool = False,
          progress: Callable[[int], None] | None = None) -> SweepResult:
    """Train every run of the grid and return the result in memory.

    Args:
      config: the protocol (see :class:`vgjax.config.Config`).
      seeds, depths, widths: lists of ints; lrs, weight_vars (sigma_w^2), bias_vars
        (sigma_b^2): optional lists of floats (empty: the config's value), each a traced
        per-run value, so the whole grid is one compiled program; residuals, norms:
        optional lists of ``Config.residual`` / ``Config.norm`` values, per-run too (one
        program per width group on the wide engine). Runs are their product, seed
        outermost, then depth, width, lr, weight_var, bias_var, residual, norm.
      chunk_size: runs per compiled call (default: chosen from memory).
      mesh: a 1-D ``runs`` mesh (default: all devices).
      engine: "auto", "fast", "wide" or "vmap" (see :func:`make_plan`).
      keep_params: also return every run's final parameters in ``result.params``
        (kernels [R, D, P, P], biases [R, D, P], out_kernel [R, P] or [R, P, C], out_bias
        [R] or [R, C]; with residual / normalised runs res_alpha [R, D], norm_scale,
        norm_offset, batch_mean, batch_var [R, D, P]); :func:`vgjax.model.unpack_run` gives
        one run's exact layers.
      progress: called with the number of runs finished after each chunk.
    Returns:
      :class:`SweepResult` with history arrays [R, E], [R, E, L] and histograms
      [R, H, L, K] (see :mod:`vgjax.result`).
    """
    floats = lambda xs: tuple(float(x) for x in xs)
    grid = Grid(tuple(seeds), tuple(depths), tuple(widths), floats(lrs), floats(weight_vars),
                floats(bias_vars), tuple(residuals), tuple(norms))
    plan = make_plan(config, grid, chunk_size=chunk_size, mesh=mesh, engine=engine,
                     keep_params=keep_params)
    hooks = () if progress is None else (progress_hook(progress),)
    return assemble(plan.layout, compute_chunks(plan, hooks=hooks))


def progress_hook(progress: Callable[[int], None]) -> ChunkHook:
    """A hook calling ``progress`` with the number of runs of each finished chunk."""
    return lambda done: progress(len(done.arrays["diverged_epoch"]))
