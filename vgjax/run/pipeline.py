"""A sweep written to an output directory, chunk by chunk, resumable after any interruption.

Order of work (each file appears atomically, so a kill at any point leaves only whole files):

1. plan the grid; refuse a directory holding a different sweep (``manifest.json``);
2. :func:`vgjax.run.chunks.compute_chunks` with the hooks of :func:`file_hooks`: per chunk
   not yet done, compile (once) and train it, save ``chunks/chunk_NNNNN.npz``; per chunk,
   write its runs' TensorBoard directories unless marked done, then mark them done;
3. stream ``history.npz`` from the chunk files, write ``summary.json``, write the seed-mean
   TensorBoard directories.

Running the same command again skips every finished chunk and redoes a chunk whose
TensorBoard writing was interrupted, so the final files equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from jax.sharding import Mesh

from vgjax.io import history
from vgjax.io import outdir
from vgjax.io import tensorboard as tb
from vgjax.config import Config, Grid, hist_epochs
from vgjax.io.chunk_store import ChunkStore
from vgjax.io.outdir import PARAMS_NAME
from vgjax.result import LEARN_THRESHOLD, SIGNAL_JAC_EDGES, SweepResult
from vgjax.io.store import atomic_save_npz, atomic_write_text, sanitize_name
from vgjax.io.summary import write_summary
from vgjax.grid.plan import Layout, Plan, make_plan
from vgjax.run.chunks import (ChunkDone, ChunkHook, assemble, compute_chunks, new_timing,
                              progress_hook, without_bulk)
from vgjax.engines.loop import PARAM_KEYS, PARAM_PREFIX

TB_DONE_SUFFIX = ".tb-done"


@dataclass(frozen=True)
class SweepOutput:
    """What :func:`run_sweep` produced: the result (histogram arrays left out; they are in
    ``history.npz``), the summary dict as written, and the output directory."""

    result: SweepResult
    summary: dict
    out: Path


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
    A directory filled by array-job shards is refused: :func:`vgjax.run.distributed.merge`
    (``vgjax merge``, or the plain ``vgjax sweep`` command) merges it.
    Raises ``ValueError`` (one line) for bad input before anything is compiled or written.
    """
    plan = make_plan(config, grid, chunk_size=chunk_size, mesh=mesh, keep_params=save_params)
    prefix = sanitize_name(prefix)
    if outdir.sharded_layout(out, config, grid) is not None:
        # Merging shards is vgjax.run.distributed's job (it builds on this module): the CLI's
        # plain `vgjax sweep` dispatches there; here it is refused before anything is written.
        raise ValueError(f"out: {os.fspath(out)!r} holds this sweep split into array-job "
                         "shards; allowed: vgjax.run.distributed.merge(out) (`vgjax merge`) or "
                         "a new directory")
    out = outdir.prepare_out_dir(out, outdir.make_manifest(config, grid), overwrite=overwrite)
    if progress is not None:
        progress(0)  # the output directory is claimed; a caller may draw its progress bar now
    store = ChunkStore(out)
    plan = resume_layout(plan, store, chunk_size, mesh)
    logdir = Path(logdir) if logdir is not None else out / outdir.TENSORBOARD_DIR
    timing = new_timing()
    hooks = file_hooks(plan.layout, store, timing, tensorboard=tensorboard, logdir=logdir,
                       prefix=prefix, progress=progress)
    parts = compute_chunks(plan, hooks=hooks, stored=store, keep=without_bulk, timing=timing)
    return finish_sweep(plan.layout, out, tensorboard=tensorboard, prefix=prefix,
                        logdir=logdir, learn_threshold=learn_threshold, timing=timing,
                        extra={"device": device_kind(plan.mesh), "engine": plan.engine},
                        parts=parts, save_params=save_params)


def file_hooks(layout: Layout, store: ChunkStore | None, timing: dict[str, float], *,
               tensorboard: bool, logdir: Path, prefix: str,
               progress: Callable[[int], None] | None = None) -> list[ChunkHook]:
    """The chunk hooks of a sweep written to a directory: save each trained chunk's file
    in ``store``, write its TensorBoard run directories (with ``tensorboard``), report its
    runs to ``progress``. ``store`` None (a process that does not write): progress only."""
    hooks: list[ChunkHook] = []
    if store is not None:
        hooks.append(lambda done: store.save(done.index, done.arrays) if done.trained else None)
        if tensorboard:
            hooks.append(lambda done: write_chunk_tensorboard(layout, done.index, done.arrays,
                                                              store, logdir, prefix, timing))
    if progress is not None:
        hooks.append(progress_hook(progress))
    return hooks


def _tb_marker(store: ChunkStore, c: int) -> Path:
    return store.path(c).with_name(store.path(c).name + TB_DONE_SUFFIX)


