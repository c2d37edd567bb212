"""``summary.json``: what a finished sweep found, as strict JSON — build, schema, write, load.

The schema is the ``Summary`` TypedDict below. Everything in it except ``timing`` and the
``versions`` entries given as ``extra`` is a function of the result alone, computed with the
one definitions of :mod:`vgjax.result` (final values, "learns", seed statistics, grouping).
``load_summary`` reads a summary without ``history.npz`` and checks it, recomputing the
``groups`` from the ``runs``: a fresh clone's committed summaries are enough for ``vgjax show``
and the report.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any, Mapping, NotRequired, Optional, TypedDict

import numpy as np

from vgjax.config import Config, Grid
from vgjax.io.outdir import SUMMARY_NAME
from vgjax.result import (ARCH_FIELDS, CURVES, GROUP_FIELDS, INIT_SUFFIX, LEARN_THRESHOLD,
                          SIGNAL_LAYER_STATS, RunTable, SweepResult, check_in_grid, check_result,
                          final_metric, final_values, group_indices, learns, seed_stats,
                          written_fields)
from vgjax.io.store import atomic_write_text, dumps_json, json_f32, json_float, jsonable, reject_constant

SUMMARY_FORMAT = "vgjax.sweep"
SUMMARY_VERSION = 1
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


class Stats(TypedDict):
    """Seed statistics of the runs' final values that exist (float32-rounded; None if none)."""

    mean: Optional[float]
    std: Optional[float]  # population std, ddof 0
    min: Optional[float]
    max: Optional[float]


class Run(TypedDict, total=False):
    """One run, in run-axis order: its run-table fields, divergence and final values."""

    seed: int
    depth: int
    width: int
    lr: float
    diverged: bool
    diverged_epoch: Optional[int]  # 1-based, None if the run never diverged
    final_train_loss: Optional[float]
    final_test_loss: Optional[float]
    final_train_accuracy: Optional[float]
    final_test_accuracy: Optional[float]


class Group(TypedDict, total=False):
    """One config (the GROUP_FIELDS values) and its seeds' statistics."""

    depth: int
    width: int
    lr: float
    n_seeds: int
    n_diverged: int
    n_learn: int
    share_learn: float
    final_train_accuracy: Stats
    final_test_accuracy: Stats


class Summary(TypedDict):
    """The content of ``summary.json``."""

    format: str  # SUMMARY_FORMAT
    version: int  # SUMMARY_VERSION
    config: dict[str, Any]  # Config.to_dict()
    grid: dict[str, list]  # seeds, depths, widths, lrs
    versions: dict[str, Optional[str]]  # PACKAGES, plus extra facts such as the device
    learn_threshold: float
    n_runs: int
    runs: list[Run]
    groups: list[Group]  # ascending config order (group_indices)
    timing: dict[str, Any]  # wall times; the one part that differs between equal sweeps
    # Only with the signal probe on (Config.probes): per group, see summary_signal.
    signal: NotRequired[list[dict[str, Any]]]


def package_versions() -> dict[str, str | None]:
    """Installed versions of jax, jaxlib, flax, optax and numpy (None if absent), read from
    package metadata so that nothing is imported."""
    out: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _stats(vals: np.ndarray) -> Stats:
    # Seed statistics (result.seed_stats) rounded to float32: that is all the data holds.
    st = seed_stats(vals)
    return {k: json_f32(float(st[k])) for k in ("mean", "std", "min", "max")}  # type: ignore


def summary_runs(runs: RunTable, finals: Mapping[str, np.ndarray]) -> list[Run]:
    """The ``runs`` list: one dict per run, in run-axis order."""
    fields = written_fields(runs, [f.name for f in dataclasses.fields(RunTable)
                                   if f.name != "diverged_epoch"])
    columns = {f: np.asarray(getattr(runs, f)) for f in fields}
    diverged = np.asarray(runs.diverged_epoch) >= 0
    rows = []
    for i in range(len(runs)):
        row: dict[str, Any] = {f: jsonable(columns[f][i]) for f in fields}
        row["diverged"] = bool(diverged[i])
        row["diverged_epoch"] = int(runs.diverged_epoch[i]) if diverged[i] else None
        for name in CURVES:
            row["final_" + name] = json_float(finals[name][i])
        rows.append(row)  # type: ignore[arg-type]
    return rows  # type: ignore[return-value]


def summary_groups(runs: RunTable, finals: Mapping[str, np.ndarray],
                   learn_threshold: float) -> list[Group]:
    """The ``groups`` list: one dict per config of :func:`vgjax.result.group_indices`."""
    learned = learns(finals["test_accuracy"], runs.diverged_epoch, learn_threshold)
    diverged = np.asarray(runs.diverged_epoch) >= 0
    groups = []
    fields = written_fields(runs, GROUP_FIELDS)
    for sel in group_indices(runs).values():
        n, n_learn = int(sel.size), int(learned[sel].sum())
        group: dict[str, Any] = {f: jsonable(np.asarray(getattr(runs, f))[sel[0]])
                                 for f in fields}
        group.update(n_seeds=n, n_diverged=int(diverged[sel].sum()), n_learn=n_learn,
                     share_learn=n_learn / n,
                     final_train_accuracy=_stats(finals["train_accuracy"][sel]),
                     final_test_accuracy=_stats(finals["test_accuracy"][sel]))
        groups.append(group)
    return groups  # type: ignore[return-value]


