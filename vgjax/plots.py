"""Matplotlib figures of sweep results, made on the host from NumPy arrays (never imports jax).

Every ``plot_*`` function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, no
global state, no display needed), writes it as a PNG *atomically* (a temporary file in the
target directory, then :func:`os.replace`) and returns the :class:`~pathlib.Path` written.
The matching ``_make_*`` functions return the Figure itself, for tests and notebooks.

Shapes follow :mod:`vgjax.result`: runs ``R``, epochs ``E``, layers ``L = D + 1`` (index
``i < D`` is hidden layer ``i + 1``, index ``D`` is the output layer). Statistics over seeds
skip non-finite entries (absent layers, epochs after a run diverged); a curve with no finite
value at all is not drawn, and nothing here raises on NaN data.

Two helpers are meant for reuse elsewhere:

* :func:`group_indices` maps each ``(depth, width, lr)`` config to the indices of its runs;
* :func:`final_metric` gives each run's last finite value of a history curve, stopping before
  the epoch in which the run diverged.
"""

from __future__ import annotations

import io
import os
import textwrap
import uuid
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from vgjax.result import final_metric  # noqa: F401  (public here too)
from vgjax.result import SweepResult

__all__ = [
    "group_indices",
    "final_metric",
    "plot_dataset",
    "plot_learning_curves",
    "plot_layer_gradients",
    "plot_gradient_profile",
    "plot_depth_study",
    "plot_width_depth_heatmap",
    "plot_weight_norms",
    "describe",
]

DPI = 110
MAX_PNG_BYTES = 250_000  # larger PNGs are re-encoded with a 256-colour palette
PANEL_W = 5.2  # inches per side-by-side panel
PANEL_H = 4.0
TRAIN_COLOR = "#1f77b4"
TEST_COLOR = "#d62728"
CLASS_COLORS = ("#1f77b4", "#ff7f0e")
OUTPUT_COLOR = "black"
SERIES_COLORS = tuple(colormaps["tab10"].colors)  # type: ignore[attr-defined]

STAT_LABELS = {
    "grad_mean_abs": "mean |∂L/∂W|",
    "grad_norm": "‖∂L/∂W‖₂",
    "weight_l1": "‖W‖₁ (L1 norm of the kernel)",
    "test_grad_mean_abs": "mean |∂L/∂W| on test data",
    "test_grad_norm": "‖∂L/∂W‖₂ on test data",
}
METRIC_LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_accuracy": "train accuracy",
    "test_accuracy": "test accuracy",
}
_ACT_NAMES = {"relu": "ReLU", "elu": "ELU", "selu": "SELU", "gelu": "GELU", "leaky_relu": "leaky ReLU"}

# One panel entry: a result and the indices of the runs to use (None: all runs).
PanelEntry = Union[SweepResult, tuple]


# --------------------------------------------------------------------------------------------
# Reusable helpers
# --------------------------------------------------------------------------------------------


def group_indices(result: SweepResult) -> dict[tuple[int, int, float], np.ndarray]:
    """Map each ``(depth, width, lr)`` config to the indices of its runs.

    Computed from ``result.runs`` (no assumption about the run order). Keys are
    ``(int, int, float)`` in ascending order; each value is an ascending ``int64`` array of
    run indices (one per seed in a full grid).
    """
    runs = result.runs
    depth = np.asarray(runs.depth).astype(np.int64)
    width = np.asarray(runs.width).astype(np.int64)
    lr = np.asarray(runs.lr).astype(np.float64)
    groups: dict[tuple[int, int, float], list[int]] = {}
    for i, key in enumerate(zip(depth.tolist(), width.tolist(), lr.tolist())):
        groups.setdefault((int(key[0]), int(key[1]), float(key[2])), []).append(i)
    return {k: np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)}


# --------------------------------------------------------------------------------------------
# Internal utilities
# --------------------------------------------------------------------------------------------


def _nan_stats(a: np.ndarray, axis: int = 0) -> dict[str, np.ndarray]:
    """Mean, std (ddof 0), min, max and count of the finite entries along ``axis``; no warnings.

    Where no entry is finite every statistic is NaN and the count is 0.
    """
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    has = n > 0
    safe_n = np.where(has, n, 1)
    z = np.where(ok, a, 0.0)
    mean = z.sum(axis=axis) / safe_n
    dev = np.where(ok, a - np.expand_dims(mean, axis), 0.0)
    std = np.sqrt((dev**2).sum(axis=axis) / safe_n)
    lo = np.where(ok, a, np.inf).min(axis=axis)
    hi = np.where(ok, a, -np.inf).max(axis=axis)
    nan = np.full(mean.shape, np.nan)
    return {
        "mean": np.where(has, mean, nan),
        "std": np.where(has, std, nan),
        "min": np.where(has, lo, nan),
        "max": np.where(has, hi, nan),
        "n": n,
    }


