"""The grid of runs (seeds x depths x widths x lrs) as one compiled program.

``sweep(config, seeds=..., depths=..., widths=...)`` builds the run table, pads every run to
the grid's largest depth and width, and trains chunks of runs with ``jit(vmap(train_run))``.
The run axis is the leading axis of every input and output and is sharded over all devices
with a 1-D mesh, so the same code runs on one CPU, several CPU devices, a GPU or a TPU slice.
Every chunk has the same shape, so the program compiles once per grid shape.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import diagnostics as diag
from vgjax.config import Config, Grid, validate, validate_grid
from vgjax.data import make_data
from vgjax.result import RunTable, SweepResult
from vgjax.train import DeviceData, RunSpec, hist_epochs, make_train

# Memory the chunk's outputs and working set may use, when the caller does not say.
DEFAULT_CHUNK_BYTES = 512 * 2**20


def run_table(grid: Grid, config: Config) -> RunTable:
    """The runs of ``grid`` in run-axis order: seed outermost, then depth, width, lr."""
    lrs = grid.lrs or (config.lr,)
    rows = list(itertools.product(grid.seeds, grid.depths, grid.widths, lrs))
    seed, depth, width, lr = (np.array(c) for c in zip(*rows))
    return RunTable(seed=seed.astype(np.int64), depth=depth.astype(np.int32),
                    width=width.astype(np.int32), lr=lr.astype(np.float32),
                    diverged_epoch=np.full(len(rows), -1, np.int32))


def run_specs(runs: RunTable) -> RunSpec:
    """Stack the table into a :class:`RunSpec` of NumPy arrays with leading axis R."""
    keys = np.stack([np.asarray(jax.random.key_data(jax.random.PRNGKey(int(s))))
                     for s in runs.seed]) if len(runs) else np.zeros((0, 2), np.uint32)
    return RunSpec(key=keys.astype(np.uint32), depth=runs.depth, width=runs.width, lr=runs.lr)


def bytes_per_run(config: Config, max_depth: int, p: int) -> int:
    """Rough device bytes one run needs: its outputs plus its working set during a step."""
    n_layers = max_depth + 1
    e = config.epochs
    outputs = 4 * e * (4 + 3 * n_layers * (2 if config.test_gradients else 1))
    h = len(hist_epochs(config))
    outputs += 2 * 4 * h * n_layers * (diag.N_BUCKETS + 4)
    # activations of the evaluation pass over the whole data set dominate the working set
    working = 4 * config.n_samples * p * (max_depth + 2) * 3
    working += 4 * max_depth * p * p * 8 + 4 * n_layers * p * p * diag.N_BUCKETS
    return outputs + working


def auto_chunk_size(n_runs: int, config: Config, max_depth: int, p: int, n_devices: int,
                    budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Runs per chunk: as many as fit ``budget_bytes``, a multiple of the device count."""
    per_run = bytes_per_run(config, max_depth, p)
    fit = max(1, budget_bytes // per_run)
    size = min(n_runs, fit)
    return max(n_devices, (size // n_devices) * n_devices)


@functools.lru_cache(maxsize=32)
def _compiled_grid(static_config: Config, max_depth: int, p: int, mesh: Mesh):
    """jit(vmap(train_run)) for one static config and padded shape, cached across sweeps."""
    train_run = make_train(static_config, max_depth, p)
    runs = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(jax.vmap(train_run, in_axes=(0, None)),
                   in_shardings=(runs, replicated), out_shardings=runs)


def _static_config(config: Config) -> Config:
    # The learning rate is a per-run traced input, so it must not key the compile cache.
    return replace(config, lr=1.0)


def default_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh named ``runs`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("runs",))


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:  # multi-host: gather the run axis from every process
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def iter_chunks(config: Config, grid: Grid, *, chunk_size: int | None = None,
                mesh: Mesh | None = None, skip: frozenset[int] = frozenset(),
                ) -> Iterator[tuple[int, slice, dict[str, np.ndarray]]]:
    """Train the grid chunk by chunk, yielding ``(chunk_index, run_slice, arrays)``.

    ``arrays`` holds the history arrays of the runs in ``run_slice`` (run axis first, see
    :mod:`vgjax.result`) plus ``diverged_epoch`` [r]. Chunks in ``skip`` are not trained
    (used to resume). Memory stays flat in the number of runs: one chunk is alive at a time.
    """
    validate(config)
    validate_grid(grid)
    runs = run_table(grid, config)
    max_depth, p = max(grid.depths), max(max(grid.widths), 2)
    mesh = mesh or default_mesh()
    n_dev = mesh.devices.size
    size = chunk_size or auto_chunk_size(len(runs), config, max_depth, p, n_dev)
    size = max(n_dev, -(-size // n_dev) * n_dev)  # a multiple of the device count
    fn = _compiled_grid(_static_config(config), max_depth, p, mesh)
    data = make_data(config)
    dev_data = DeviceData(*(jnp.asarray(a) for a in data))
    specs = run_specs(runs)
    n_chunks = math.ceil(len(runs) / size)
    for c in range(n_chunks):
        if c in skip:
            continue
        sl = slice(c * size, min((c + 1) * size, len(runs)))
        n = sl.stop - sl.start
        # Pad the last chunk by repeating its last run so every chunk has one shape.
        take = np.minimum(np.arange(sl.start, sl.start + size), sl.stop - 1)
        chunk = RunSpec(*(a[take] for a in specs))
        out = fn(chunk, dev_data)
        yield c, sl, {k: _to_host(v)[:n] for k, v in out.items()}


def n_chunks_for(config: Config, grid: Grid, chunk_size: int | None = None,
                 mesh: Mesh | None = None) -> tuple[int, int]:
    """(number of chunks, chunk size) that :func:`iter_chunks` will use."""
    n_runs = len(grid.seeds) * len(grid.depths) * len(grid.widths) * max(1, len(grid.lrs))
    max_depth, p = max(grid.depths), max(max(grid.widths), 2)
    n_dev = (mesh or default_mesh()).devices.size
    size = chunk_size or auto_chunk_size(n_runs, config, max_depth, p, n_dev)
    size = max(n_dev, -(-size // n_dev) * n_dev)
    return math.ceil(n_runs / size), size


def assemble(config: Config, grid: Grid, parts: list[dict[str, np.ndarray]]) -> SweepResult:
    """Concatenate chunk outputs (in chunk order) into a :class:`SweepResult`."""
    runs = run_table(grid, config)
    history = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "diverged_epoch"}
    history["hist_epochs"] = np.asarray(hist_epochs(config), np.int32)
    history["hist_edges"] = diag.HIST_EDGES.copy()
    diverged = np.concatenate([p["diverged_epoch"] for p in parts]).astype(np.int32)
    runs = replace(runs, diverged_epoch=diverged)
    return SweepResult(config=config, seeds=tuple(grid.seeds), depths=tuple(grid.depths),
                       widths=tuple(grid.widths), lrs=tuple(grid.lrs), runs=runs,
                       history=history)


def sweep(config: Config, *, seeds=(0,), depths=(1,), widths=(5,), lrs=(),
          chunk_size: int | None = None, mesh: Mesh | None = None,
          progress: Callable[[int], None] | None = None) -> SweepResult:
    """Train every run of seeds x depths x widths (x lrs) and return the result in memory.

    Args:
      config: the protocol (see :class:`vgjax.config.Config`).
      seeds, depths, widths: lists of ints; lrs: optional list of learning rates (empty: the
        config's). Runs are their product, seed outermost.
      chunk_size: runs per compiled call (default: chosen from memory).
      mesh: a 1-D ``runs`` mesh (default: all devices).
      progress: called with the number of runs finished after each chunk.
    Returns:
      :class:`SweepResult` with history arrays [R, E], [R, E, L] and histograms
      [R, H, L, K] (see :mod:`vgjax.result`).
    """
    grid = Grid(tuple(seeds), tuple(depths), tuple(widths), tuple(float(x) for x in lrs))
    parts = []
    for _, sl, arrays in iter_chunks(config, grid, chunk_size=chunk_size, mesh=mesh):
        parts.append(arrays)
        if progress is not None:
            progress(sl.stop - sl.start)
    return assemble(config, grid, parts)
