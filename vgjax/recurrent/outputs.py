"""A trained recurrent grid's TensorBoard event files, and what ``vgjax show DIR`` prints for
a grid directory (from its ``summary.json`` alone).

Layout under ``LOGDIR`` (one event file per run; names sanitised, seeds zero-padded)::

    <config>/seedSS/    one run; config (:func:`config_name`) = cell[_φ][_x<layers>]_
                        <init><scale>[_fb<forget bias>][_bv<bias var>]_T<T>[_clip<c>]

Tags (steps: training steps, 1-based; evaluations at their step, 0 = initialisation)::

    train/loss  train/grad_norm            every step (grad_norm before clipping)
    eval/test_loss                         every evaluation
    eval/lambda1                           every evaluation, per layer
    eval/gate_saturation                   LSTM/GRU only, per layer
    flow/log_norm_first  flow/log_norm_last   ln‖∂ℓ/∂h_t‖ at t = 1 and t = T (example mean),
                                           per layer
    grad/input_kernel  grad/recurrent_kernel  grad/bias   per layer, every evaluation: norms
                         of the gradient of the loss on the flow's test sequences
    flow/log_norm        histogram: ln‖∂ℓ/∂h_t‖ over the run's steps t, every evaluation,
                         per layer
    flow/log_norm_image  image at the last evaluation: one row per evaluation (initialisation
                         at the top), one column per step t, colour = ln‖∂ℓ/∂h_t‖ (viridis,
                         the run's own range; grey past its steps or not finite), per layer

"Per layer": the tag as written is the first layer's (a single-layer run's tags are the ones
of a net without stacking); layer l >= 2 of a stacked run has the same tag with
``/layer<l>`` appended (``flow/log_norm_first/layer3``).

Non-finite scalars are not written (the rule of :func:`vgjax.io.tfevents.scalar_events`).
The file format is :mod:`vgjax.io.tfevents`'s job.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vgjax.io.outdir import SUMMARY_NAME, read_format_summary, summary_format
from vgjax.io.store import sanitize_name
from vgjax.io.tfevents import event, scalar_events, version_event, write_event_files

SUMMARY_FORMAT, SUMMARY_VERSION = "vgjax.recurrent.summary", 1   # grid.write_grid's format
TRAIN_TAGS = ("train/loss", "train/grad_norm")
LAYER_TAGS = ("eval/lambda1", "eval/gate_saturation", "flow/log_norm_first",
              "flow/log_norm_last", "grad/input_kernel", "grad/recurrent_kernel", "grad/bias")
HIST_TAG, IMAGE_TAG = "flow/log_norm", "flow/log_norm_image"
IMAGE_ROW_PX = 8          # pixel rows per evaluation in the image
NO_DATA_RGB = (128, 128, 128)


def config_name(run) -> str:
    """A run's configuration without its seed, as one path component (a RunSpec)."""
    parts = [run.cell] + ([run.activation] if run.cell == "rnn" else [])
    if run.layers != 1:
        parts.append(f"x{run.layers}")
    parts.append(f"{run.init}{run.scale:g}")
    if run.cell == "lstm":
        parts.append(f"fb{run.forget_bias:g}")
    if run.bias_var:
        parts.append(f"bv{run.bias_var:g}")
    parts.append(f"T{run.length}")
    if run.clip_norm is not None:
        parts.append(f"clip{run.clip_norm:g}")
    return sanitize_name("_".join(parts))


def run_dirs(runs) -> list[str]:
    """Each run's ``<config>/seedSS`` (run order)."""
    pad = max(2, len(str(max(r.seed for r in runs))))
    return [f"{config_name(r)}/seed{r.seed:0{pad}d}" for r in runs]


def _last_step_values(log_norm: np.ndarray) -> np.ndarray:
    # [E+1, T_max] -> [E+1]: the value at each row's last finite step (the run's step T).
    finite = np.isfinite(log_norm)
    last = np.where(finite.any(axis=1), finite.shape[1] - 1 - np.argmax(finite[:, ::-1], 1), 0)
    return np.where(finite.any(axis=1), log_norm[np.arange(len(log_norm)), last], np.nan)


def flow_image(log_norm: np.ndarray) -> np.ndarray:
    """RGB uint8 [(E+1)·IMAGE_ROW_PX, T_max, 3] of ``log_norm`` [E+1, T_max] (viridis over
    its finite range; grey where not finite)."""
    from matplotlib import colormaps

    finite = np.isfinite(log_norm)
    lo, hi = (np.min(log_norm[finite]), np.max(log_norm[finite])) if finite.any() else (0, 1)
    scaled = (log_norm - lo) / (hi - lo) if hi > lo else np.zeros_like(log_norm)
    rgb = (colormaps["viridis"](np.where(finite, scaled, 0.0))[..., :3] * 255).astype(np.uint8)
    rgb[~finite] = NO_DATA_RGB
    return np.repeat(rgb, IMAGE_ROW_PX, axis=0)


def _summary_bytes(summary) -> bytes:
    return summary.SerializeToString()


