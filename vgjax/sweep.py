"""The grid of runs (seeds x depths x widths x lrs x weight_vars x bias_vars) as one
compiled program per group of widths.

``sweep(config, seeds=..., depths=..., widths=...)`` builds the run table, pads every run to
the grid's largest depth and to its group's width (:mod:`vgjax.width_groups`: on a CPU a
grid of very different widths is trained by one program per group of widths, when the
training saved pays for the extra compilation; else one program), and trains chunks of runs
in jit-compiled programs: the one training loop (:mod:`vgjax.loop`) with the kernels of the
engine :mod:`vgjax.engines` picks (on a CPU the fast runs-last engine for tiny widths and the
wide batched-matmul engine from :data:`CPU_WIDE_FROM` units on, on a GPU/TPU always the wide
engine, where they cover the config; else the vmapped reference engine of :mod:`vgjax.train`).
The run axis is the leading axis of every input and output and is sharded over all devices
with a 1-D mesh, so the same code runs on one CPU, several CPU devices, a GPU or a TPU slice.
Every call of a group's program has the same shape, so each compiles once per grid shape.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import replace
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import diagnostics as diag
from vgjax import probes, programs, runtime, wide
from vgjax.config import Config, Grid, hist_epochs, validate, validate_grid
from vgjax.data import data_dims, make_data
# engines: the choice of engine and its chunk function (names also public here)
from vgjax.engines import CPU_WIDE_FROM, ENGINES, check_engine, choose_engine  # noqa: F401
from vgjax.engines import chunk_train as _train_grid
from vgjax.loop import PARAM_KEYS, PARAM_PREFIX, DeviceData, RunSpec
from vgjax.result import SIGNAL_JAC_EDGES, RunTable, SweepResult
from vgjax.step import check_parts, n_outputs_for
from vgjax.width_groups import Group, group_runs, pad_param, padded_widths, plan_groups

# The chunk program's inputs, so its traced form can be kept on disk (vgjax.programs).
programs.register_namedtuples(RunSpec, DeviceData)

# Memory the chunk's outputs and working set may use, when the caller does not say.
DEFAULT_CHUNK_BYTES = 512 * 2**20


def run_table(grid: Grid, config: Config) -> RunTable:
    """The runs of ``grid`` in run-axis order: seed outermost, then depth, width, lr,
    weight_var, bias_var (an empty axis of the grid is the config's single value)."""
    lrs = grid.lrs or (config.lr,)
    wvs = grid.weight_vars or (config.weight_var,)
    bvs = grid.bias_vars or (config.bias_var,)
    rows = list(itertools.product(grid.seeds, grid.depths, grid.widths, lrs, wvs, bvs))
    seed, depth, width, lr, wv, bv = (np.array(c) for c in zip(*rows))
    return RunTable(seed=seed.astype(np.int64), depth=depth.astype(np.int32),
                    width=width.astype(np.int32), lr=lr.astype(np.float32),
                    diverged_epoch=np.full(len(rows), -1, np.int32),
                    weight_var=wv.astype(np.float32), bias_var=bv.astype(np.float32))


def run_specs(runs: RunTable) -> RunSpec:
    """Stack the table into a :class:`RunSpec` of NumPy arrays with leading axis R."""
    # One vectorised call: equal to PRNGKey(seed) per run (seeds are < 2**31, validated).
    keys = np.asarray(jax.vmap(jax.random.PRNGKey)(jnp.asarray(runs.seed, jnp.int32)))
    return RunSpec(key=keys.astype(np.uint32), depth=runs.depth, width=runs.width, lr=runs.lr,
                   weight_var=runs.weight_var, bias_var=runs.bias_var)


def padded_sizes(config: Config, grid: Grid) -> tuple[int, int]:
    """(D, P): the grid's largest depth, and P >= every width, the input width and the
    number of logits."""
    return max(grid.depths), max(max(grid.widths), _min_width(config))


def bytes_per_run(config: Config, max_depth: int, p: int) -> int:
    """Rough device bytes one run needs: its outputs plus its working set during a step."""
    n_layers = max_depth + 1
    e = config.epochs
    outputs = 4 * e * (4 + 3 * n_layers * (2 if config.test_gradients else 1))
    h = len(hist_epochs(config))
    outputs += 2 * 4 * h * n_layers * (diag.N_BUCKETS + 4)
    if config.probes:  # signal probe: [E, D] x 3 and the Jacobian's [H, K] counts
        outputs += 4 * (3 * (e + 1) * max_depth + (h + 1) * (probes.LOG_SIGMA_EDGES.shape[0] + 1))
    # activations of the evaluation pass over the whole data set dominate the working set
    working = 4 * config.n_samples * p * (max_depth + 2) * 3
    working += 4 * max_depth * p * p * 8 + 4 * n_layers * p * p * diag.N_BUCKETS
    return outputs + working


def auto_chunk_size(n_runs: int, config: Config, max_depth: int, p: int, n_devices: int,
                    budget_bytes: int = DEFAULT_CHUNK_BYTES, per_run: int | None = None) -> int:
    """Runs per chunk: as many as fit ``budget_bytes`` (at ``per_run`` bytes each, default
    :func:`bytes_per_run`), a multiple of the device count."""
    per_run = per_run or bytes_per_run(config, max_depth, p)
    fit = max(1, budget_bytes // per_run)
    size = min(n_runs, fit)
    return max(n_devices, (size // n_devices) * n_devices)


class Plan(NamedTuple):
    """How a grid is cut into equally shaped chunks of runs.

    runs: the run table; specs: its :class:`RunSpec` ([R] arrays); max_depth, p: padded
    sizes D and P; chunk_size: runs per compiled call (a multiple of the device count);
    n_chunks: ceil(R / chunk_size); mesh: the 1-D ``runs`` mesh; engine: the engines the
    groups use, ``+``-joined: ``"fast"`` (:mod:`vgjax.fast`, runs-last with hand-written
    backprop), ``"wide"`` (:mod:`vgjax.wide`, runs-leading batched matmuls) or ``"vmap"``
    (the reference: ``vmap`` of :func:`vgjax.train.make_train`); keep_params: return the
    final parameters; groups: the programs that train a chunk, one per group of padded
    widths (:mod:`vgjax.width_groups`; one group unless the grid's widths differ enough to
    pay for another compilation), each with its width, engine, call size and depth blocks.
    """

    config: Config
    grid: Grid
    runs: RunTable
    specs: RunSpec
    max_depth: int
    p: int
    chunk_size: int
    n_chunks: int
    mesh: Mesh
    engine: str
    keep_params: bool = False
    groups: tuple[Group, ...] = ()

    def chunk_slice(self, c: int) -> slice:
        """The run indices of chunk ``c``."""
        return slice(c * self.chunk_size, min((c + 1) * self.chunk_size, len(self.runs)))


def make_plan(config: Config, grid: Grid, *, chunk_size: int | None = None,
              mesh: Mesh | None = None, engine: str = "auto", keep_params: bool = False) -> Plan:
    """Validate ``config`` and ``grid`` and plan the chunks; nothing is compiled yet.

    The runs are split into groups of padded widths, one program each
    (:func:`vgjax.width_groups.plan_groups`); ``engine="auto"`` picks each group's engine by
    backend and width (:func:`choose_engine`); a config with probes takes the vmap engine
    and, without a ``mesh``, :func:`probe_mesh`. On a CPU the fast and wide engines train a
    call in depth-sorted blocks (:func:`vgjax.engines.depth_blocks`), each computing only
    the layers its runs have; outputs keep the run-table order.
    """
    validate(config)
    check_parts(config)  # user objects traced once (jax.eval_shape), before compiling
    validate_grid(grid)
    if grid.lrs and not isinstance(config.optimizer, str) and hasattr(config.optimizer, "update"):
        raise ValueError("lrs: an optax.GradientTransformation has its own learning rate; "
                         "allowed: no lrs axis, or a factory lr -> GradientTransformation")
    check_engine(config, engine)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size: {chunk_size!r} is not allowed; allowed: integers >= 1")
    runs = run_table(grid, config)
    max_depth, p = padded_sizes(config, grid)
    mesh = mesh or (probe_mesh() if config.probes else default_mesh())
    n_dev = mesh.devices.size
    widest = choose_engine(config, p, mesh) if engine == "auto" else engine
    if widest == "wide":  # a chunk's outputs stay, its working set is per block
        out_b, _ = wide.bytes_per_run(config, max_depth, p, keep_params)
        size = chunk_size or auto_chunk_size(len(runs), config, max_depth, p, n_dev,
                                             per_run=out_b)
    else:
        size = chunk_size or auto_chunk_size(len(runs), config, max_depth, p, n_dev)
    size = max(n_dev, -(-size // n_dev) * n_dev)  # a multiple of the device count
    groups = plan_groups(config, runs, max_depth, _min_width(config), size, mesh, engine,
                         DEFAULT_CHUNK_BYTES, lambda p_g: auto_chunk_size(
                             len(runs), config, max_depth, p_g, n_dev))
    engines = "+".join(dict.fromkeys(g.engine for g in groups))
    return Plan(config, grid, runs, run_specs(runs), max_depth, p, size,
                math.ceil(len(runs) / size), mesh, engines, bool(keep_params), groups)


def _min_width(config: Config) -> int:
    """The narrowest padded width: the data's inputs and the logits must fit."""
    f, c = data_dims(config)
    return max(f, n_outputs_for(config, c))


@functools.lru_cache(maxsize=16)
def _compile(static_config: Config, max_depth: int, p: int, chunk_size: int, mesh: Mesh,
             engine: str, keep_params: bool = False, n_blocks: int = 1):
    """Ahead-of-time compiled grid program for one chunk shape, and its compile seconds.

    Cached in the process, so a second sweep of the same shape (other seeds, learning
    rates) reuses it; across processes the traced program is kept by :mod:`vgjax.programs`
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
                   per_run(jnp.float32))
    shapes = DeviceData(*(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in data))
    key = programs.program_key(static_config, {
        "max_depth": max_depth, "p": p, "chunk_size": chunk_size, "engine": engine,
        "keep_params": keep_params, "n_blocks": n_blocks}, mesh)

    def trace():
        grid_fn = _train_grid(static_config, max_depth, p, mesh, engine, keep_params, n_blocks)
        return jax.jit(grid_fn, in_shardings=(runs, replicated), out_shardings=runs)

    lowered = _lower_via_export(key, trace, (runs, replicated), runs, spec, shapes)
    # runtime: the CPU compile options (YNNPACK fusions off) where the mesh is on the CPU
    compiled = runtime.compile_lowered(lowered, mesh.devices.flat[0].platform)
    return compiled, time.perf_counter() - start


def _lower_via_export(key: str | None, trace: Callable, in_shardings, out_shardings,
                      *args):
    """The lowered program: from :mod:`vgjax.programs` when it holds ``key``, else traced
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
                                     plan.mesh, g.engine, plan.keep_params, g.n_blocks)
        programs_.append(compiled)
        total += 0.0 if _compile.cache_info().hits > hits else seconds
    return tuple(programs_), total


def _static_config(config: Config) -> Config:
    # The learning rate and variances are per-run traced inputs: they must not key the cache.
    return replace(config, lr=1.0, weight_var=1.0, bias_var=0.0)


def probe_mesh() -> Mesh:
    """The default mesh of a sweep with probes: on a single-process CPU, one device.

    The signal probe's Jacobian spectrum calls LAPACK (``jnp.linalg.svd``) inside the grid
    program. With several CPU devices sharing XLA's thread pool, a batched LAPACK call on
    every device at once was seen to deadlock here (jax/jaxlib 0.10.2, 2 devices on 2
    cores, 15 runs per device: the process sleeps in a futex with no CPU time); on one
    device it does not. Elsewhere (GPU/TPU, several processes) :func:`default_mesh`.
    """
    devices = jax.devices()
    if devices[0].platform == "cpu" and jax.process_count() == 1:
        return default_mesh(devices[:1])
    return default_mesh(devices)


def default_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh named ``runs`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("runs",))


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
    padded = padded_widths(plan.runs, _min_width(plan.config))
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


def assemble(config: Config, grid: Grid, parts: list[dict[str, np.ndarray]]) -> SweepResult:
    """Concatenate chunk outputs (in chunk order) into a :class:`SweepResult`."""
    runs = run_table(grid, config)
    history = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "diverged_epoch"}
    params = {k: history.pop(PARAM_PREFIX + k) for k in PARAM_KEYS if PARAM_PREFIX + k in history}
    history["hist_epochs"] = np.asarray(hist_epochs(config), np.int32)
    history["hist_edges"] = diag.HIST_EDGES.copy()
    if config.probes:
        history[SIGNAL_JAC_EDGES] = np.asarray(probes.LOG_SIGMA_EDGES, np.float32)
    diverged = np.concatenate([p["diverged_epoch"] for p in parts]).astype(np.int32)
    runs = replace(runs, diverged_epoch=diverged)
    return SweepResult(config=config, seeds=tuple(grid.seeds), depths=tuple(grid.depths),
                       widths=tuple(grid.widths), lrs=tuple(grid.lrs), runs=runs,
                       history=history, weight_vars=tuple(grid.weight_vars),
                       bias_vars=tuple(grid.bias_vars), params=params or None)


def sweep(config: Config, *, seeds=(0,), depths=(1,), widths=(5,), lrs=(), weight_vars=(),
          bias_vars=(), chunk_size: int | None = None, mesh: Mesh | None = None,
          engine: str = "auto", keep_params: bool = False,
          progress: Callable[[int], None] | None = None) -> SweepResult:
    """Train every run of the grid and return the result in memory.

    Args:
      config: the protocol (see :class:`vgjax.config.Config`).
      seeds, depths, widths: lists of ints; lrs, weight_vars (sigma_w^2), bias_vars
        (sigma_b^2): optional lists of floats (empty: the config's value), each a traced
        per-run value, so the whole grid is one compiled program. Runs are their product,
        seed outermost, then depth, width, lr, weight_var, bias_var.
      chunk_size: runs per compiled call (default: chosen from memory).
      mesh: a 1-D ``runs`` mesh (default: all devices).
      engine: "auto", "fast", "wide" or "vmap" (see :func:`make_plan`).
      keep_params: also return every run's final parameters in ``result.params``
        (kernels [R, D, P, P], biases [R, D, P], out_kernel [R, P] or [R, P, C], out_bias
        [R] or [R, C]); :func:`vgjax.model.unpack_run` gives one run's exact layers.
      progress: called with the number of runs finished after each chunk.
    Returns:
      :class:`SweepResult` with history arrays [R, E], [R, E, L] and histograms
      [R, H, L, K] (see :mod:`vgjax.result`).
    """
    floats = lambda xs: tuple(float(x) for x in xs)
    grid = Grid(tuple(seeds), tuple(depths), tuple(widths), floats(lrs), floats(weight_vars),
                floats(bias_vars))
    plan = make_plan(config, grid, chunk_size=chunk_size, mesh=mesh, engine=engine,
                     keep_params=keep_params)
    compiled, _ = compile_plan(plan)
    data = device_data(plan)
    parts = []
    for c in range(plan.n_chunks):
        parts.append(run_chunk(plan, compiled, data, c))
        if progress is not None:
            progress(len(parts[-1]["diverged_epoch"]))
    return assemble(config, grid, parts)