def _quantized_png(data: bytes) -> bytes:
    """Re-encode a PNG with a 256-colour palette (visually the same for line plots, much
    smaller for busy ones)."""
    from PIL import Image  # pillow is a matplotlib dependency

    with Image.open(io.BytesIO(data)) as im:
        q = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    q.save(out, format="png", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def _save(fig: Figure, path: Union[str, os.PathLike]) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically; return the Path.

    A PNG over ``MAX_PNG_BYTES`` is re-encoded with a 256-colour palette. The PNG goes to a
    hidden temporary file in the same directory (created with the usual
    permissions, honouring the umask), which is then renamed over ``path`` with
    :func:`os.replace`; on any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        data = buf.getvalue()
        if len(data) > MAX_PNG_BYTES:
            data = _quantized_png(data)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _new_figure(n_panels: int, *, panel_w: float = PANEL_W, panel_h: float = PANEL_H,
                sharey: bool = False, sharex: bool = False):
    fig = Figure(figsize=(panel_w * n_panels, panel_h), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n_panels, sharey=sharey, sharex=sharex, squeeze=False)[0]
    return fig, list(axes)


def _seed_phrase(counts: Sequence[int]) -> str:
    counts = sorted(set(int(c) for c in counts))
    if not counts:
        return "0 seeds"
    if len(counts) == 1:
        return f"{counts[0]} seed" + ("" if counts[0] == 1 else "s")
    return f"{counts[0]}–{counts[-1]} seeds"


def _n_seeds(result: SweepResult, idx: np.ndarray) -> int:
    return int(np.unique(np.asarray(result.runs.seed)[idx]).size)


def _fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def describe(result: SweepResult) -> str:
    """A short human description of a result, e.g. ``"ReLU / he_uniform, 5 hidden layers × 5
    units, sgd lr 0.01"``; used when no title is given."""
    c = result.config
    act = _ACT_NAMES.get(c.activation, c.activation)
    init = c.init if c.output_init is None else f"{c.init} (output {c.output_init})"
    d = result.depths
    depth = (f"{d[0]} hidden layer" + ("" if d[0] == 1 else "s")) if len(d) == 1 else (
        f"{min(d)}–{max(d)} hidden layers")
    w = result.widths
    width = f"{w[0]} units" if len(w) == 1 else f"{min(w)}–{max(w)} units"
    lrs = sorted(set(float(x) for x in np.asarray(result.runs.lr).tolist())) or [c.lr]
    lr = _fmt_lr(lrs[0]) if len(lrs) == 1 else ", ".join(_fmt_lr(x) for x in lrs)
    return f"{act} / {init}, {depth} × {width}, {c.optimizer} lr {lr}"


def _config_label(key: tuple[int, int, float], vary: tuple[bool, bool, bool]) -> str:
    depth, width, lr = key
    parts = []
    if vary[0]:
        parts.append(f"depth {depth}")
    if vary[1]:
        parts.append(f"width {width}")
    if vary[2]:
        parts.append(f"lr {_fmt_lr(lr)}")
    return ", ".join(parts) if parts else f"depth {depth}, width {width}, lr {_fmt_lr(lr)}"


def _as_indices(runs, n: int) -> np.ndarray:
    """Int index array from ``None`` (all), an int array or a boolean mask of length ``n``."""
    if runs is None:
        return np.arange(n, dtype=np.int64)
    a = np.asarray(runs)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"runs: boolean mask has shape {a.shape}, expected ({n},)")
        a = np.flatnonzero(a)
    a = a.astype(np.int64).reshape(-1)
    if a.size == 0:
        raise ValueError("runs: no runs selected")
    if a.min() < -n or a.max() >= n:
        raise ValueError(f"runs: index out of range for {n} runs")
    return np.where(a < 0, a + n, a)


def _panel_entries(results: Mapping[str, PanelEntry]) -> list[tuple[str, SweepResult, np.ndarray]]:
    if not results:
        raise ValueError("results: give at least one entry {label: (SweepResult, run_indices)}")
    out = []
    for label, entry in results.items():
        if isinstance(entry, SweepResult):
            res, idx = entry, None
        else:
            res, idx = entry
        out.append((str(label), res, _as_indices(idx, len(res.runs))))
    return out