def run_events(result, r: int, wall: float) -> list[bytes]:
    """The events of run ``r`` of a :class:`~vgjax.recurrent.grid.GridResult`, by step."""
    from tensorboardX import summary as tbx

    timeline = scalar_events(wall, list(TRAIN_TAGS),
                             np.stack([result.train_loss[r], result.grad_norm[r]], axis=1))
    tags, columns = ["eval/test_loss"], [result.test_loss[r]]
    images = []
    for layer in range(result.runs[r].layers):
        suffix = layer_suffix(layer)
        log_norm = np.asarray(result.log_norm[r, :, layer], np.float64)   # [E+1, T_max]
        tags += [t + suffix for t in LAYER_TAGS]
        columns += [result.lambda1[r, :, layer], result.saturation[r, :, layer],
                    log_norm[:, 0], _last_step_values(log_norm),
                    result.grad_input_kernel[r, :, layer],
                    result.grad_recurrent_kernel[r, :, layer], result.grad_bias[r, :, layer]]
        for e, step in enumerate(result.eval_steps.tolist()):
            values = log_norm[e][np.isfinite(log_norm[e])]
            if values.size:
                hist = _summary_bytes(tbx.histogram(HIST_TAG + suffix, values, bins="auto"))
                timeline.append((int(step), event(wall, int(step), hist)))
        images.append(_summary_bytes(tbx.image(IMAGE_TAG + suffix, flow_image(log_norm),
                                               dataformats="HWC")))
    evals = np.stack(columns, axis=1).astype(np.float32)
    for e, step in enumerate(result.eval_steps.tolist()):
        timeline += scalar_events(wall, tags, evals[e:e + 1], first_step=int(step))
    last = int(result.eval_steps[-1])
    timeline += [(last, event(wall, last, image)) for image in images]
    return [e for _, e in sorted(timeline, key=lambda item: item[0])]


def layer_suffix(layer: int) -> str:
    """The tag suffix of layer ``layer`` (0: the first, none; else ``/layer<layer + 1>``)."""
    return "" if layer == 0 else f"/layer{layer + 1}"


def write_tensorboard(result, logdir) -> list[Path]:
    """One event file per run under ``logdir`` (layout in the module docstring); the run
    directories written."""
    logdir = Path(logdir)
    wall = time.time()
    dirs = [logdir / name for name in run_dirs(result.runs)]
    write_event_files(dirs, [[version_event(wall)] + run_events(result, r, wall)
                             for r in range(len(dirs))])
    return dirs


# ------------------------------------------------------------------------------ vgjax show


def is_recurrent_dir(out) -> bool:
    """Whether ``OUT/summary.json`` is a recurrent grid's
    (:func:`vgjax.recurrent.grid.write_grid`)."""
    return summary_format(out) == SUMMARY_FORMAT


def read_summary(out) -> dict:
    """``OUT/summary.json`` of a recurrent grid, checked (one-line ``ValueError``)."""
    s = read_format_summary(out, SUMMARY_FORMAT, SUMMARY_VERSION, "a recurrent grid")
    if not isinstance(s.get("runs"), list) or not s["runs"]:
        raise ValueError(f"results: {str(Path(out) / SUMMARY_NAME)!r} lacks a valid 'runs' "
                         "entry")
    return s


CONFIG_KEYS = ("cell", "activation", "layers", "init", "scale", "forget_bias", "bias_var",
               "length", "clip_norm")
DEFAULTS = {"layers": 1}   # fields a summary written before them lacks


def config_rows(summary: dict) -> list[dict]:
    """Per configuration (every run field but the seed), in first-seen order: its fields,
    seeds, the final test losses' mean, std and minimum over finite seeds, the share of
    seeds below the chance loss, and how many ended non-finite."""
    groups: dict[tuple, list[dict]] = {}
    for run in summary["runs"]:
        groups.setdefault(tuple(run.get(k, DEFAULTS.get(k)) for k in CONFIG_KEYS),
                          []).append(run)
    rows = []
    for key, runs in groups.items():
        loss = np.array([np.nan if r["final_test_loss"] is None else r["final_test_loss"]
                         for r in runs], np.float64)
        ok = np.isfinite(loss)
        chance = runs[0]["baseline"]
        rows.append({**dict(zip(CONFIG_KEYS, key)), "label": runs[0]["label"],
                     "seeds": len(runs), "chance": chance,
                     "mean": float(np.mean(loss[ok])) if ok.any() else None,
                     "std": float(np.std(loss[ok])) if ok.any() else None,
                     "min": float(np.min(loss[ok])) if ok.any() else None,
                     "below_chance": float(np.mean(np.where(ok, loss, np.inf) < chance)),
                     "nonfinite": int(np.sum(~ok))})
    return rows


def show(out) -> None:
    """``vgjax show OUT`` for a recurrent grid: one line per configuration with columns
    cell, φ, layers, T, init, scale, clip, seeds, final test loss (seed mean ± std, best),
    chance, share of seeds below chance, non-finite runs."""
    s = read_summary(out)
    p, task = s.get("protocol", {}), s.get("task", {})
    print(f"recurrent grid: task {task.get('name')}, width {p.get('width')}, "
          f"{p.get('steps')} steps, batch {p.get('batch_size')}"
          + (f", {s['settings']['optimizer']} lr {s['settings']['lr']:g}"
             if isinstance(s.get("settings"), dict) else ""))
    print(f"{'cell':<5} {'φ':<6} {'layers':>6} {'T':>5} {'init':<10} {'scale':>6} {'clip':>6} "
          f"{'seeds':>5}  {'final test loss':>19} {'best':>9} {'chance':>7} {'<chance':>7} "
          f"{'NaN':>4}")
    for r in config_rows(s):
        act = r["activation"] if r["cell"] == "rnn" else "-"
        clip = "-" if r["clip_norm"] is None else f"{r['clip_norm']:g}"
        loss = "n/a" if r["mean"] is None else f"{r['mean']:.4g} ± {r['std']:.2g}"
        best = "n/a" if r["min"] is None else f"{r['min']:.4g}"
        print(f"{r['cell']:<5} {act:<6} {r['layers']:>6} {r['length']:>5} {r['init']:<10} "
              f"{r['scale']:>6g} {clip:>6} {r['seeds']:>5}  {loss:>19} {best:>9} {r['chance']:>7.4g} "
              f"{r['below_chance']:>7.0%} {r['nonfinite']:>4}")
    print(f"{len(s['runs'])} runs")
