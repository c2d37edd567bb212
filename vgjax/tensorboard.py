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
    hparams/final_train_loss ... hparams/diverged_epoch               (HParams metrics)
    <tag>/minus_std  <tag>/plus_std                                   (mean dirs only)

so the tag filter ``dense_3/`` shows one layer and ``kernel_0_grad`` shows the gradients.
Steps are 1-based epochs. Non-finite values, layers a run lacks and epochs after a run
diverged are never written.

HParams: every directory records activation, init, output_init, optimizer, lr, depth, width,
seed (a string; ``"mean"`` in mean dirs), batch_size and epochs in its own event file (not in
the extra sub-directory tensorboardX's ``add_hparams`` makes). Its metrics are the
``hparams/final_*`` scalars, the curves' values at the last epoch (absent where not finite,
e.g. for a diverged run), and ``hparams/diverged_epoch``, written only for diverged runs.

Why not ``SummaryWriter``: it writes one event per scalar, pickles each through a
multiprocessing queue and checksums every byte in pure Python (no native crc32c here): about
12k scalars/s, so a 600-run x 500-epoch sweep (11M scalars) would take 15 minutes. Here each
epoch's scalars share one ``Event``, events are encoded straight into protobuf wire format
(checked against TensorBoard's reader in the tests), and the CRC-32C of all records of a
batch of runs is computed at once with NumPy. tensorboardX still builds the hparams and
custom-scalar summaries. Each run directory gets exactly one event file, written whole and
renamed into place, replacing any event file from an earlier write.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tensorboardX.crc32c import CRC_TABLE
from tensorboardX.summary import custom_scalars, hparams

from vgjax.config import describe
from vgjax.result import CURVES, LAYER_STATS, TEST_LAYER_STATS, SweepResult

CURVE_TAGS = {c: f"epoch/{c}" for c in CURVES}
LAYER_TAGS = {
    "grad_mean_abs": "kernel_0_grad/mean_abs",
    "grad_norm": "kernel_0_grad/norm",
    "weight_l1": "kernel_0/l1",
    "test_grad_mean_abs": "kernel_0_grad_test/mean_abs",
    "test_grad_norm": "kernel_0_grad_test/norm",
}
HIST_TAGS = {"grad_hist": "kernel_0_grad", "weight_hist": "kernel_0"}
METRIC_TAGS = {c: f"hparams/final_{c}" for c in CURVES}
DIVERGED_TAG = "hparams/diverged_epoch"
LOWER, UPPER = "/minus_std", "/plus_std"

_BATCH = 16  # runs whose records share one vectorised CRC pass (bounded memory, few loops)
_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack
_F64 = struct.Struct("<d").pack
_HISTO_HEAD = struct.Struct("<BdBdBdBdBd").pack


def _four_zero_bytes(reg: np.ndarray) -> np.ndarray:
    table = np.array(CRC_TABLE, dtype=np.uint32)
    for _ in range(4):
        reg = table[reg & 0xFF] ^ (reg >> 8)
    return reg


# Four bytes per step ("slicing"): XOR a little-endian word into the register, then the
# register after four zero bytes is LOW[reg & 0xFFFF] ^ HIGH[reg >> 16] (CRC is linear).
_CRC_LOW = _four_zero_bytes(np.arange(1 << 16, dtype=np.uint32))
_CRC_HIGH = _four_zero_bytes(np.arange(1 << 16, dtype=np.uint32) << 16)


# ----------------------------------------------------------------------------- names


def _sanitise(text: str) -> str:
    """Keep ``[A-Za-z0-9_.-]``; no ``..``, no leading dot or dash, never empty."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", str(text))
    return re.sub(r"\.{2,}", ".", text).lstrip(".-") or "run"


def _lr_text(lr: float) -> str:
    # Learning rates are float32 in the run table: the shortest text that round-trips a
    # float32 gives distinct names for distinct lrs and reads "0.01", not "0.00999999977".
    return np.format_float_positional(np.float32(lr), trim="-")


def _pad(values: np.ndarray) -> int:
    return max(2, len(str(int(np.max(values)))))


def run_dir_names(result: SweepResult, prefix: str) -> list[str]:
    """Relative run directory of every run, in run-axis order (length R).

    ``prefix_dDD_wWW[_lrX][_wvX][_bvX]/seedSS``, e.g. ``relu_he_d05_w05/seed03``; the lr,
    sigma_w^2 (wv) and sigma_b^2 (bv) appear only when the sweep has that axis
    (``result.lrs``, ``result.weight_vars``, ``result.bias_vars`` non-empty). Numbers are
    zero-padded to the widest value in the sweep.
    """
    t = result.runs
    head = _sanitise(prefix) + "_" if prefix else ""
    pd, pw, ps = _pad(t.depth), _pad(t.width), _pad(t.seed)
    names = []
    for seed, depth, width, lr, wv, bv in zip(t.seed.tolist(), t.depth.tolist(),
                                              t.width.tolist(), t.lr.tolist(),
                                              t.weight_var.tolist(), t.bias_var.tolist()):
        config = f"{head}d{depth:0{pd}d}_w{width:0{pw}d}"
        for tag, axis, value in (("lr", result.lrs, lr), ("wv", result.weight_vars, wv),
                                 ("bv", result.bias_vars, bv)):
            if axis:
                config += f"_{tag}" + _sanitise(_lr_text(value))
        names.append(f"{config}/seed{seed:0{ps}d}")
    if len(set(names)) != len(names):
        raise ValueError("run table has duplicate (seed, depth, width, lr, weight_var, "
                         "bias_var) rows")
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


# ---------------------------------------------------------------- protobuf wire format
# Field numbers from tensorboard's event.proto / summary.proto. Every field number is < 16,
# so a field key is one byte: (number << 3) | wire type.


def _varint(n: int) -> bytes:
    if n < 0x80:  # fast paths: nearly every length and step here fits in one or two bytes
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field: string, sub-message or packed array."""
    return bytes([field << 3 | 2]) + _varint(len(payload)) + payload


def _event(wall: float, step: int, summary: bytes) -> bytes:
    # Event: wall_time = 1 (double), step = 2 (varint), summary = 5.
    return b"\x09" + _F64(wall) + b"\x10" + _varint(step) + _ld(5, summary)


def _version_event(wall: float) -> bytes:
    # Event.file_version = 3, first in every file; with version 2 TensorBoard purges data only
    # on restart markers, never because a step repeats.
    return b"\x09" + _F64(wall) + _ld(3, b"brain.Event:2")


def _scalar_events(wall: float, tags: list[str], values: np.ndarray,
                   first_step: int = 1) -> list[tuple[int, bytes]]:
    """(step, event) per row of ``values`` [E, T] with one Summary of that row's finite values.

    Row ``e`` gets step ``first_step + e``. Each Summary.Value is ``tag = 1, simple_value = 2``:
    the tag bytes are laid out once for all rows, only the float bytes differ.
    """
    blocks = [_ld(1, _ld(1, t.encode()) + b"\x15" + bytes(4)) for t in tags]
    ends = np.cumsum([len(b) for b in blocks])
    starts = (ends - np.array([len(b) for b in blocks])).tolist()
    rows = np.tile(np.frombuffer(b"".join(blocks), np.uint8), (len(values), 1))
    floats = values.astype("<f4").view(np.uint8).reshape(len(values), len(tags), 4)
    rows[:, ends[:, None] - 4 + np.arange(4)] = floats
    ok = np.isfinite(values)
    full, some = ok.all(axis=1).tolist(), ok.any(axis=1).tolist()
    ends = ends.tolist()
    out = []
    for e, row in enumerate(rows):
        if full[e]:
            body = row.tobytes()
        elif some[e]:
            body = b"".join(row[starts[j]:ends[j]].tobytes() for j in np.flatnonzero(ok[e]))
        else:
            continue
        out.append((first_step + e, _event(wall, first_step + e, body)))
    return out


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
        tags = [_ld(1, f"{name}/{suffix}".encode()) for _, name in layers]
        for k, j in zip(*(a.tolist() for a in np.nonzero(keep))):
            (mn, mx, total, total_sq), a, b = stats[k][j], lo[k][j], hi[k][j]
            # HistogramProto: min 1, max 2, num 3, sum 4, sum_squares 5 (doubles), then
            # packed doubles bucket_limit 6 and bucket 7; Summary.Value: tag 1, histo 5.
            histo = (_HISTO_HEAD(0x09, mn, 0x11, mx, 0x19, num[k][j], 0x21, total, 0x29,
                                 total_sq)
                     + _ld(6, right[a:b].tobytes()) + _ld(7, counts[k, j, a:b].tobytes()))
            epoch = int(epochs[k])
            out.append((epoch, _event(wall, epoch, _ld(1, tags[j] + _ld(5, histo)))))
    return out


# ---------------------------------------------------------------------------- records


def _crc_block(chunks: list[bytes]) -> np.ndarray:
    """CRC-32C of byte strings of similar length, four bytes of all strings per step.

    Strings are right-aligned in a zero-padded matrix: from a zero register leading zero
    bytes change nothing, and starting from 0xFFFFFFFF equals starting from 0 with the first
    four bytes inverted (every string here is longer than four bytes).
    """
    n = len(chunks)
    width = -(-max(map(len, chunks)) // 4) * 4
    buf = bytearray().join([b for c in chunks for b in (bytes(width - len(c)), c)])
    mat = np.frombuffer(buf, np.uint8).reshape(n, width)
    first = width - np.fromiter(map(len, chunks), np.int64, n)
    mat[np.arange(n)[:, None], first[:, None] + np.arange(4)] ^= 0xFF
    crc = np.zeros(n, np.uint32)
    low = np.empty(n, np.uint32)
    for word in mat.view("<u4").T:
        crc ^= word
        np.bitwise_and(crc, 0xFFFF, out=low)
        crc >>= 16
        np.take(_CRC_HIGH, crc, out=crc)
        crc ^= _CRC_LOW.take(low)
    return crc ^ np.uint32(0xFFFFFFFF)


def _masked_crc32c(chunks: list[bytes]) -> list[int]:
    """TFRecord's masked CRC-32C of every chunk, grouped by length to keep padding small."""
    lens = np.fromiter(map(len, chunks), np.int64, len(chunks))
    order = np.argsort(lens, kind="stable")
    sorted_lens = lens[order]
    crc = np.empty(len(chunks), np.uint32)
    start = 0
    while start < len(order):
        limit = sorted_lens[start] * 1.25 + 64
        rows = max(64, (1 << 24) // int(limit))  # about 16 MB of padded matrix at most
        stop = min(int(np.searchsorted(sorted_lens, limit, side="right")), start + rows)
        idx = order[start:stop]
        crc[idx] = _crc_block([chunks[i] for i in idx])
        start = stop
    return (((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)).tolist()


def _write_files(dirs: list[Path], event_lists: list[list[bytes]]) -> None:
    """Write each run's events as one TFRecord event file in its directory."""
    events = [e for evs in event_lists for e in evs]
    heads = [_U64(len(e)) for e in events]
    crcs = _masked_crc32c(heads + events)
    n, i = len(events), 0
    host = _sanitise(socket.gethostname())
    for path, evs in zip(dirs, event_lists):
        parts = []
        for e in evs:
            parts += (heads[i], _U32(crcs[i]), e, _U32(crcs[n + i]))
            i += 1
        _replace_event_file(path, b"".join(parts), host)


def _replace_event_file(path: Path, data: bytes, host: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    old = list(path.glob("*tfevents*"))
    final = path / f"events.out.tfevents.{int(time.time())}.{host}"
    tmp = path / ".vgjax-events.partial"  # no "tfevents" in the name: TensorBoard skips it
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    for p in old:
        if p != final:
            p.unlink()


# ------------------------------------------------------------------------- run events


def _layer_stats(result: SweepResult) -> list[str]:
    return [s for s in LAYER_STATS + TEST_LAYER_STATS if s in result.history]


def _run_series(result: SweepResult, r: int) -> tuple[list[str], np.ndarray]:
    """Scalar tags of run ``r`` and their values [E, T]; NaN after the diverged epoch."""
    h = result.history
    layers = _layers(int(result.runs.depth[r]), result.n_layers)
    index = [i for i, _ in layers]
    tags = [CURVE_TAGS[c] for c in CURVES]
    cols = [np.stack([h[c][r] for c in CURVES], axis=1)]
    for stat in _layer_stats(result):
        tags += [f"{name}/{LAYER_TAGS[stat]}" for _, name in layers]
        cols.append(h[stat][r][:, index])
    values = np.concatenate(cols, axis=1).astype(np.float32)
    diverged = int(result.runs.diverged_epoch[r])
    if diverged >= 0:
        values[diverged:] = np.nan
    return tags, values


def _hparams(result: SweepResult, r: int, seed: str) -> dict:
    c, t = result.config, result.runs
    return {
        "activation": describe(c.activation), "init": c.init,
        "output_init": c.resolved_output_init, "optimizer": describe(c.optimizer),
        "lr": float(t.lr[r]), "depth": int(t.depth[r]), "width": int(t.width[r]), "seed": seed,
        "batch_size": c.batch_size, "epochs": c.epochs, "data": c.data_name,
        "weight_var": float(t.weight_var[r]), "bias_var": float(t.bias_var[r]),
    }


def _assemble(wall: float, hp: dict, head: list[bytes], timeline: list[tuple[int, bytes]],
              metrics: dict[str, float]) -> list[bytes]:
    """Version, hparams start, ``head`` summaries, the timeline in step order, metrics, end.

    Metrics are scalars at the last written step, under the tags the experiment names.
    """
    exp, ssi, sei = hparams(hp, {tag: 0.0 for tag in [*METRIC_TAGS.values(), DIVERGED_TAG]})
    timeline = sorted(timeline, key=lambda item: item[0])  # stable: scalars before histograms
    last = timeline[-1][0] if timeline else 0
    events = [_version_event(wall), _event(wall, 0, exp.SerializeToString()),
              _event(wall, 0, ssi.SerializeToString())]
    events += [_event(wall, 0, s) for s in head]
    events += [e for _, e in timeline]
    if last:
        values = np.array([list(metrics.values())], np.float64)
        events += [e for _, e in _scalar_events(wall, list(metrics), values, first_step=last)]
    events.append(_event(wall, last, sei.SerializeToString()))
    return events


def _run_events(result: SweepResult, r: int) -> list[bytes]:
    """All events of run ``r``: scalars, histograms, hparams."""
    wall = time.time()
    tags, values = _run_series(result, r)
    diverged = int(result.runs.diverged_epoch[r])
    last = len(values) if diverged < 0 else diverged
    timeline = _scalar_events(wall, tags, values) + _histogram_events(result, r, wall, last)
    metrics = {METRIC_TAGS[c]: float(values[-1, j]) for j, c in enumerate(CURVES)}
    if diverged >= 0:
        metrics[DIVERGED_TAG] = float(diverged)
    seed = str(int(result.runs.seed[r]))
    return _assemble(wall, _hparams(result, r, seed), [], timeline, metrics)


def _seed_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std over axis 0 of the finite entries; NaN where none."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0.0).sum(axis=0) / n
        std = np.sqrt(np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0) / n)
    return mean, std


def _margin_layout(tags: list[str]) -> dict:
    """Custom-scalar margin charts (mean with a -/+ std band) for curves and grad mean_abs."""
    def charts(selected):
        return {t: ["Margin", [t, t + LOWER, t + UPPER]] for t in selected}
    return {
        "epoch: mean -/+ std over seeds": charts(t for t in tags if t.startswith("epoch/")),
        "kernel_0_grad/mean_abs: mean -/+ std over seeds":
            charts(t for t in tags if t.endswith("/kernel_0_grad/mean_abs")),
    }


def _mean_events(result: SweepResult, runs: list[int]) -> list[bytes]:
    """Events of one config's mean dir; ``runs`` are its seeds' run indices."""
    wall = time.time()
    series = [_run_series(result, r) for r in runs]
    tags = series[0][0]
    mean, std = _seed_stats(np.stack([v for _, v in series]).astype(np.float64))
    all_tags = tags + [t + LOWER for t in tags] + [t + UPPER for t in tags]
    timeline = _scalar_events(wall, all_tags, np.concatenate([mean, mean - std, mean + std], 1))
    metrics = {METRIC_TAGS[c]: float(mean[-1, j]) for j, c in enumerate(CURVES)}
    layout = custom_scalars(_margin_layout(tags)).SerializeToString()
    return _assemble(wall, _hparams(result, runs[0], "mean"), [layout], timeline, metrics)


# ------------------------------------------------------------------------------ public


def _write_batches(items: list[tuple[Path, Callable[[], list[bytes]]]],
                   progress: Callable[[int], object] | None) -> list[Path]:
    written = []
    for start in range(0, len(items), _BATCH):
        batch = items[start:start + _BATCH]
        _write_files([d for d, _ in batch], [make() for _, make in batch])
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
    items = [(_run_dir(logdir, names[r]), lambda r=r: _run_events(result, r)) for r in todo]
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
    configs: dict[str, list[int]] = {}
    for r, name in enumerate(run_dir_names(result, prefix)):
        configs.setdefault(name.split("/")[0], []).append(r)
    items = [(_run_dir(logdir, f"{c}/mean"), lambda rs=rs: _mean_events(result, rs))
             for c, rs in configs.items()]
    return _write_batches(items, progress)
