"""A watched model's files, as a sweep's: summary.json, history.npz, tensorboard/; resume;
load; ``vgjax show``.

Layout of ``OUT`` (every file written atomically through :mod:`vgjax.io.store`)::

    manifest.json           first: model, paths, settings, grid (what a resume must match)
    chunks/chunk_NNNNN.npz  each trained chunk of runs (a resume skips them)
    summary.json            format "vgjax.watch": runs, groups (per lr), final values, learns,
                            per-path final gradient statistics (seed mean and std)
    history.npz             every history array (:class:`~vgjax.watch.api.WatchResult`), the
                            run table (run_seed, run_lr, run_diverged_epoch) and the path list
                            (``paths_json``: UTF-8 JSON bytes, as npz holds no strings)
    tensorboard/<model>[_lrX]/seedSS/   per run: epoch/* curves, <path>_grad/mean_abs,
                            <path>_grad/norm, <path>/l1, histograms <path>_grad and <path>
    tensorboard/<model>[_lrX]/mean/     seed mean of every scalar, with /minus_std and
                            /plus_std bands (custom-scalar margin charts)

Final values, "learns" and seed statistics are :mod:`vgjax.result`'s definitions.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tensorboardX.summary import custom_scalars

from vgjax.io.chunk_store import ChunkStore
from vgjax.io.outdir import CHUNKS_DIR, HISTORY_NAME, MANIFEST_NAME, SUMMARY_NAME, TENSORBOARD_DIR
from vgjax.io.store import (atomic_file, atomic_write_text, check_array, dumps_json, json_f32,
                            json_float, read_npz, reject_constant, sanitize_name, write_npz)
from vgjax.io.summary import package_versions
from vgjax.io.tfevents import HISTO_HEAD, event, ld, scalar_events, version_event, write_event_files
from vgjax.result import CURVES, LEARN_THRESHOLD, learns, seed_stats
from vgjax.watch import api
from vgjax.watch.show import SUMMARY_FORMAT, SUMMARY_VERSION, read_summary

PATHS_KEY = "paths_json"
RUN_KEYS = ("run_seed", "run_lr", "run_diverged_epoch")
LOWER, UPPER = "/minus_std", "/plus_std"
PATH_TAGS = {"grad_mean_abs": "_grad/mean_abs", "grad_norm": "_grad/norm", "weight_l1": "/l1"}
ACT_TAGS = {"act_grad_mean_abs": "_grad/mean_abs", "act_grad_norm": "_grad/norm"}


# ------------------------------------------------------------------------------ groups


def group_indices(result: api.WatchResult) -> dict[float | None, np.ndarray]:
    """lr (None when the optimizer has its own) -> ascending run indices of its seeds."""
    if not result.lrs:
        return {None: np.arange(len(result.runs))}
    lr = np.asarray(result.runs.lr)
    return {float(v): np.flatnonzero(lr == v) for v in np.unique(lr)}


def _stats(values: np.ndarray) -> dict:
    st = seed_stats(values)
    return {k: json_f32(float(st[k])) for k in ("mean", "std", "min", "max")}


def _path_stats(values: np.ndarray) -> dict:
    st = seed_stats(values)  # [L]
    return {k: [json_f32(float(v)) for v in st[k]] for k in ("mean", "std")}


def build_summary(result: api.WatchResult, *, learn_threshold: float = LEARN_THRESHOLD) -> dict:
    """The content of ``summary.json`` (strict JSON values)."""
    finals = {c: result.final(c) for c in CURVES}
    learned = learns(finals["test_accuracy"], result.runs.diverged_epoch, learn_threshold)
    diverged = result.runs.diverged_epoch >= 0
    runs = []
    for i in range(len(result.runs)):
        row = {"seed": int(result.runs.seed[i]), "lr": json_float(result.runs.lr[i]),
               "diverged": bool(diverged[i]),
               "diverged_epoch": int(result.runs.diverged_epoch[i]) if diverged[i] else None,
               "learns": bool(learned[i])}
        row.update({"final_" + c: json_float(finals[c][i]) for c in CURVES})
        runs.append(row)
    path_finals = {k: result.final(k) for k in (*api.PATH_STATS, *api.ACT_STATS)
                   if k in result.history}
    groups = []
    for lr, sel in group_indices(result).items():
        n, n_learn = int(sel.size), int(learned[sel].sum())
        g = {"lr": None if lr is None else json_float(np.float32(lr)), "n_seeds": n,
             "n_diverged": int(diverged[sel].sum()), "n_learn": n_learn,
             "share_learn": n_learn / n,
             "final_train_accuracy": _stats(finals["train_accuracy"][sel]),
             "final_test_accuracy": _stats(finals["test_accuracy"][sel])}
        g.update({"final_" + k: _path_stats(v[sel]) for k, v in path_finals.items()})
        groups.append(g)
    return json.loads(dumps_json({
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "model": result.model,
        "paths": list(result.paths), "sizes": list(result.sizes),
        "act_paths": list(result.act_paths), "settings": result.settings,
        "grid": {"seeds": [int(s) for s in result.seeds], "lrs": list(result.lrs)},
        "versions": package_versions(), "learn_threshold": float(learn_threshold),
        "n_runs": len(result.runs), "runs": runs, "groups": groups,
        "timing": result.timing}), parse_constant=reject_constant)


# ------------------------------------------------------------------------------ history


def write_history(path: Path, result: api.WatchResult) -> None:
    """``history.npz``: the history arrays, the run table and the path list (atomic)."""
    names = {"paths": list(result.paths), "sizes": list(result.sizes),
             "act_paths": list(result.act_paths)}
    arrays = {**result.history, "run_seed": result.runs.seed, "run_lr": result.runs.lr,
              "run_diverged_epoch": result.runs.diverged_epoch,
              PATHS_KEY: np.frombuffer(json.dumps(names).encode(), np.uint8)}
    checked = {k: check_array(k, v) for k, v in arrays.items()}
    with atomic_file(path) as f:
        write_npz(f, {k: (lambda v=v: [v]) for k, v in checked.items()},
                  dict.fromkeys(checked), compress=True)


def load(out) -> api.WatchResult:
    """The :class:`~vgjax.watch.api.WatchResult` in ``OUT`` (summary.json + history.npz),
    checked to be one run of one model (one-line ``ValueError``)."""
    s = read_summary(out)
    hp = Path(out) / HISTORY_NAME
    arrays = read_npz(hp)
    missing = [k for k in (*RUN_KEYS, PATHS_KEY, *CURVES, *api.PATH_STATS) if k not in arrays]
    if missing:
        raise ValueError(f"results: {str(hp)!r} lacks array(s) {', '.join(missing)}")
    names = json.loads(arrays.pop(PATHS_KEY).tobytes().decode())
    runs = api.WatchRuns(arrays.pop("run_seed"), arrays.pop("run_lr"),
                         arrays.pop("run_diverged_epoch"))
    if names["paths"] != s["paths"] or [r["seed"] for r in s["runs"]] != runs.seed.tolist():
        raise ValueError(f"results: {str(hp)!r} and its summary.json describe different runs")
    return api.WatchResult(model=s["model"], paths=tuple(names["paths"]),
                           sizes=tuple(names["sizes"]), act_paths=tuple(names["act_paths"]),
                           seeds=tuple(s["grid"]["seeds"]), lrs=tuple(s["grid"]["lrs"]),
                           runs=runs, settings=s["settings"], history=arrays,
                           timing=s.get("timing", {}))


# --------------------------------------------------------------------------- tensorboard


def _lr_text(lr: float) -> str:
    return np.format_float_positional(np.float32(lr), trim="-")


def run_dirs(result: api.WatchResult) -> tuple[list[str], dict[str, np.ndarray]]:
    """Each run's directory ``<model>[_lrX]/seedSS`` (run order) and each group's
    ``<model>[_lrX]`` -> its run indices."""
    head = sanitize_name(result.model["name"])
    pad = max(2, len(str(int(np.max(result.runs.seed)))))
    groups = {}
    names = [""] * len(result.runs)
    for lr, sel in group_indices(result).items():
        config = head if lr is None else f"{head}_lr{sanitize_name(_lr_text(lr))}"
        groups[config] = sel
        for i in sel.tolist():
            names[i] = f"{config}/seed{int(result.runs.seed[i]):0{pad}d}"
    return names, groups


def _series(result: api.WatchResult, r: int) -> tuple[list[str], np.ndarray]:
    """Scalar tags of run ``r`` and their values [E, T] (NaN from the diverged epoch on)."""
    h = result.history
    tags = [f"epoch/{c}" for c in CURVES]
    cols = [np.stack([h[c][r] for c in CURVES], axis=1)]
    for stats, paths in ((PATH_TAGS, result.paths), (ACT_TAGS, result.act_paths)):
        for name, suffix in stats.items():
            if name in h:
                tags += [p + suffix for p in paths]
                cols.append(h[name][r])
    values = np.concatenate(cols, axis=1).astype(np.float32)
    d = int(result.runs.diverged_epoch[r])
    if d >= 0:
        values[max(d - 1, 0):] = np.nan
    return tags, values


def _histograms(result: api.WatchResult, r: int, wall: float) -> list[tuple[int, bytes]]:
    """(epoch, event) of every non-empty histogram of run ``r``: right edges
    ``hist_edges[1:]``, empty end buckets dropped, exact min/max/sum/sum of squares."""
    h = result.history
    epochs = h["hist_epochs"]
    right = np.asarray(h["hist_edges"], "<f8")[1:]
    out = []
    for name, paths, suffix in (("grad_hist", result.paths, "_grad"),
                                ("weight_hist", result.paths, ""),
                                ("act_grad_hist", result.act_paths, "_grad")):
        if name not in h:
            continue
        counts, stats = h[name][r], h[name + "_stats"][r].astype(np.float64)  # [H, L, K], [H, L, 4]
        for k, epoch in enumerate(epochs.tolist()):
            for j, path in enumerate(paths):
                c = counts[k, j]
                nz = np.flatnonzero(c > 0)
                if nz.size == 0 or not np.isfinite(stats[k, j]).all():
                    continue
                a, b = int(nz[0]), int(nz[-1]) + 1
                mn, mx, total, total_sq = stats[k, j].tolist()
                histo = (HISTO_HEAD(0x09, mn, 0x11, mx, 0x19, float(c.sum()), 0x21, total,
                                    0x29, total_sq)
                         + ld(6, right[a:b].tobytes()) + ld(7, c[a:b].astype("<f8").tobytes()))
                value = ld(1, ld(1, (path + suffix).encode()) + ld(5, histo))
                out.append((int(epoch), event(wall, int(epoch), value)))
    return out


def _layout(tags: list[str]) -> bytes:
    """Custom-scalar margin charts (mean with the -/+ std band) of the curves and norms."""
    charts = lambda sel: {t: ["Margin", [t, t + LOWER, t + UPPER]] for t in sel}
    return custom_scalars({
        "epoch: mean -/+ std over seeds": charts(t for t in tags if t.startswith("epoch/")),
        "gradient norm: mean -/+ std over seeds": charts(t for t in tags
                                                         if t.endswith("_grad/norm")),
    }).SerializeToString()


def write_tensorboard(result: api.WatchResult, logdir) -> list[Path]:
    """One event file per run directory and per group's ``mean`` directory under
    ``logdir``; returns the directories written."""
    logdir = Path(logdir)
    names, groups = run_dirs(result)
    wall = time.time()
    dirs, files = [], []
    for r, name in enumerate(names):
        tags, values = _series(result, r)
        timeline = sorted(scalar_events(wall, tags, values) + _histograms(result, r, wall),
                          key=lambda item: item[0])
        dirs.append(logdir / name)
        files.append([version_event(wall)] + [e for _, e in timeline])
    for config, sel in groups.items():
        series = [_series(result, r) for r in sel.tolist()]
        tags = series[0][0]
        st = seed_stats(np.stack([v for _, v in series]))
        mean, std = st["mean"], st["std"]
        all_tags = tags + [t + LOWER for t in tags] + [t + UPPER for t in tags]
        timeline = scalar_events(wall, all_tags, np.concatenate([mean, mean - std, mean + std], 1))
        dirs.append(logdir / config / "mean")
        files.append([version_event(wall), event(wall, 0, _layout(tags))]
                     + [e for _, e in timeline])
    write_event_files(dirs, files)
    return dirs


# ------------------------------------------------------------------------------ directory


def write_outputs(result: api.WatchResult, out, *, tensorboard: bool = True) -> dict:
    """Write history.npz, tensorboard/ and (last) summary.json into ``out``; the summary."""
    out = Path(out)
    write_history(out / HISTORY_NAME, result)
    if tensorboard:
        write_tensorboard(result, out / TENSORBOARD_DIR)
    summary = build_summary(result)
    atomic_write_text(out / SUMMARY_NAME, dumps_json(summary))
    return summary


def _claim(out: Path, manifest: dict, overwrite: bool) -> None:
    """Create ``out`` or resume it: refuse a directory holding another run or foreign files
    (unless ``overwrite``, which removes the files this module writes)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; allowed: a directory path")
    mpath = out / MANIFEST_NAME
    if out.is_dir() and any(out.iterdir()):
        old = None
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        if old == manifest:
            return
        if not overwrite:
            what = "another watched run" if old is not None else "files vgjax.watch did not write"
            raise ValueError(f"out: {str(out)!r} holds {what}; pass overwrite=True to replace "
                             "it, or another directory")
        import shutil
        for name in (CHUNKS_DIR, TENSORBOARD_DIR):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in (SUMMARY_NAME, HISTORY_NAME, MANIFEST_NAME):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(mpath, dumps_json(manifest))