def summary_signal(result: SweepResult) -> list[dict[str, Any]]:
    """The ``signal`` list (signal probe on): per config of :func:`group_indices`, its
    GROUP_FIELDS and, for ``q``, ``saturation`` and ``dead``, the seed mean and std per hidden
    layer ([D] lists, float32-rounded, None where no seed has the layer) at initialisation
    (``init``) and of the final values (``final``: :func:`vgjax.result.final_metric`)."""
    values = {}
    for name in SIGNAL_LAYER_STATS:
        short = name.removeprefix("signal_")
        values[short] = (np.asarray(result.history[name + INIT_SUFFIX]),
                         final_metric(result, name))
    out = []
    for sel in group_indices(result.runs).values():
        entry: dict[str, Any] = {f: jsonable(np.asarray(getattr(result.runs, f))[sel[0]])
                                 for f in written_fields(result.runs, GROUP_FIELDS)}
        for short, (init, final) in values.items():
            entry[short] = {when: {k: [json_f32(float(v)) for v in st[k]] for k in ("mean", "std")}
                            for when, st in (("init", seed_stats(init[sel])),
                                             ("final", seed_stats(final[sel])))}
        out.append(entry)
    return out


def build_summary(result: SweepResult, *, timing: Mapping[str, Any],
                  extra: Mapping[str, Any] | None = None,
                  learn_threshold: float = LEARN_THRESHOLD) -> Summary:
    """The content of ``summary.json`` as plain JSON types (see :class:`Summary`)."""
    learns(np.zeros(0, np.float32), np.zeros(0), learn_threshold)  # checks the threshold
    check_result("result:", result, need_hist=False)
    finals = final_values(result)
    extra = dict(extra or {})
    versions: dict[str, Any] = dict(package_versions())
    clash = sorted(set(extra) & set(versions))
    if clash:
        raise ValueError(f"extra: key(s) {clash} clash with package versions; use other names")
    versions.update(extra)
    probed = {"signal": summary_signal(result)} if "signal" in result.config.probes else {}
    return jsonable({
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "config": result.config.to_dict(),
        "grid": {"seeds": [int(s) for s in result.seeds], "depths": [int(d) for d in result.depths],
                 "widths": [int(w) for w in result.widths], "lrs": [float(x) for x in result.lrs],
                 "weight_vars": [float(x) for x in result.weight_vars],
                 "bias_vars": [float(x) for x in result.bias_vars],
                 # the architecture axes only where the sweep has them
                 **{k: list(getattr(result, k)) for k in ("residuals", "norms")
                    if getattr(result, k)}},
        "versions": versions,
        "learn_threshold": float(learn_threshold),
        "n_runs": len(result.runs),
        "runs": summary_runs(result.runs, finals),
        "groups": summary_groups(result.runs, finals, learn_threshold),
        "timing": dict(timing),
        **probed,
    })


def write_summary(path: str | os.PathLike[str], result: SweepResult, *,
                  timing: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                  learn_threshold: float = LEARN_THRESHOLD) -> Summary:
    """Write ``summary.json`` atomically; return what was written.

    Fields as in :class:`Summary`: the config, grid, package versions plus ``extra`` (e.g.
    ``{"device": "NVIDIA H200"}``), ``runs`` (final values as in
    :func:`vgjax.result.final_metric`: the last epoch before a run diverged) and ``groups``
    (per config: n_seeds, n_diverged, n_learn, share_learn = n_learn / n_seeds with "learns"
    from :func:`vgjax.result.learns` — a diverged run never learns — and the seed statistics
    of the final train and test accuracy over the runs that have one), and ``timing``.

    Everything but ``timing`` (and ``extra``) is a function of ``result`` only: keys are
    sorted, float32 values are written by their shortest repr, statistics are rounded to
    float32, NaN/Inf become ``null``. The JSON is strict (no NaN tokens).

    Args:
        path: destination, normally ``OUT/summary.json``.
        result: the finished sweep.
        timing: wall times and the like, e.g. ``{"compile_s": 3.1, "run_s": 40.2}``.
        extra: environment facts merged into ``versions`` (must not reuse package names).
        learn_threshold: test-accuracy threshold in [0, 1] for "learns".
    """
    summary = build_summary(result, timing=timing, extra=extra, learn_threshold=learn_threshold)
    atomic_write_text(path, dumps_json(summary))
    return summary


# --------------------------------------------------------------------------------------------
# Loading