def _check_history(result: SweepResult, name: str, what: str) -> np.ndarray:
    if name not in result.history:
        raise ValueError(f"{what}: history has no {name!r}; available: {sorted(result.history)}")
    return np.asarray(result.history[name])


def _layer_name(i: int, n_layers: int) -> str:
    return "output" if i == n_layers - 1 else f"layer {i + 1}"


def _layer_colors(n_hidden: int) -> list:
    cmap = colormaps["viridis"]
    if n_hidden <= 1:
        return [cmap(0.15)]
    return [cmap(0.9 * k / (n_hidden - 1)) for k in range(n_hidden)]


def _series_colors(n: int) -> list:
    """Distinct colours (tab10) for up to 6 series, else a sequential map (ordered configs)."""
    if n <= 6:
        return [SERIES_COLORS[i] for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(0.92 * i / (n - 1)) for i in range(n)]


def _discrete_colorbar(fig: Figure, ax, colors: list, tick_labels: list[str], label: str):
    """A colorbar with one block per colour (series), labelled with ``tick_labels``
    (thinned to at most ~12 ticks, always keeping the last)."""
    cmap = ListedColormap(colors)
    n = len(colors)
    sm = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) + 0.5, cmap.N), cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, pad=0.02, fraction=0.05, aspect=30)
    step = max(1, int(np.ceil(n / 12)))
    pos = np.arange(1, n + 1)[::-1][::step][::-1]
    cb.set_ticks(pos)
    cb.set_ticklabels([tick_labels[p - 1] for p in pos])
    cb.set_label(label, fontsize="small")
    return cb


def _empty_note(ax) -> None:
    ax.text(0.5, 0.5, "no finite data", transform=ax.transAxes, ha="center", va="center",
            color="0.4")


def _suptitle(fig: Figure, title: str) -> None:
    """Figure title, wrapped to the figure's width (about 11.5 characters per inch)."""
    width = max(30, int(fig.get_figwidth() * 11.5))
    if len(title) > width and " — " in title:
        head, rest = title.split(" — ", 1)
        title = f"{head}\n{rest}"
    lines = []
    for part in title.split("\n"):
        lines.extend(textwrap.wrap(part, width=width, break_on_hyphens=False) or [""])
    fig.suptitle("\n".join(lines), fontsize="medium")


# --------------------------------------------------------------------------------------------
# 1. Dataset
# --------------------------------------------------------------------------------------------


def _make_dataset(x: np.ndarray, y: np.ndarray, *, title: str | None = None) -> Figure:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"plot_dataset: expected x [N, 2] and y [N], got {x.shape} and {y.shape}")
    fig, (ax,) = _new_figure(1, panel_w=5.0, panel_h=4.8)
    for cls in (0, 1):
        m = y == cls
        ax.scatter(x[m, 0], x[m, 1], s=10, alpha=0.75, color=CLASS_COLORS[cls],
                   edgecolors="none", label=f"class {cls} ({int(m.sum())})")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small", framealpha=0.85, markerscale=1.8)
    head = title if title else "dataset"
    _suptitle(fig, f"{head} — {x.shape[0]} points")
    return fig


def plot_dataset(x: np.ndarray, y: np.ndarray, path: Union[str, os.PathLike], *,
                 title: str | None = None) -> Path:
    """Scatter of 2-D points coloured by class.

    Args:
        x: ``[N, 2]`` float points.
        y: ``[N]`` labels in ``{0, 1}``.
        path: PNG file to write.
        title: what the data is (e.g. ``"make_circles, noise 0.1 — training set"``).
    """
    return _save(_make_dataset(x, y, title=title), path)


# --------------------------------------------------------------------------------------------
# 2. Learning curves
# --------------------------------------------------------------------------------------------


def _band(ax, x, stats, color, label, *, alpha=0.18, lw=1.6, ls="-", band=True):
    mean = stats["mean"]
    if not np.isfinite(mean).any():
        return None
    (line,) = ax.plot(x, mean, color=color, lw=lw, ls=ls, label=label)
    if band:
        ax.fill_between(x, mean - stats["std"], mean + stats["std"], color=color, alpha=alpha,
                        lw=0)
    return line