def train_into(model, data, out, *, overwrite: bool = False, tensorboard: bool = True,
               **kwargs) -> api.WatchResult:
    """:func:`vgjax.watch.train` into the directory ``out``, chunk by chunk: each trained
    chunk is saved before the next starts, so after an interruption (even ``kill -9``) the
    same call trains only the chunks that are missing and writes the same files."""
    t0 = time.perf_counter()
    prep = api.prepare(model, data, **kwargs)
    out = Path(out)
    _claim(out, api.manifest(prep), overwrite)
    store = ChunkStore(out)
    todo = [c for c in range(api.n_chunks(prep)) if c not in store.done()]
    timing = {"compile_s": 0.0, "train_s": 0.0}
    if todo:
        program = prep.compile()
        timing["compile_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        dev = api.device_data(prep)
        for c in todo:  # npz member names hold no "/": a path's keeps ":" on disk
            arrays = api.run_chunk(prep, program, c, dev)
            store.save(c, {k.replace("/", ":"): v for k, v in arrays.items()})
        timing["train_s"] = time.perf_counter() - t1
    parts = [{k.replace(":", "/"): v for k, v in store.load(c).items()}
             for c in range(api.n_chunks(prep))]
    result = api.assemble(prep, parts, timing)
    t1 = time.perf_counter()
    write_outputs(result, out, tensorboard=tensorboard)
    return dataclasses.replace(result, timing={**timing, "write_s": time.perf_counter() - t1})
