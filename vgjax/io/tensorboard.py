"""Write a finished sweep (host-side NumPy arrays) as TensorBoard event files.

Layout under ``LOGDIR`` (names sanitised, zero-padded so they sort)::

    <prefix>_d05_w05/seed03/       one run: its curves, per-layer scalars and histograms
    <prefix>_d05_w05/mean/         the mean over seeds of that config, with mean -/+ std bands
    <prefix>_d10_w05_lr1/...       the lr is part of the config name when the sweep has an lr axis

Tags (``dense_k`` is the Keras layer name, see :func:`layer_name`)::

    epoch/train_loss  epoch/test_loss  epoch/train_accuracy  epoch/test_accuracy
    dense_k/kernel_0_grad/mean_abs     dense_k/kernel_0_grad/norm     dense_k/kernel_0/l1
    dense_k/kernel_0_grad_test/mean_abs  dense_k/kernel_0_grad_test/norm   (test_gradients only)
    dense_k/kernel_0_grad  dense_k/kernel_0                           (histograms)
    dense_k/signal/q  dense_k/signal/saturation  dense_k/signal/dead   (signal probe, hidden
                                                  layers; step 0 = initialisation)
    signal/jacobian/mean_sq  signal/jacobian/max                      (signal probe: at
    signal/jacobian/log10_sigma (histogram)         histogram epochs and step 0)
    hparams/final_train_loss ... hparams/diverged_epoch               (HParams metrics)
    <tag>/minus_std  <tag>/plus_std                                   (mean dirs only)

so the tag filter ``dense_3/`` shows one layer and ``kernel_0_grad`` shows the gradients.
Steps are 1-based epochs. Non-finite values, layers a run lacks, and the epoch in which a run
diverged and every later one are never written (the rule of :func:`vgjax.result.final_metric`).

HParams: every directory records activation, init, output_init, optimizer, lr, depth, width,
seed (a string; ``"mean"`` in mean dirs), batch_size and epochs in its own event file (not in
the extra sub-directory tensorboardX's ``add_hparams`` makes). Its metrics are the
``hparams/final_*`` scalars — each run's final values (:func:`vgjax.result.final_metric`:
the last epoch before a divergence; absent where there is none), and in mean dirs the seed
mean of those (:func:`vgjax.result.seed_stats`) — and ``hparams/diverged_epoch``, written only
for diverged runs.

The file format (protobuf wire encoding, TFRecord framing, the vectorised CRC, and the atomic
write of each directory's one event file) is :mod:`vgjax.io.tfevents`'s job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tensorboardX.summary import custom_scalars, hparams

from vgjax.config import describe
from vgjax.result import (ARCH_FIELDS, CURVES, INIT_SUFFIX, LAYER_STATS, SIGNAL_JAC_EDGES,
                          TEST_LAYER_STATS, SweepResult, final_values, group_indices, seed_stats,
                          written_fields)
from vgjax.io.store import sanitize_name
from vgjax.io.tfevents import (HISTO_HEAD, counts_histogram, event, ld, scalar_events, version_event,
                            write_event_files)

CURVE_TAGS = {c: f"epoch/{c}" for c in CURVES}
LAYER_TAGS = {
    "grad_mean_abs": "kernel_0_grad/mean_abs",
    "grad_norm": "kernel_0_grad/norm",
    "weight_l1": "kernel_0/l1",
    "test_grad_mean_abs": "kernel_0_grad_test/mean_abs",
    "test_grad_norm": "kernel_0_grad_test/norm",
}
HIST_TAGS = {"grad_hist": "kernel_0_grad", "weight_hist": "kernel_0"}
SIGNAL_TAGS = {"signal_q": "signal/q", "signal_saturation": "signal/saturation",
               "signal_dead": "signal/dead"}
JAC_TAGS = {"signal_jac_mean_sq": "signal/jacobian/mean_sq",
            "signal_jac_max": "signal/jacobian/max"}
JAC_HIST_TAG = "signal/jacobian/log10_sigma"
METRIC_TAGS = {c: f"hparams/final_{c}" for c in CURVES}
DIVERGED_TAG = "hparams/diverged_epoch"
LOWER, UPPER = "/minus_std", "/plus_std"

_BATCH = 16  # runs whose records share one vectorised CRC pass (bounded memory, few loops)

# ----------------------------------------------------------------------------- names


def _lr_text(lr: float) -> str:
    # Learning rates are float32 in the run table: the shortest text that round-trips a
    # float32 gives distinct names for distinct lrs and reads "0.01", not "0.00999999977".
    return np.format_float_positional(np.float32(lr), trim="-")


def _pad(values: np.ndarray) -> int:
    return max(2, len(str(int(np.max(values)))))


def run_dir_names(result: SweepResult, prefix: str) -> list[str]:
    """Relative run directory of every run, in run-axis order (length R).

    ``prefix_dDD_wWW[_lrX][_wvX][_bvX][_resX][_Xnorm]/seedSS``, e.g.
    ``relu_he_d05_w05/seed03``; the lr, sigma_w^2 (wv), sigma_b^2 (bv), residual branch
    (``res1``, ``res0.5``, ``resinv_sqrt_depth``, ``resrezero``, ``resnone``) and
    normalisation (``layernorm``, ``batchnorm``, ``nonenorm``) appear only when the sweep
    has that axis (``result.lrs``, ``result.weight_vars``, ``result.bias_vars``,
    ``result.residuals``, ``result.norms`` non-empty). Numbers are zero-padded to the widest
    value in the sweep.
    """
    t = result.runs
    head = sanitize_name(prefix) + "_" if prefix else ""
    pd, pw, ps = _pad(t.depth), _pad(t.width), _pad(t.seed)
    names = []
    for seed, depth, width, lr, wv, bv, res, norm in zip(
            t.seed.tolist(), t.depth.tolist(), t.width.tolist(), t.lr.tolist(),
            t.weight_var.tolist(), t.bias_var.tolist(), t.residual.tolist(), t.norm.tolist()):
        config = f"{head}d{depth:0{pd}d}_w{width:0{pw}d}"
        for tag, axis, value in (("lr", result.lrs, lr), ("wv", result.weight_vars, wv),
                                 ("bv", result.bias_vars, bv)):
            if axis:
                config += f"_{tag}" + sanitize_name(_lr_text(value))
        if result.residuals:
            config += "_res" + sanitize_name(res)
        if result.norms:
            config += f"_{sanitize_name(norm)}norm"
        names.append(f"{config}/seed{seed:0{ps}d}")
    if len(set(names)) != len(names):
        raise ValueError("run table has duplicate (seed, depth, width, lr, weight_var, "
                         "bias_var, residual, norm) rows")
    return names


def layer_name(i: int, depth: int, n_layers: int) -> str:
    """Keras name of history layer index ``i`` for a run of ``depth`` hidden layers.

    Hidden index ``i < depth`` is ``dense_{i+1}``; the output index ``n_layers - 1`` is
    ``dense_{depth+1}``. Any other index is a layer the run lacks: ``ValueError``.
    """
    if not 1 <= depth < n_layers:
        raise ValueError(f"depth {depth} does not fit n_layers {n_layers}")
    if 0 <= i < depth:
        return f"dense_{i + 1}"
    if i == n_layers - 1:
        return f"dense_{depth + 1}"
    raise ValueError(f"a run of depth {depth} has no layer index {i}")


def _layers(depth: int, n_layers: int) -> list[tuple[int, str]]:
    return [(i, layer_name(i, depth, n_layers)) for i in [*range(depth), n_layers - 1]]


def _run_dir(logdir: Path, name: str) -> Path:
    path = logdir / name
    if not path.resolve().is_relative_to(logdir.resolve()):
        raise ValueError(f"run directory {name!r} would be outside {logdir}")
    return path


def _histogram_events(result: SweepResult, r: int, wall: float,
                      last: int) -> list[tuple[int, bytes]]:
    """(epoch, event) per finite, non-empty kernel histogram of run ``r`` up to epoch ``last``.

    ``bucket_limit`` holds right edges (``hist_edges[1:]``). Empty buckets at both ends are
    dropped, as TensorBoard does on reading (it uses min/max as the outer edges); the kept
    counts still add up to ``num``.
    """
    h = result.history
    epochs = h.get("hist_epochs")
    if epochs is None or epochs.size == 0:
        return []
    right = np.asarray(h["hist_edges"], "<f8")[1:]
    layers = _layers(int(result.runs.depth[r]), result.n_layers)
    index = [i for i, _ in layers]
    in_range = (epochs >= 1) & (epochs <= last)
    out = []
    for arr, suffix in HIST_TAGS.items():
        counts = h[arr][r][:, index]  # [H, P, K] for the P layers the run has
        stats = h[arr + "_stats"][r][:, index].astype(np.float64)
        nonzero = counts > 0
        keep = nonzero.any(-1) & np.isfinite(stats).all(-1) & in_range[:, None]
        lo = nonzero.argmax(-1).tolist()
        hi = (counts.shape[-1] - nonzero[..., ::-1].argmax(-1)).tolist()
        num, stats = counts.sum(-1).astype(float).tolist(), stats.tolist()
        counts = counts.astype("<f8")
        tags = [ld(1, f"{name}/{suffix}".encode()) for _, name in layers]
        for k, j in zip(*(a.tolist() for a in np.nonzero(keep))):
            (mn, mx, total, total_sq), a, b = stats[k][j], lo[k][j], hi[k][j]
            # HistogramProto: min 1, max 2, num 3, sum 4, sum_squares 5 (doubles), then
            # packed doubles bucket_limit 6 and bucket 7; Summary.Value: tag 1, histo 5.
            histo = (HISTO_HEAD(0x09, mn, 0x11, mx, 0x19, num[k][j], 0x21, total, 0x29,
                                 total_sq)
                     + ld(6, right[a:b].tobytes()) + ld(7, counts[k, j, a:b].tobytes()))
            epoch = int(epochs[k])
            out.append((epoch, event(wall, epoch, ld(1, tags[j] + ld(5, histo)))))
    return out


# ------------------------------------------------------------------------- run events


def _layer_stats(result: SweepResult) -> list[str]:
    return [s for s in LAYER_STATS + TEST_LAYER_STATS if s in result.history]


def _run_series(result: SweepResult, r: int) -> tuple[list[str], np.ndarray]:
    """Scalar tags of run ``r`` and their values [E, T]; NaN from the diverged epoch on."""
    h = result.history
    layers = _layers(int(result.runs.depth[r]), result.n_layers)
    index = [i for i, _ in layers]
    tags = [CURVE_TAGS[c] for c in CURVES]
    cols = [np.stack([h[c][r] for c in CURVES], axis=1)]
    for stat in _layer_stats(result):
        tags += [f"{name}/{LAYER_TAGS[stat]}" for _, name in layers]
        cols.append(h[stat][r][:, index])
    for stat in (s for s in SIGNAL_TAGS if s in h):  # hidden layers only
        tags += [f"{name}/{SIGNAL_TAGS[stat]}" for _, name in layers[:-1]]
        cols.append(h[stat][r][:, index[:-1]])
    values = np.concatenate(cols, axis=1).astype(np.float32)
    values[_last_good_epoch(result, r):] = np.nan
    return tags, values


def _signal_events(result: SweepResult, r: int, wall: float,
                   last: int) -> list[tuple[int, bytes]]:
    """The signal probe's events of run ``r`` beyond :func:`_run_series`' per-epoch scalars:
    its values at initialisation (step 0), the Jacobian's scalars and log10 σ histogram at
    histogram epochs up to epoch ``last``, and at step 0. Empty without the probe."""
    h = result.history
    if SIGNAL_JAC_EDGES not in h:
        return []
    layers = _layers(int(result.runs.depth[r]), result.n_layers)[:-1]
    tags, row = [], []
    for stat, tag in SIGNAL_TAGS.items():
        tags += [f"{name}/{tag}" for _, name in layers]
        row += [h[stat + INIT_SUFFIX][r][i] for i, _ in layers]
    tags += list(JAC_TAGS.values())
    row += [h[stat + INIT_SUFFIX][r] for stat in JAC_TAGS]
    out = scalar_events(wall, tags, np.asarray([row], np.float32), first_step=0)
    epochs = np.asarray(h.get("hist_epochs", np.zeros(0, np.int32)))
    counts = [(0, h["signal_jac_log_hist" + INIT_SUFFIX][r])]
    if "signal_jac_mean_sq" in h and epochs.size:
        ok = epochs <= last
        vals = np.stack([h[s][r] for s in JAC_TAGS], axis=1)[ok]
        for epoch, v in zip(epochs[ok].tolist(), vals):  # H <= a few dozen rows
            out += scalar_events(wall, list(JAC_TAGS.values()), v[None], first_step=epoch)
        counts += [(int(e), c) for e, c in zip(epochs[ok], h["signal_jac_log_hist"][r][ok])]
    edges = np.asarray(h[SIGNAL_JAC_EDGES], np.float64)
    tag = ld(1, JAC_HIST_TAG.encode())
    for step, c in counts:
        histo = counts_histogram(edges, c)
        if histo is not None:
            out.append((step, event(wall, step, ld(1, tag + ld(5, histo)))))
    return out


def _last_good_epoch(result: SweepResult, r: int) -> int:
    """The last epoch of run ``r`` with real values: all of them, or the one before the epoch
    in which it diverged (that epoch's numbers are already the broken ones)."""
    diverged = int(result.runs.diverged_epoch[r])
    return result.config.epochs if diverged < 0 else diverged - 1


def _final_metrics(finals: dict[str, np.ndarray], runs: np.ndarray) -> dict[str, float]:
    """``hparams/final_*``: each curve's final value (``finals`` = vgjax.result.final_values
    of the whole result, computed once per write), the seed mean (vgjax.result.seed_stats)
    over ``runs`` when there are several."""
    return {METRIC_TAGS[c]: float(seed_stats(finals[c][runs])["mean"]) for c in CURVES}


def _hparams(result: SweepResult, r: int, seed: str) -> dict:
    c, t = result.config, result.runs
    return {
        "activation": describe(c.activation), "init": c.init,
        "output_init": c.resolved_output_init, "optimizer": describe(c.optimizer),
        "lr": float(t.lr[r]), "depth": int(t.depth[r]), "width": int(t.width[r]), "seed": seed,
        "batch_size": c.batch_size, "epochs": c.epochs, "data": c.data_name,
        "weight_var": float(t.weight_var[r]), "bias_var": float(t.bias_var[r]),
        # the architecture where the sweep has a run other than the plain MLP
        **{f: str(getattr(t, f)[r]) for f in written_fields(t, ARCH_FIELDS)},
    }


def _assemble(wall: float, hp: dict, head: list[bytes], timeline: list[tuple[int, bytes]],
              metrics: dict[str, float]) -> list[bytes]:
    """Version, hparams start, ``head`` summaries, the timeline in step order, metrics, end.

    Metrics are scalars at the last written step, under the tags the experiment names.
    """
    exp, ssi, sei = hparams(hp, {tag: 0.0 for tag in [*METRIC_TAGS.values(), DIVERGED_TAG]})
    timeline = sorted(timeline, key=lambda item: item[0])  # stable: scalars before histograms
    last = timeline[-1][0] if timeline else 0
    events = [version_event(wall), event(wall, 0, exp.SerializeToString()),
              event(wall, 0, ssi.SerializeToString())]
    events += [event(wall, 0, s) for s in head]
    events += [e for _, e in timeline]
    if last:
        values = np.array([list(metrics.values())], np.float64)
        events += [e for _, e in scalar_events(wall, list(metrics), values, first_step=last)]
    events.append(event(wall, last, sei.SerializeToString()))
    return events


def _run_events(result: SweepResult, r: int, finals: dict[str, np.ndarray]) -> list[bytes]:
    """All events of run ``r``: scalars, histograms, hparams."""
    wall = time.time()
    tags, values = _run_series(result, r)
    diverged = int(result.runs.diverged_epoch[r])
    timeline = scalar_events(wall, tags, values) + _histogram_events(
        result, r, wall, _last_good_epoch(result, r)) + _signal_events(
        result, r, wall, _last_good_epoch(result, r))
    metrics = _final_metrics(finals, np.array([r]))
    if diverged >= 0:
        metrics[DIVERGED_TAG] = float(diverged)
    seed = str(int(result.runs.seed[r]))
    return _assemble(wall, _hparams(result, r, seed), [], timeline, metrics)


def _margin_layout(tags: list[str]) -> dict:
    """Custom-scalar margin charts (mean with a -/+ std band) for curves and grad mean_abs."""
    def charts(selected):
        return {t: ["Margin", [t, t + LOWER, t + UPPER]] for t in selected}
    return {
        "epoch: mean -/+ std over seeds": charts(t for t in tags if t.startswith("epoch/")),
        "kernel_0_grad/mean_abs: mean -/+ std over seeds":
            charts(t for t in tags if t.endswith("/kernel_0_grad/mean_abs")),
    }


def _mean_events(result: SweepResult, runs: list[int],
                 finals: dict[str, np.ndarray]) -> list[bytes]:
    """Events of one config's mean dir; ``runs`` are its seeds' run indices."""
    wall = time.time()
    series = [_run_series(result, r) for r in runs]
    tags = series[0][0]
    st = seed_stats(np.stack([v for _, v in series]))
    mean, std = st["mean"], st["std"]
    all_tags = tags + [t + LOWER for t in tags] + [t + UPPER for t in tags]
    timeline = scalar_events(wall, all_tags, np.concatenate([mean, mean - std, mean + std], 1))
    metrics = _final_metrics(finals, np.asarray(runs))
    layout = custom_scalars(_margin_layout(tags)).SerializeToString()
    return _assemble(wall, _hparams(result, runs[0], "mean"), [layout], timeline, metrics)


# ------------------------------------------------------------------------------ public


def _write_batches(items: list[tuple[Path, Callable[[], list[bytes]]]],
                   progress: Callable[[int], object] | None) -> list[Path]:
    written = []
    for start in range(0, len(items), _BATCH):
        batch = items[start:start + _BATCH]
        write_event_files([d for d, _ in batch], [make() for _, make in batch])
        written += [d for d, _ in batch]
        if progress is not None:
            progress(len(batch))
    return written


def write_sweep(result: SweepResult, logdir: str | os.PathLike, prefix: str, *,
                runs: Iterable[int] | None = None, write_means: bool = True,
                progress: Callable[[int], object] | None = None) -> list[Path]:
    """Write one event file per run directory (and per config mean dir) under ``logdir``.

    ``runs``: run indices (into the R axis) to write, default all, so a caller can write
    chunk by chunk (then pass ``write_means=False`` and call :func:`write_means` once).
    ``progress(n)`` is called with the number of directories just written (fits tqdm's
    ``update``); the total is the number of runs plus, with ``write_means``, of configs.
    Returns the directories written, runs first. Rewriting a directory replaces its file.
    """
    logdir = Path(logdir)
    names = run_dir_names(result, prefix)
    todo = range(len(names)) if runs is None else [int(r) for r in runs]
    for r in todo:
        if not 0 <= r < len(names):
            raise ValueError(f"runs: index {r} is out of range 0..{len(names) - 1}")
    finals = final_values(result)
    items = [(_run_dir(logdir, names[r]), lambda r=r: _run_events(result, r, finals))
             for r in todo]
    written = _write_batches(items, progress)
    if write_means:
        written += _write_mean_dirs(result, logdir, prefix, progress)
    return written


def write_means(result: SweepResult, logdir: str | os.PathLike, prefix: str, *,
                progress: Callable[[int], object] | None = None) -> list[Path]:
    """Write only the ``<config>/mean`` dirs: per epoch and tag the mean over the seeds finite
    there (skipped if none), and ``<tag>/minus_std``, ``<tag>/plus_std`` for the band."""
    return _write_mean_dirs(result, Path(logdir), prefix, progress)


def _write_mean_dirs(result: SweepResult, logdir: Path, prefix: str,
                     progress: Callable[[int], object] | None) -> list[Path]:
    names = run_dir_names(result, prefix)
    # The configs are vgjax.result's groups; each must have a directory of its own.
    configs = {names[int(idx[0])].split("/")[0]: idx.tolist()
               for idx in group_indices(result).values()}
    if len(configs) != len(group_indices(result)):
        raise ValueError("run directory names do not tell the configs apart; "
                         "every GROUP_FIELDS entry needs a place in run_dir_names")
    finals = final_values(result)
    items = [(_run_dir(logdir, f"{c}/mean"), lambda rs=rs: _mean_events(result, rs, finals))
             for c, rs in configs.items()]
    return _write_batches(items, progress)
