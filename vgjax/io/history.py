"""``history.npz``: every per-epoch array of a sweep plus its run table — write and load.

Members: the history arrays under their own names (shapes in :mod:`vgjax.result`) and the run
table as ``run_<field>`` arrays ([R] each, one per :class:`~vgjax.result.RunTable` field).
Written through :mod:`vgjax.io.store` (atomic, no pickle, fixed member order and timestamps), so
the streamed and the in-memory writers give identical bytes. ``load_result`` reads it with
``summary.json`` and checks that both describe the same sweep.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from vgjax.io.outdir import HISTORY_NAME, SUMMARY_NAME
from vgjax.result import ARCH_FIELDS, RunTable, SweepResult, check_result, written_fields
from vgjax.io.store import atomic_file, check_array, jsonable, read_npz, write_npz
from vgjax.io.summary import read_summary, summary_grid

RUN_ARRAYS = tuple(f"run_{f.name}" for f in dataclasses.fields(RunTable))
"""Run-table arrays stored in history.npz beside the history arrays."""
OPTIONAL_RUN_ARRAYS = ("run_weight_var", "run_bias_var", "run_residual", "run_norm")
"""Absent from files written before the variance axes (and, for the architecture, from
those of sweeps of plain MLPs); the run table then has the defaults."""


def run_arrays(runs: RunTable) -> dict[str, np.ndarray]:
    """The run table as ``run_<field>`` arrays [R] (as stored in history.npz and params.npz;
    the architecture only for sweeps with non-plain runs, :func:`vgjax.result.written_fields`)."""
    names = written_fields(runs, [f.name for f in dataclasses.fields(RunTable)])
    return {f"run_{f}": np.asarray(getattr(runs, f)) for f in names}


def write_history(path: str | os.PathLike[str], result: SweepResult) -> None:
    """Write ``history.npz`` atomically: every array of ``result.history`` plus the run table.

    Members: the history arrays under their own names (shapes as in :mod:`vgjax.result`) and
    ``run_seed``, ``run_depth``, ``run_width``, ``run_lr``, ``run_diverged_epoch`` ([R] each).
    Deflate-compressed (mostly-NaN and mostly-zero arrays shrink a lot), no pickle, identical
    bytes to :func:`write_history_from_chunks` for the same data.
    """
    check_result("result:", result)
    table = run_arrays(result.runs)
    arrays = {**result.history, **table}
    if len(arrays) != len(result.history) + len(table):
        raise ValueError(f"result: history must not use the names {list(RUN_ARRAYS)}")
    checked = {k: check_array(k, v) for k, v in arrays.items()}
    with atomic_file(path) as f:
        write_npz(f, {k: (lambda v=v: [v]) for k, v in checked.items()},
                   dict.fromkeys(checked), compress=True)


def write_history_from_chunks(path: str | os.PathLike[str], names: Sequence[str],
                              chunks_of: Callable[[str], Iterable[np.ndarray]], *,
                              runs: RunTable,
                              shared: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ``history.npz`` from per-chunk arrays with peak memory of one chunk of one array.

    For each name, ``chunks_of(name)`` is called once and must yield that array's chunks in
    run order; the chunks are concatenated along axis 0 (runs) straight into the zip member
    (npy header for the full shape first, then each chunk's bytes). E.g. with a
    :class:`ChunkStore`: ``chunks_of = lambda n: store.iter_array(n, range(n_chunks))``.

    Args:
        path: destination, normally ``OUT/history.npz``.
        names: the per-run history arrays to write (leading axis R split over chunks).
        chunks_of: name -> iterable of [R_i, ...] arrays with equal dtype and trailing shape,
            sum of R_i = ``len(runs)``.
        runs: the full run table (written as ``run_*`` arrays).
        shared: arrays without a run axis, written whole (``hist_epochs``, ``hist_edges``).

    The file is byte-identical to :func:`write_history` of the concatenated data. On a
    mismatch (dtype, trailing shape, total rows) a ``ValueError`` is raised and nothing is
    left at ``path``.
    """
    shared = dict(shared or {})
    table = run_arrays(runs)
    all_names = list(names) + list(shared) + list(table)
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"history: array names repeat across names/shared/run table: {all_names}")
    members: dict[str, Callable[[], Iterable[np.ndarray]]] = {}
    leading: dict[str, int | None] = {}
    for n in names:
        members[n] = (lambda n=n: chunks_of(n))
        leading[n] = len(runs)
    for n, v in {**shared, **table}.items():
        members[n] = (lambda v=v: [v])
        leading[n] = None
    with atomic_file(path) as f:
        write_npz(f, members, leading, compress=True)


def _check_same_runs(rows: list, runs: RunTable, where_s: str, hp: Path) -> None:
    """``summary.json``'s runs and ``history.npz``'s run table must be the same sweep."""
    if len(rows) != len(runs):
        raise ValueError(f"{where_s} lists {len(rows)} runs; {str(hp)!r} has {len(runs)}")
    fields = [f.name for f in dataclasses.fields(RunTable) if f.name != "diverged_epoch"]
    columns = {f: np.asarray(getattr(runs, f)) for f in fields}
    for i, row in enumerate(rows):
        try:
            d_epoch = row["diverged_epoch"]
            # Every run-table field, as summary.json writes it (float32 by its shortest repr).
            same = (all(row.get(f, "none") == jsonable(columns[f][i]) if f in ARCH_FIELDS
                    else row[f] == jsonable(columns[f][i]) for f in fields)
                    and (-1 if d_epoch is None else d_epoch) == int(runs.diverged_epoch[i]))
        except (KeyError, TypeError):
            same = False
        if not same:
            raise ValueError(f"{where_s} run {i} does not match the run table in {str(hp)!r} "
                             "(files from different sweeps?)")


def load_result(out_dir: str | os.PathLike[str]) -> SweepResult:
    """Read ``summary.json`` and ``history.npz`` of a finished sweep and check them.

    Args:
        out_dir: the sweep's output directory.

    Returns:
        The :class:`SweepResult` (history arrays as stored; run table from ``run_*``).

    Raises:
        ValueError: one line naming the file and the problem: missing file, invalid or
            truncated JSON/npz, wrong ``format``, unsupported ``version``, invalid config or
            grid, missing arrays, shapes that do not match the run table/grid, or a run table
            that disagrees with the summary's runs.
    """
    out = Path(out_dir)
    sp, hp = out / SUMMARY_NAME, out / HISTORY_NAME
    summary = read_summary(sp)
    where_s = f"results: {str(sp)!r}"
    config, grid = summary_grid(summary, where_s)
    arrays = read_npz(hp)
    where_h = f"results: {str(hp)!r}"
    missing = [n for n in RUN_ARRAYS if n not in arrays and n not in OPTIONAL_RUN_ARRAYS]
    if missing:
        raise ValueError(f"{where_h} lacks array(s) {', '.join(missing)}")
    runs = RunTable(**{f.name: arrays.get(f"run_{f.name}") for f in dataclasses.fields(RunTable)})
    history = {k: v for k, v in arrays.items() if k not in RUN_ARRAYS}
    result = SweepResult(config=config, seeds=grid.seeds, depths=grid.depths,
                         widths=grid.widths, lrs=grid.lrs, runs=runs, history=history,
                         weight_vars=grid.weight_vars, bias_vars=grid.bias_vars,
                         residuals=grid.residuals, norms=grid.norms)
    check_result(where_h, result)
    _check_same_runs(summary["runs"], runs, where_s, hp)
    return result