def write_chunk_tensorboard(layout: Layout, c: int, arrays: dict, store: ChunkStore,
                            logdir: Path, prefix: str, timing: dict[str, float]) -> None:
    """Write the TensorBoard run directories of chunk ``c`` unless its marker says done."""
    marker = _tb_marker(store, c)
    if marker.exists():
        return
    t0 = time.perf_counter()
    # Rewrites whole event files, so a chunk interrupted mid-write is simply redone.
    tb.write_sweep(assemble(layout, {c: arrays}), logdir, prefix, write_means=False)
    atomic_write_text(marker, "")
    timing["tensorboard_s"] += time.perf_counter() - t0


class MissingChunks(ValueError):
    """Raised by :func:`finish_sweep` when chunk files are missing (one line, lists them)."""


def finish_sweep(layout: Layout, out: Path, *, tensorboard: bool, prefix: str,
                 logdir: Path | None, learn_threshold: float, timing: dict[str, float],
                 extra: dict, parts: dict[int, dict] | None = None, hint: str = "",
                 progress: Callable[[int], None] | None = None,
                 save_params: bool = False) -> SweepOutput:
    """Assemble ``summary.json``, ``history.npz`` and TensorBoard from the chunk files.

    ``parts`` holds the chunks already passed through the hooks (as :func:`compute_chunks`
    returns them, :func:`without_bulk`); the rest are read from ``OUT/chunks`` and passed
    through the same hooks (:func:`file_hooks`: TensorBoard, if not yet marked done, and
    ``progress``). With ``save_params`` also writes ``params.npz`` from the chunks'
    ``param_*`` arrays. Raises :class:`MissingChunks` naming the missing chunks (plus
    ``hint``) before writing.
    """
    out = Path(out)
    n_chunks = layout.n_chunks
    store = ChunkStore(out)
    parts = dict(parts or {})
    missing = sorted(set(range(n_chunks)) - set(parts) - store.done())
    if missing:
        raise MissingChunks(f"chunks: {_ranges(missing)} of 0-{n_chunks - 1} are missing in "
                            f"{str(out / outdir.CHUNKS_DIR)!r}{hint}")
    logdir = Path(logdir) if logdir is not None else out / outdir.TENSORBOARD_DIR
    hooks = file_hooks(layout, store, timing, tensorboard=tensorboard, logdir=logdir,
                       prefix=prefix, progress=progress)
    for c in range(n_chunks):
        if c not in parts:  # computed elsewhere (other shards, an earlier process)
            arrays = store.load(c)
            for hook in hooks:
                hook(ChunkDone(c, arrays, trained=False))
            parts[c] = without_bulk(arrays)
    with np.load(store.path(0), allow_pickle=False) as z:  # lazy: reads the zip directory
        names = sorted(k for k in z.files
                       if k != "diverged_epoch" and not k.startswith(PARAM_PREFIX))
    t0 = time.perf_counter()
    result = assemble(layout, parts)
    history.write_history_from_chunks(
        out / outdir.HISTORY_NAME, names,
        lambda name: store.iter_array(name, range(n_chunks)),
        runs=result.runs,
        shared={"hist_epochs": np.asarray(hist_epochs(layout.config), np.int32),
                "hist_edges": result.history["hist_edges"],
                **{k: result.history[k] for k in (SIGNAL_JAC_EDGES,) if k in result.history}})
    if save_params:
        params = {k: np.concatenate([store.load(c, [PARAM_PREFIX + k])[PARAM_PREFIX + k]
                                     for c in range(n_chunks)]) for k in PARAM_KEYS}
        atomic_save_npz(out / PARAMS_NAME, {**params, **history.run_arrays(result.runs)})
    timing["write_s"] = time.perf_counter() - t0
    if tensorboard:
        t0 = time.perf_counter()
        tb.write_means(result, logdir, prefix)
        timing["tensorboard_s"] += time.perf_counter() - t0
    summary = write_summary(out / outdir.SUMMARY_NAME, result, timing=timing, extra=extra,
                            learn_threshold=learn_threshold)
    return SweepOutput(result, summary, out)


def _ranges(xs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans: list[list[int]] = []
    for x in xs:
        if spans and x == spans[-1][1] + 1:
            spans[-1][1] = x
        else:
            spans.append([x, x])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


LAYOUT_NAME = "layout.json"


def resume_layout(plan: Plan, store: ChunkStore, chunk_size: int | None,
                  mesh: Mesh | None) -> Plan:
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


def device_kind(mesh: Mesh) -> str:
    """E.g. ``cpu:cpu x2``: platform, device kind and count of ``mesh``."""
    dev = mesh.devices.flat[0]
    return f"{dev.platform}:{dev.device_kind} x{mesh.devices.size}"

