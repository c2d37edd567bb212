"""What every figure shares: sizes, colours, labels, titles, run selection and the PNG
writer (through vgjax.io.store's atomic writer). Nothing here draws a figure kind."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from vgjax.result import GROUP_FIELDS, SweepResult
from vgjax.io.store import atomic_write_bytes

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
AXIS_LABELS = {"depth": "depth (hidden layers)", "width": "width (units per layer)",
               "lr": "learning rate"}
METRIC_LABELS = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_accuracy": "train accuracy",
    "test_accuracy": "test accuracy",
}
ACT_NAMES = {"relu": "ReLU", "elu": "ELU", "selu": "SELU", "gelu": "GELU", "leaky_relu": "leaky ReLU"}

# One panel entry: a result and the indices of the runs to use (None: all runs).
PanelEntry = Union[SweepResult, tuple]



def quantized_png(data: bytes) -> bytes:
    """Re-encode a PNG with a 256-colour palette (visually the same for line plots, much
    smaller for busy ones)."""
    from PIL import Image  # pillow is a matplotlib dependency

    with Image.open(io.BytesIO(data)) as im:
        q = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    q.save(out, format="png", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data



def save_png(fig: Figure, path: Union[str, os.PathLike]) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (:func:`vgjax.io.store.atomic_write_bytes`).

    A PNG over ``MAX_PNG_BYTES`` is re-encoded with a 256-colour palette. The parent
    directory is created if needed. Returns the Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = buf.getvalue()
    if len(data) > MAX_PNG_BYTES:
        data = quantized_png(data)
    atomic_write_bytes(path, data)
    return path


def new_figure(n_panels: int, *, panel_w: float = PANEL_W, panel_h: float = PANEL_H,
                sharey: bool = False, sharex: bool = False):
    fig = Figure(figsize=(panel_w * n_panels, panel_h), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n_panels, sharey=sharey, sharex=sharex, squeeze=False)[0]
    return fig, list(axes)


def seed_phrase(counts: Sequence[int]) -> str:
    counts = sorted(set(int(c) for c in counts))
    if not counts:
        return "0 seeds"
    if len(counts) == 1:
        return f"{counts[0]} seed" + ("" if counts[0] == 1 else "s")
    return f"{counts[0]}–{counts[-1]} seeds"


def n_seeds(result: SweepResult, idx: np.ndarray) -> int:
    return int(np.unique(np.asarray(result.runs.seed)[idx]).size)


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def describe(result: SweepResult) -> str:
    """A short human description of a result, e.g. ``"ReLU / he_uniform, 5 hidden layers × 5
    units, sgd lr 0.01"``; used when no title is given."""
    c = result.config
    act = ACT_NAMES.get(c.activation, c.activation)
    init = c.init if c.output_init is None else f"{c.init} (output {c.output_init})"
    d = result.depths
    depth = (f"{d[0]} hidden layer" + ("" if d[0] == 1 else "s")) if len(d) == 1 else (
        f"{min(d)}–{max(d)} hidden layers")
    w = result.widths
    width = f"{w[0]} units" if len(w) == 1 else f"{min(w)}–{max(w)} units"
    lrs = sorted(set(float(x) for x in np.asarray(result.runs.lr).tolist())) or [c.lr]
    lr = fmt_lr(lrs[0]) if len(lrs) == 1 else ", ".join(fmt_lr(x) for x in lrs)
    return f"{act} / {init}, {depth} × {width}, {c.optimizer} lr {lr}"


def fmt_value(value) -> str:
    """A config value as a label: floats as ``%g`` (lrs, variances), the rest as text."""
    return fmt_lr(value) if isinstance(value, float) else str(value)


def config_label(key: tuple, vary: Sequence[bool], fields: Sequence[str] = GROUP_FIELDS) -> str:
    """``"depth 3, lr 0.1"``: the fields of a config key that vary (all when none varies,
    but a plain MLP's architecture fields, which are ``"none"``)."""
    parts = [f"{f} {fmt_value(v)}" for f, v, on in zip(fields, key, vary) if on]
    return ", ".join(parts or [f"{f} {fmt_value(v)}" for f, v in zip(fields, key)
                               if v != "none"])


def split_key(key: tuple, *axes: str) -> tuple[tuple, tuple]:
    """(the values of ``axes``, the values of every other GROUP_FIELDS entry) of a config key."""
    picked = tuple(key[GROUP_FIELDS.index(a)] for a in axes)
    rest = tuple(v for f, v in zip(GROUP_FIELDS, key) if f not in axes)
    return picked, rest


def as_indices(runs, n: int) -> np.ndarray:
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


def panel_entries(results: Mapping[str, PanelEntry]) -> list[tuple[str, SweepResult, np.ndarray]]:
    if not results:
        raise ValueError("results: give at least one entry {label: (SweepResult, run_indices)}")
    out = []
    for label, entry in results.items():
        if isinstance(entry, SweepResult):
            res, idx = entry, None
        else:
            res, idx = entry
        out.append((str(label), res, as_indices(idx, len(res.runs))))
    return out


def check_history(result: SweepResult, name: str, what: str) -> np.ndarray:
    if name not in result.history:
        raise ValueError(f"{what}: history has no {name!r}; available: {sorted(result.history)}")
    return np.asarray(result.history[name])


def layer_name(i: int, n_layers: int) -> str:
    return "output" if i == n_layers - 1 else f"layer {i + 1}"


def layer_colors(n_hidden: int) -> list:
    cmap = colormaps["viridis"]
    if n_hidden <= 1:
        return [cmap(0.15)]
    return [cmap(0.9 * k / (n_hidden - 1)) for k in range(n_hidden)]


def series_colors(n: int) -> list:
    """Distinct colours (tab10) for up to 6 series, else a sequential map (ordered configs)."""
    if n <= 6:
        return [SERIES_COLORS[i] for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(0.92 * i / (n - 1)) for i in range(n)]


def discrete_colorbar(fig: Figure, ax, colors: list, tick_labels: list[str], label: str):
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


def empty_note(ax) -> None:
    ax.text(0.5, 0.5, "no finite data", transform=ax.transAxes, ha="center", va="center",
            color="0.4")


def suptitle(fig: Figure, title: str) -> None:
    """Figure title, wrapped to the figure's width (about 11.5 characters per inch)."""
    width = max(30, int(fig.get_figwidth() * 11.5))
    if len(title) > width and " — " in title:
        head, rest = title.split(" — ", 1)
        title = f"{head}\n{rest}"
    lines = []
    for part in title.split("\n"):
        lines.extend(textwrap.wrap(part, width=width, break_on_hyphens=False) or [""])
    fig.suptitle("\n".join(lines), fontsize="medium")


def positive(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)

