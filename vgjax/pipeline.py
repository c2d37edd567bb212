"""A sweep written to an output directory, chunk by chunk, resumable after any interruption.

Order of work (each file appears atomically, so a kill at any point leaves only whole files):

1. validate config and grid; refuse a directory holding a different sweep (``manifest.json``);
2. compile the chunk program once;
3. per chunk not yet done: train it, save ``chunks/chunk_NNNNN.npz``, write its runs'
   TensorBoard directories, then mark the chunk's TensorBoard done;
4. stream ``history.npz`` from the chunk files, write ``summary.json``, write the seed-mean
   TensorBoard directories.

Running the same command again skips every finished chunk and redoes a chunk whose
TensorBoard writing was interrupted, so the final files equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from vgjax import history, outdir
from vgjax.outdir import PARAMS_NAME
from vgjax import tensorboard as tb
from vgjax.config import Config, Grid, hist_epochs
from vgjax.result import HIST_ARRAYS, LEARN_THRESHOLD, SweepResult
from vgjax.store import atomic_save_npz, atomic_write_text, sanitize_name
from vgjax.summary import write_summary
from vgjax.sweep import (assemble, compile_plan, device_data, make_plan, run_chunk, run_table)
from vgjax.train import PARAM_KEYS, PARAM_PREFIX

TB_DONE_SUFFIX = ".tb-done"


@dataclass(frozen=True)
class SweepOutput:
    """What :func:`run_sweep` produced: the result (histogram arrays left out; they are in
    ``history.npz``), the summary dict as written, and the output directory."""

    result: SweepResult
    summary: dict
    out: Path


def _chunk_result(config: Config, grid: Grid, runs, sl: slice, arrays: dict) -> SweepResult:
    """A SweepResult of only the runs in ``sl`` (for per-chunk TensorBoard writing)."""
    part = assemble(config, grid, [arrays])
    sub = replace(runs, **{f: getattr(runs, f)[sl] for f in ("seed", "depth", "width", "lr",
                                                              "weight_var", "bias_var")},
                  diverged_epoch=part.runs.diverged_epoch)
    return replace(part, runs=sub)


def run_sweep(config: Config, grid: Grid, out: str | Path, *, overwrite: bool = False,
              chunk_size: int | None = None, mesh: Mesh | None = None,
              tensorboard: bool = True, prefix: str = "sweep", logdir: str | Path | None = None,
              learn_threshold: float = LEARN_THRESHOLD,
              progress: Callable[[int], None] | None = None,
              save_params: bool = False) -> SweepOutput:
    """Train ``grid`` under ``config`` and write every output into ``out``.

    Writes ``OUT/summary.json``, ``OUT/history.npz`` (arrays as in :mod:`vgjax.result`, plus
    ``run_seed``/``run_depth``/``run_width``/``run_lr``/``run_diverged_epoch`` [R]),
    ``OUT/chunks/`` and, with ``tensorboard``, ``OUT/tensorboard/PREFIX_dDD_wWW/seedSS`` and
    ``.../mean`` (or under ``logdir`` when given). ``progress`` is called with 0 once the
    output directory is claimed (before compiling), then with the runs finished, per chunk.
    With ``save_params`` also ``OUT/params.npz``: every run's final parameters (``kernels``
    [R, D, P, P], ``biases`` [R, D, P], ``out_kernel``, ``out_bias``) and the run table
    (``run_depth``, ``run_width``, ...); one run's exact layers are
    ``unpack_run(np.load(path, allow_pickle=False), depth, width, run=r)``.
    Raises ``ValueError`` (one line) for bad input before anything is compiled or written.
    """
    plan = make_plan(config, grid, chunk_size=chunk_size, mesh=mesh, keep_params=save_params)
    prefix = sanitize_name(prefix)
    out = outdir.prepare_out_dir(out, outdir.make_manifest(config, grid), overwrite=overwrite)
    if progress is not None:
        progress(0)  # the output directory is claimed; a caller may draw its progress bar now
    store = outdir.ChunkStore(out)
    plan = _resume_layout(plan, store, chunk_size, mesh)
    logdir = Path(logdir) if logdir is not None else out / outdir.TENSORBOARD_DIR
    timing = {"compile_s": 0.0, "train_s": 0.0, "tensorboard_s": 0.0, "write_s": 0.0}

    done = store.done()
    compiled = data = None
    parts: dict[int, dict[str, np.ndarray]] = {}
    for c in range(plan.n_chunks):
        sl = plan.chunk_slice(c)
        arrays = store.load(c) if c in done else None
        if arrays is not None and save_params and PARAM_PREFIX + PARAM_KEYS[0] not in arrays:
            arrays = None  # finished without its parameters: train it again to get them
        if arrays is None:
            if compiled is None:
                compiled, timing["compile_s"] = compile_plan(plan)
                data = device_data(plan)
            t0 = time.perf_counter()
            arrays = run_chunk(plan, compiled, data, c)
            timing["train_s"] += time.perf_counter() - t0
            store.save(c, arrays)
        marker = store.path(c).with_name(store.path(c).name + TB_DONE_SUFFIX)
        if tensorboard and not marker.exists():
            t0 = time.perf_counter()
            # Rewrites whole event files, so a chunk interrupted mid-write is simply redone.
            tb.write_sweep(_chunk_result(config, grid, plan.runs, sl, arrays), logdir, prefix,
                           write_means=False)
            atomic_write_text(marker, "")
            timing["tensorboard_s"] += time.perf_counter() - t0
        parts[c] = {k: v for k, v in arrays.items()
                    if k not in HIST_ARRAYS and not k.startswith(PARAM_PREFIX)}
        names = sorted(k for k in arrays if k != "diverged_epoch" and not k.startswith(PARAM_PREFIX))
        if progress is not None:
            progress(sl.stop - sl.start)

    t0 = time.perf_counter()
    result = assemble(config, grid, [parts[c] for c in range(plan.n_chunks)])
    history.write_history_from_chunks(
        out / outdir.HISTORY_NAME, names,
        lambda name: store.iter_array(name, range(plan.n_chunks)),
        runs=result.runs,
        shared={"hist_epochs": np.asarray(hist_epochs(config), np.int32),
                "hist_edges": result.history["hist_edges"]})
    if save_params:
        params = {k: np.concatenate([np.asarray(store.load(c, [PARAM_PREFIX + k])[PARAM_PREFIX + k])
                                     for c in range(plan.n_chunks)]) for k in PARAM_KEYS}
        atomic_save_npz(out / PARAMS_NAME, {**params, **history.run_arrays(result.runs)})
    timing["write_s"] = time.perf_counter() - t0
    if tensorboard:
        t0 = time.perf_counter()
        tb.write_means(result, logdir, prefix)
        timing["tensorboard_s"] += time.perf_counter() - t0
    summary = write_summary(out / outdir.SUMMARY_NAME, result, timing=timing,
                            extra={"device": _device_kind(plan.mesh), "engine": plan.engine},
                            learn_threshold=learn_threshold)
    return SweepOutput(result, summary, out)


LAYOUT_NAME = "layout.json"


def _resume_layout(plan, store: outdir.ChunkStore, chunk_size: int | None, mesh: Mesh | None):
    """Keep the chunk layout of an interrupted sweep, or drop its chunks if it cannot be kept.

    Chunk files hold fixed run slices, so resuming with another chunk size would mix slices
    (and a run's float rounding depends on the chunk shape). Without an explicit
    ``chunk_size`` the saved one is reused (if it fits the device count); otherwise the old
    chunks are removed with a warning. Writes ``OUT/chunks/layout.json``.
    """
    layout = store.dir / LAYOUT_NAME
    saved = None
    if layout.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            saved = int(json.loads(layout.read_text())["chunk_size"])
    n_dev = plan.mesh.devices.size
    if (chunk_size is None and saved is not None and saved != plan.chunk_size
            and saved % n_dev == 0):
        plan = make_plan(plan.config, plan.grid, chunk_size=saved, mesh=mesh,
                         keep_params=plan.keep_params)
    if store.dir.is_dir() and saved != plan.chunk_size:
        old = [p for p in store.dir.iterdir() if p.name.startswith("chunk_")]
        if old:
            warnings.warn(f"chunks in {str(store.dir)!r} were cut into {saved or 'unknown'} "
                          f"runs each, this run uses {plan.chunk_size}; recomputing them",
                          RuntimeWarning, stacklevel=3)
            for p in old:
                p.unlink()
    store.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout, json.dumps({"chunk_size": plan.chunk_size}))
    return plan


def _device_kind(mesh: Mesh) -> str:
    dev = mesh.devices.flat[0]
    return f"{dev.platform}:{dev.device_kind} x{mesh.devices.size}"


def expected_runs(grid: Grid, config: Config) -> int:
    """Number of runs in ``grid``."""
    return len(run_table(grid, config))