def _make_learning_curves(result: SweepResult, *, title: str | None = None, runs=None) -> Figure:
    for name in ("train_accuracy", "test_accuracy"):
        _check_history(result, name, "plot_learning_curves")
    train = np.asarray(result.history["train_accuracy"])
    test = np.asarray(result.history["test_accuracy"])
    n_epochs = train.shape[1]
    epochs = np.arange(1, n_epochs + 1)
    idx = _as_indices(runs, len(result.runs))
    div = np.asarray(result.runs.diverged_epoch)
    all_groups = group_indices(result)
    groups = {k: np.intersect1d(v, idx) for k, v in all_groups.items()}
    groups = {k: v for k, v in groups.items() if v.size}
    head = title if title else describe(result)
    n_div = int((div[idx] >= 0).sum())
    div_note = f"; {n_div} of {idx.size} runs diverged" if n_div else ""

    if len(groups) == 1:
        (key, g), = groups.items()
        fig, (ax,) = _new_figure(1, panel_w=6.4, panel_h=4.4)
        _band(ax, epochs, _nan_stats(train[g]), TRAIN_COLOR, "train")
        _band(ax, epochs, _nan_stats(test[g]), TEST_COLOR, "test")
        d = div[g]
        d = d[(d >= 1) & (d <= n_epochs)]
        if d.size:
            ax.plot(d, np.zeros_like(d, dtype=float) + 0.02, "x", color="0.3",
                    transform=ax.get_xaxis_transform(), label=f"divergence ({d.size})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on short runs
        ax.set_ylabel("accuracy")
        ax.set_xlim(1, max(n_epochs, 2))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize="small", framealpha=0.85)
        n = _n_seeds(result, g)
        _suptitle(fig, f"{head} — accuracy per epoch, mean ± 1 std over "
                       f"{_seed_phrase([n])}{div_note}")
        return fig

    keys = list(groups)
    vary = tuple(len({k[i] for k in keys}) > 1 for i in range(3))
    with_band = len(keys) <= 6
    fig, axes = _new_figure(2, panel_w=5.6, panel_h=4.4, sharey=True)
    colors = _series_colors(len(keys))
    for ax, arr, name in ((axes[0], train, "train"), (axes[1], test, "test")):
        for key, color in zip(keys, colors):
            _band(ax, epochs, _nan_stats(arr[groups[key]]), color, _config_label(key, vary),
                  band=with_band, alpha=0.12, lw=1.6 if len(keys) <= 8 else 1.1)
        ax.set_title(f"{name} accuracy", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on short runs
        ax.set_xlim(1, max(n_epochs, 2))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    single_axis = [i for i in range(3) if vary[i]]
    if len(keys) > 8 and len(single_axis) == 1:
        # Many configs along one parameter: a discrete colorbar instead of a long legend.
        i = single_axis[0]
        names = ("depth (hidden layers)", "width (units per layer)", "learning rate")
        ticks = [str(k[i]) if i < 2 else _fmt_lr(k[i]) for k in keys]
        _discrete_colorbar(fig, list(axes), colors, ticks, names[i])
    else:
        handles, labels = axes[1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small",
                       framealpha=0.85, ncol=1 if len(handles) <= 16 else 2)
    what = "mean ± 1 std" if with_band else "mean"
    counts = [_n_seeds(result, g) for g in groups.values()]
    _suptitle(fig, f"{head} — accuracy per epoch, {what} over {_seed_phrase(counts)}{div_note}")
    return fig


def plot_learning_curves(result: SweepResult, path: Union[str, os.PathLike], *,
                         title: str | None = None, runs=None) -> Path:
    """Train and test accuracy per epoch: seed mean with a ±1 std band.

    Uses ``history["train_accuracy"]`` and ``["test_accuracy"]``, each ``[R, E]``.

    Args:
        result: the sweep.
        path: PNG file to write.
        title: what the runs are (default: a description made from the config).
        runs: ``[n]`` int run indices (or an ``[R]`` boolean mask) to use; default all.
            When the selected runs hold one ``(depth, width, lr)`` config the figure is one
            panel with a train and a test curve; with several configs it is two panels
            (train | test) with one curve per config (bands only up to 6 configs).

    Epochs after a run diverged are NaN and skipped, so late means are over the surviving
    seeds; divergence epochs are marked with ``x`` on the single-config plot.
    """
    return _save(_make_learning_curves(result, title=title, runs=runs), path)


# --------------------------------------------------------------------------------------------
# 3. / 7. Per-layer statistic over epochs
# --------------------------------------------------------------------------------------------


def _positive(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def _make_layer_stat(results: Mapping[str, PanelEntry], *, stat: str, title: str | None,
                     log: Union[bool, str], what: str, sharey: bool = True) -> Figure:
    entries = _panel_entries(results)
    means = []
    for label, res, idx in entries:
        arr = _check_history(res, stat, what)
        if arr.ndim != 3:
            raise ValueError(f"{what}: {stat!r} has shape {arr.shape}, expected [R, E, L]")
        means.append(_nan_stats(arr[idx], axis=0)["mean"])  # [E, L]
    if log == "auto":
        vals = np.concatenate([_positive(m).ravel() for m in means])
        vals = vals[np.isfinite(vals)]
        log = bool(vals.size) and vals.max() / vals.min() > 30.0
    fig, axes = _new_figure(len(entries), sharey=sharey, panel_w=5.6, panel_h=4.3)
    counts = []
    for ax, (label, res, idx), mean in zip(axes, entries, means):
        n_layers = mean.shape[1]
        epochs = np.arange(1, mean.shape[0] + 1)
        ys = [_positive(mean[:, i]) if log else mean[:, i] for i in range(n_layers)]
        hidden = [i for i in range(n_layers - 1) if np.isfinite(ys[i]).any()]
        colors = dict(zip(hidden, _layer_colors(len(hidden))))
        drawn = []
        for i in hidden:
            drawn += ax.plot(epochs, ys[i], lw=1.4, color=colors[i], label=_layer_name(i, n_layers))
        out = n_layers - 1
        if np.isfinite(ys[out]).any():
            drawn += ax.plot(epochs, ys[out], lw=1.8, ls="--", color=OUTPUT_COLOR, label="output")
        if log:
            ax.set_yscale("log")
        if not drawn:
            _empty_note(ax)
        n = _n_seeds(res, idx)
        counts.append(n)
        ax.set_title(f"{label} ({_seed_phrase([n])})", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5 on short runs
        ax.set_xlim(1, max(len(epochs), 2))
        ax.grid(alpha=0.3, which="major")
        if len(hidden) <= 9:
            if drawn:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                          framealpha=0.85, borderaxespad=0.0)
        else:
            # Too many layers for a legend: a discrete colorbar for the hidden layers.
            _discrete_colorbar(fig, ax, [colors[i] for i in hidden],
                               [str(i + 1) for i in hidden], "hidden layer")
            out_lines = [h for h in drawn if h.get_label() == "output"]
            if out_lines:
                ax.legend(handles=out_lines, loc="best", fontsize="small", framealpha=0.85)
    axes[0].set_ylabel(STAT_LABELS.get(stat, stat) + (" (log)" if log else ""))
    head = f"{title} — " if title else ""
    _suptitle(fig, f"{head}{STAT_LABELS.get(stat, stat)} per layer over epochs, "
                   f"mean over {_seed_phrase(counts)}")
    return fig


def plot_layer_gradients(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                         stat: str = "grad_mean_abs", title: str | None = None) -> Path:
    """Per-layer gradient statistic over epochs, log y axis, one panel per entry.

    Args:
        results: ``{label: (SweepResult, run_indices)}``, one panel each, side by side (e.g.
            ``{"tanh U(0,1)": (res_tanh, idx), "ReLU He": (res_relu, idx)}``). ``run_indices``
            is an int array (or None / a bare SweepResult for all runs).
        path: PNG file to write.
        stat: a per-layer history array ``[R, E, L]`` (``grad_mean_abs``, ``grad_norm``, ...).
        title: what is compared.

    Each line is one layer's seed mean (``[E]``), labelled ``layer 1 … layer D`` and
    ``output``; layers with no finite (or no positive) value are not drawn.
    """
    fig = _make_layer_stat(results, stat=stat, title=title, log=True, what="plot_layer_gradients")
    return _save(fig, path)


def plot_weight_norms(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                      title: str | None = None, log: Union[bool, str] = "auto") -> Path:
    """Weight L1 norm per layer over epochs (``history["weight_l1"]``, ``[R, E, L]``).

    Same layout as :func:`plot_layer_gradients`: one panel per entry, one line per layer
    (seed mean). Panels have their own y ranges. ``log="auto"`` uses a log y axis when the
    values span more than a factor 30.
    """
    fig = _make_layer_stat(results, stat="weight_l1", title=title, log=log,
                           what="plot_weight_norms", sharey=False)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 4. Gradient profile across layers
# --------------------------------------------------------------------------------------------


def _clip_epochs(epochs: Sequence[int], n_epochs: int) -> list[int]:
    out = sorted({int(min(max(int(e), 1), n_epochs)) for e in epochs})
    return out


def _make_gradient_profile(results: Mapping[str, PanelEntry], *, epochs=(1, 10, 100, 500),
                           title: str | None = None, stat: str = "grad_mean_abs") -> Figure:
    entries = _panel_entries(results)
    if len(tuple(epochs)) == 0:
        raise ValueError("plot_gradient_profile: epochs is empty")
    fig, axes = _new_figure(len(entries), sharey=True, panel_h=4.3)
    cmap = colormaps["plasma"]
    counts = []
    for ax, (label, res, idx) in zip(axes, entries):
        arr = _check_history(res, stat, "plot_gradient_profile")
        mean = _nan_stats(arr[idx], axis=0)["mean"]  # [E, L]
        n_epochs, n_layers = mean.shape
        chosen = _clip_epochs(epochs, n_epochs)
        present = np.isfinite(mean).any(axis=0)
        hidden = [i for i in range(n_layers - 1) if present[i]]
        layer_ids = hidden + [n_layers - 1]
        xpos = np.arange(1, len(layer_ids) + 1)
        drawn = 0
        for k, ep in enumerate(chosen):
            color = cmap(0.85 * k / max(len(chosen) - 1, 1))
            y = _positive(mean[ep - 1, layer_ids])
            if not np.isfinite(y).any():
                continue
            ax.plot(xpos, y, marker="o", ms=4, lw=1.6, color=color, label=f"epoch {ep}")
            drawn += 1
        ax.set_yscale("log")
        ticks = [str(i + 1) for i in hidden] + ["out"]
        step = max(1, int(np.ceil(len(ticks) / 14)))
        ax.set_xticks(xpos[::-1][::step][::-1])
        ax.set_xticklabels(ticks[::-1][::step][::-1])
        ax.set_xlim(0.5, len(layer_ids) + 0.5)
        ax.set_xlabel("layer (1 = next to the input, out = output layer)")
        n = _n_seeds(res, idx)
        counts.append(n)
        ax.set_title(f"{label} ({_seed_phrase([n])})", fontsize="medium")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small", framealpha=0.85, loc="best")
        else:
            _empty_note(ax)
    axes[0].set_ylabel(STAT_LABELS.get(stat, stat) + " (log)")
    head = f"{title} — " if title else ""
    _suptitle(fig, f"{head}gradient profile across layers, "
                   f"mean over {_seed_phrase(counts)}")
    return fig


def plot_gradient_profile(results: Mapping[str, PanelEntry], path: Union[str, os.PathLike], *,
                          epochs: Sequence[int] = (1, 10, 100, 500), title: str | None = None,
                          stat: str = "grad_mean_abs") -> Path:
    """Gradient magnitude across layers at a few epochs: the vanishing pattern at a glance.

    Args:
        results: ``{label: (SweepResult, run_indices)}`` as for :func:`plot_layer_gradients`.
        path: PNG file to write.
        epochs: 1-based epochs to show, one line each; values are clamped to ``1 .. E`` and
            de-duplicated (so ``500`` on a 100-epoch run shows epoch 100).
        title: what is compared.
        stat: per-layer history array ``[R, E, L]``; x is hidden layer 1..D then ``out``
            (only layers that the selected runs have), y is the seed mean, log scale.
    """
    fig = _make_gradient_profile(results, epochs=epochs, title=title, stat=stat)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 5. Depth study
# --------------------------------------------------------------------------------------------


def _depth_series(label: str, res: SweepResult, learn_threshold: float, multi: bool):
    """Yield (line label, depths [n], stats dict per metric, learn share [n], seeds [n])."""
    final_train = final_metric(res, "train_accuracy")
    final_test = final_metric(res, "test_accuracy")
    groups = group_indices(res)
    sub = sorted({(w, lr) for (_, w, lr) in groups})
    for w, lr in sub:
        keys = sorted(k for k in groups if k[1] == w and k[2] == lr)
        depths = np.array([k[0] for k in keys])
        rows = {"train": [], "test": []}
        share, seeds = [], []
        for k in keys:
            g = groups[k]
            rows["train"].append(final_train[g])
            rows["test"].append(final_test[g])
            t = final_test[g]
            share.append(float(np.mean(np.where(np.isfinite(t), t, -np.inf) >= learn_threshold)))
            seeds.append(_n_seeds(res, g))
        stats = {}
        for m, lst in rows.items():
            per = [_nan_stats(v) for v in lst]
            stats[m] = {s: np.array([p[s] for p in per], dtype=float) for s in ("mean", "std", "min", "max")}
        name = label
        if len(sub) > 1 or multi:
            extra = []
            if len({s[0] for s in sub}) > 1:
                extra.append(f"width {w}")
            if len({s[1] for s in sub}) > 1:
                extra.append(f"lr {_fmt_lr(lr)}")
            if extra:
                name = f"{label}, {', '.join(extra)}" if label else ", ".join(extra)
        yield name, depths, stats, np.array(share), seeds


def _make_depth_study(results, *, learn_threshold: float = 0.7, title: str | None = None) -> Figure:
    if isinstance(results, SweepResult):
        results = {"": results}
    if not results:
        raise ValueError("plot_depth_study: give at least one result")
    fig, axes = _new_figure(3, panel_w=4.4, panel_h=4.4, sharex=True)
    ax_train, ax_test, ax_share = axes
    series = []
    for label, res in results.items():
        for name in ("train_accuracy", "test_accuracy"):
            _check_history(res, name, "plot_depth_study")
        series.extend(_depth_series(str(label), res, learn_threshold, len(results) > 1))
    counts = []
    handles = []
    for k, (name, depths, stats, share, seeds) in enumerate(series):
        color = SERIES_COLORS[k % len(SERIES_COLORS)]
        counts.extend(seeds)
        for ax, m in ((ax_train, "train"), (ax_test, "test")):
            st = stats[m]
            ok = np.isfinite(st["mean"])
            if not ok.any():
                continue
            d = depths[ok]
            ax.fill_between(d, st["min"][ok], st["max"][ok], color=color, alpha=0.08, lw=0)
            ax.fill_between(d, (st["mean"] - st["std"])[ok], (st["mean"] + st["std"])[ok],
                            color=color, alpha=0.22, lw=0)
            ax.plot(d, st["mean"][ok], marker="o", ms=3.5, lw=1.6, color=color,
                    label=name or None)
        ax_share.plot(depths, share, marker="o", ms=3.5, lw=1.6, color=color, label=name or None)
        handles.append(Line2D([], [], color=color, marker="o", ms=3.5, lw=1.6, label=name))
    for ax, m in ((ax_train, "train"), (ax_test, "test")):
        ax.set_title(f"final {m} accuracy", fontsize="medium")
        ax.set_ylabel("accuracy")
    ax_test.axhline(learn_threshold, color="0.35", ls=":", lw=1.2)
    ax_share.set_title(f"seeds that learn (final test acc ≥ {learn_threshold:g})",
                       fontsize="medium")
    ax_share.set_ylabel("share of seeds")
    ax_share.set_ylim(-0.04, 1.04)
    ax_share.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    for ax in axes:
        ax.set_xlabel("depth (hidden layers)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    lo = min(0.45, *(np.nanmin(s[2][m]["min"]) for s in series for m in ("train", "test")
                     if np.isfinite(s[2][m]["min"]).any())) if series else 0.45
    for ax in (ax_train, ax_test):
        ax.set_ylim(max(lo - 0.03, -0.02), 1.02)
    # One legend explaining colours and bands.
    named = [h for h in handles if h.get_label()]
    band_handles = [
        Line2D([], [], color="0.4", lw=6, alpha=0.35, label="± 1 std"),
        Line2D([], [], color="0.4", lw=6, alpha=0.12, label="min – max"),
        Line2D([], [], color="0.35", ls=":", lw=1.2, label=f"threshold {learn_threshold:g}"),
    ]
    fig.legend(handles=named + band_handles, loc="outside lower center", fontsize="small",
               ncol=min(len(named) + len(band_handles), 6), frameon=False)
    head = title if title else (describe(next(iter(results.values()))) if len(results) == 1
                                else "depth study")
    _suptitle(fig, f"{head} — final accuracy vs depth, mean ± 1 std over "
                   f"{_seed_phrase(counts)}")
    return fig


def plot_depth_study(results: Union[SweepResult, Mapping[str, SweepResult]],
                     path: Union[str, os.PathLike], *, learn_threshold: float = 0.7,
                     title: str | None = None) -> Path:
    """Final accuracy and share of seeds that learn, against depth.

    Args:
        results: one SweepResult, or ``{label: SweepResult}`` to overlay (e.g. ``{"ReLU He":
            relu_1_25, "tanh U(0,1)": tanh_1_10}``). A result with several widths or learning
            rates gets one line per ``(width, lr)``.
        path: PNG file to write.
        learn_threshold: a seed "learns" when its final test accuracy is ``>=`` this.
        title: what is compared.

    Three panels over depth: final train accuracy and final test accuracy (seed mean line,
    ±1 std band, lighter min–max band) and the share of seeds that learn. "Final" is
    :func:`final_metric`: the last epoch before a run diverged; a run with no such epoch
    counts as not learning and is left out of the accuracy statistics.
    """
    return _save(_make_depth_study(results, learn_threshold=learn_threshold, title=title), path)


# --------------------------------------------------------------------------------------------
# 6. Width x depth heatmap
# --------------------------------------------------------------------------------------------


def _make_heatmap(result: SweepResult, *, metric: str = "test_accuracy",
                  title: str | None = None) -> Figure:
    _check_history(result, metric, "plot_width_depth_heatmap")
    final = final_metric(result, metric)
    if final.ndim != 1:
        raise ValueError(f"plot_width_depth_heatmap: {metric!r} is not an [R, E] curve")
    groups = group_indices(result)
    depths = sorted({k[0] for k in groups})
    widths = sorted({k[1] for k in groups})
    lrs = sorted({k[2] for k in groups})
    grids, counts = [], []
    for lr in lrs:
        g = np.full((len(widths), len(depths)), np.nan)
        for (d, w, l), idx in groups.items():
            if l != lr:
                continue
            g[widths.index(w), depths.index(d)] = _nan_stats(final[idx])["mean"]
            counts.append(_n_seeds(result, idx))
        grids.append(g)
    finite = np.concatenate([g.ravel() for g in grids])
    finite = finite[np.isfinite(finite)]
    if "accuracy" in metric:
        vmin = min(0.5, float(finite.min())) if finite.size else 0.5
        vmax = 1.0
        fmt = "{:.2f}"
    else:
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
        if vmax <= vmin:
            vmax = vmin + 1.0
        fmt = "{:.3g}"
    norm = Normalize(vmin, vmax)
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    panel_w = min(max(2.8 + 0.42 * len(depths), 4.2), 11.0)
    panel_h = min(max(1.8 + 0.36 * len(widths), 3.2), 8.0)
    fig, axes = _new_figure(len(lrs), panel_w=panel_w, panel_h=panel_h, sharey=True)
    cells = len(depths) * len(widths)
    # Font size from the cell size (axes take roughly the panel less ~1.3 in of labels).
    cell_w = max(panel_w - 1.3, 1.0) / len(depths) * 72.0
    cell_h = max(panel_h - 1.3, 1.0) / len(widths) * 72.0
    n_chars = 4 if "accuracy" in metric else 5
    fs = float(np.clip(min(cell_w * 0.8 / (0.6 * n_chars), cell_h * 0.5), 4.5, 9.0))
    im = None
    for ax, lr, g in zip(axes, lrs, grids):
        im = ax.imshow(np.ma.masked_invalid(g), cmap=cmap, norm=norm, origin="lower",
                       aspect="auto", interpolation="nearest")
        for r in range(g.shape[0]):
            for c in range(g.shape[1]):
                v = g[r, c]
                if np.isfinite(v):
                    txt = fmt.format(v)
                    color = "white" if norm(v) < 0.55 else "black"
                else:
                    txt, color = "–", "0.3"
                if cells <= 400:
                    ax.text(c, r, txt, ha="center", va="center", fontsize=fs, color=color)
        step_x = max(1, int(np.ceil(len(depths) / 25)))
        ax.set_xticks(range(0, len(depths), step_x))
        ax.set_xticklabels([str(d) for d in depths][::step_x])
        ax.set_yticks(range(len(widths)))
        ax.set_yticklabels([str(w) for w in widths])
        ax.set_xlabel("depth (hidden layers)")
        if len(lrs) > 1:
            ax.set_title(f"lr {_fmt_lr(lr)}", fontsize="medium")
    axes[0].set_ylabel("width (units per layer)")
    label = METRIC_LABELS.get(metric, metric)
    fig.colorbar(im, ax=axes, label=f"final {label} (seed mean)", shrink=0.95)
    head = title if title else describe(result)
    _suptitle(fig, f"{head} — final {label}, mean over {_seed_phrase(counts)}")
    return fig


def plot_width_depth_heatmap(result: SweepResult, path: Union[str, os.PathLike], *,
                             metric: str = "test_accuracy", title: str | None = None) -> Path:
    """Width × depth heatmap of the seed-mean final value of an ``[R, E]`` curve.

    Rows are widths, columns depths, each cell annotated with its value (``–`` where no run
    has a finite final value); one panel per learning rate, one shared colorbar. "Final" is
    :func:`final_metric`. Accuracy metrics use the colour range ``[min(0.5, lowest), 1]``.
    Cells are annotated only while the grid has at most 400 of them.
    """
    return _save(_make_heatmap(result, metric=metric, title=title), path)