def read_summary(p: Path) -> Summary:
    """Parse ``p`` and check its format, version and top-level entries (one-line errors)."""
    label = str(p)
    if not p.is_file():
        raise ValueError(f"results: {label!r} is missing; run the sweep to completion first")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"results: {label!r} is not UTF-8 text") from None
    except OSError as e:
        raise ValueError(f"results: {label!r} cannot be read ({e.strerror})") from None
    try:
        data = json.loads(text, parse_constant=reject_constant)
    except ValueError:
        raise ValueError(f"results: {label!r} is not valid JSON (truncated?)") from None
    if not isinstance(data, dict):
        raise ValueError(f"results: {label!r} is not a JSON object")
    if data.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"results: {label!r} is not a vgjax sweep summary "
                         f"(format {data.get('format')!r}; expected {SUMMARY_FORMAT!r})")
    if data.get("version") != SUMMARY_VERSION:
        raise ValueError(f"results: {label!r} has version {data.get('version')!r}; "
                         f"this vgjax reads version {SUMMARY_VERSION}")
    for key, kind in (("config", dict), ("grid", dict), ("runs", list)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"results: {label!r} lacks a valid {key!r} entry")
    _fill_variance_defaults(data)
    return data  # type: ignore[return-value]


# Summaries written before the sigma_w^2 / sigma_b^2 axes existed lack these run fields; their
# runs used the defaults (Keras's zero biases, unscaled initialisers).
_VARIANCE_DEFAULTS = {"weight_var": 1.0, "bias_var": 0.0}


def _fill_variance_defaults(data: dict) -> None:
    """Give an older summary's runs and groups the variance fields they implicitly had."""
    for row in [*data["runs"], *(data.get("groups") or [])]:
        if isinstance(row, dict):
            for k, v in _VARIANCE_DEFAULTS.items():
                row.setdefault(k, v)


def summary_grid(summary: Summary, where: str) -> tuple[Config, Grid]:
    """The config and grid a summary records; one-line ``ValueError`` if they are invalid."""
    try:
        config = Config.from_dict(summary["config"])
        g = summary["grid"]
        grid = Grid(tuple(int(v) for v in g["seeds"]), tuple(int(v) for v in g["depths"]),
                    tuple(int(v) for v in g["widths"]), tuple(float(v) for v in g["lrs"]),
                    tuple(float(v) for v in g.get("weight_vars", ())),
                    tuple(float(v) for v in g.get("bias_vars", ())),
                    tuple(g.get("residuals", ())), tuple(g.get("norms", ())))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where} has an invalid config or grid ({e})") from None
    return config, grid


def _runs_from_rows(rows: list, where: str) -> tuple[RunTable, dict[str, np.ndarray]]:
    """The run table and final values that a summary's ``runs`` list describes."""
    fields = [f.name for f in dataclasses.fields(RunTable)]
    try:
        # the architecture fields are written only for sweeps with non-plain runs
        cols = {f: [r.get(f, "none") if f in ARCH_FIELDS else r[f] for r in rows]
                for f in fields if f != "diverged_epoch"}
        div = [-1 if r["diverged_epoch"] is None else int(r["diverged_epoch"]) for r in rows]
        finals = {c: np.array([np.nan if r["final_" + c] is None else r["final_" + c]
                               for r in rows], np.float32) for c in CURVES}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where} has a malformed run entry ({type(e).__name__}: {e})") from None
    # Floats are float32 in a run table (and written by their float32 repr).
    arrays = {f: np.asarray(v, np.float32) if any(isinstance(x, float) for x in v)
              else np.asarray(v) for f, v in cols.items()}
    return RunTable(**arrays, diverged_epoch=np.asarray(div, np.int32)), finals


def load_summary(out_dir: str | os.PathLike[str]) -> Summary:
    """Read and check ``OUT/summary.json`` of a finished sweep, without ``history.npz``.

    Checks the format and version, the config and grid, that the runs cover the grid, and
    that the ``groups`` equal what :func:`summary_groups` computes from the ``runs`` (so a
    truncated, edited or mixed-up file is refused).

    Raises:
        ValueError: one line naming the file and the problem.
    """
    path = Path(out_dir) / SUMMARY_NAME
    summary = read_summary(path)
    where = f"results: {str(path)!r}"
    config, grid = summary_grid(summary, where)
    rows = summary["runs"]
    n_grid = (len(grid.seeds) * len(grid.depths) * len(grid.widths) * max(1, len(grid.lrs))
              * max(1, len(grid.weight_vars)) * max(1, len(grid.bias_vars))
              * max(1, len(grid.residuals)) * max(1, len(grid.norms)))
    if len(rows) != n_grid or summary.get("n_runs") != n_grid:
        raise ValueError(f"{where} lists {len(rows)} runs; its grid has {n_grid}")
    runs, finals = _runs_from_rows(rows, where)
    check_in_grid(where, SweepResult(config, grid.seeds, grid.depths, grid.widths, grid.lrs,
                                     runs, history={}, weight_vars=grid.weight_vars,
                                     bias_vars=grid.bias_vars, residuals=grid.residuals,
                                     norms=grid.norms))
    try:
        groups = jsonable(summary_groups(runs, finals, float(summary["learn_threshold"])))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where} has an invalid learn_threshold ({e})") from None
    if summary.get("groups") != groups:
        raise ValueError(f"{where} has groups that do not match its runs (edited or corrupt?)")
    return summary
