"""Width x depth heatmap of the seed-mean final value of a curve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib import colormaps
from matplotlib.colors import Normalize

from vgjax.figures.common import (METRIC_LABELS, check_history, describe, config_label, split_key, n_seeds, new_figure, save_png, seed_phrase, suptitle)
from vgjax.result import GROUP_FIELDS, SweepResult, final_metric, group_indices, seed_stats


def _grids(result: SweepResult, final: np.ndarray):
    """(depths, widths, panels, [widths x depths] seed-mean grid per panel, seed counts)."""
    groups = group_indices(result)
    cells = {k: split_key(k, "depth", "width") for k in groups}  # key -> ((d, w), rest)
    depths = sorted({dw[0] for dw, _ in cells.values()})
    widths = sorted({dw[1] for dw, _ in cells.values()})
    panels = sorted({rest for _, rest in cells.values()})  # one per lr (and other fields)
    grids, counts = [], []
    for panel in panels:
        g = np.full((len(widths), len(depths)), np.nan)
        for k, idx in groups.items():
            (d, w), rest = cells[k]
            if rest == panel:
                g[widths.index(w), depths.index(d)] = seed_stats(final[idx])["mean"]
                counts.append(n_seeds(result, idx))
        grids.append(g)
    return depths, widths, panels, grids, counts


def _colour_range(grids: list[np.ndarray], metric: str) -> tuple[float, float, str]:
    """(vmin, vmax, cell format): accuracies on [min(0.5, lowest), 1]."""
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
    return vmin, vmax, fmt


def _annotate(ax, g: np.ndarray, norm: Normalize, fmt: str, fs: float) -> None:
    """Write each cell's value (``–`` where there is none) in a colour that reads on it."""
    for r in range(g.shape[0]):
        for c in range(g.shape[1]):
            v = g[r, c]
            if np.isfinite(v):
                txt, color = fmt.format(v), "white" if norm(v) < 0.55 else "black"
            else:
                txt, color = "–", "0.3"
            ax.text(c, r, txt, ha="center", va="center", fontsize=fs, color=color)


def make_heatmap(result: SweepResult, *, metric: str = "test_accuracy",
                 title: str | None = None) -> Figure:
    """The figure of :func:`plot_width_depth_heatmap`."""
    check_history(result, metric, "plot_width_depth_heatmap")
    final = final_metric(result, metric)
    if final.ndim != 1:
        raise ValueError(f"plot_width_depth_heatmap: {metric!r} is not an [R, E] curve")
    depths, widths, panels, grids, counts = _grids(result, final)
    others = [f for f in GROUP_FIELDS if f not in ("depth", "width")]
    vary = [len({p[j] for p in panels}) > 1 for j in range(len(others))]
    vmin, vmax, fmt = _colour_range(grids, metric)
    norm = Normalize(vmin, vmax)
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    panel_w = min(max(2.8 + 0.42 * len(depths), 4.2), 11.0)
    panel_h = min(max(1.8 + 0.36 * len(widths), 3.2), 8.0)
    fig, axes = new_figure(len(panels), panel_w=panel_w, panel_h=panel_h, sharey=True)
    cells = len(depths) * len(widths)
    # Font size from the cell size (axes take roughly the panel less ~1.3 in of labels).
    cell_w = max(panel_w - 1.3, 1.0) / len(depths) * 72.0
    cell_h = max(panel_h - 1.3, 1.0) / len(widths) * 72.0
    n_chars = 4 if "accuracy" in metric else 5
    fs = float(np.clip(min(cell_w * 0.8 / (0.6 * n_chars), cell_h * 0.5), 4.5, 9.0))
    im = None
    for ax, panel, g in zip(axes, panels, grids):
        im = ax.imshow(np.ma.masked_invalid(g), cmap=cmap, norm=norm, origin="lower",
                       aspect="auto", interpolation="nearest")
        if cells <= 400:
            _annotate(ax, g, norm, fmt, fs)
        step_x = max(1, int(np.ceil(len(depths) / 25)))
        ax.set_xticks(range(0, len(depths), step_x))
        ax.set_xticklabels([str(d) for d in depths][::step_x])
        ax.set_yticks(range(len(widths)))
        ax.set_yticklabels([str(w) for w in widths])
        ax.set_xlabel("depth (hidden layers)")
        if len(panels) > 1:
            ax.set_title(config_label(panel, vary, others), fontsize="medium")
    axes[0].set_ylabel("width (units per layer)")
    label = METRIC_LABELS.get(metric, metric)
    fig.colorbar(im, ax=axes, label=f"final {label} (seed mean)", shrink=0.95)
    head = title if title else describe(result)
    suptitle(fig, f"{head} — final {label}, mean over {seed_phrase(counts)}")
    return fig


def plot_width_depth_heatmap(result: SweepResult, path: Union[str, os.PathLike], *,
                             metric: str = "test_accuracy", title: str | None = None) -> Path:
    """Width × depth heatmap of the seed-mean final value of an ``[R, E]`` curve.

    Rows are widths, columns depths, each cell annotated with its value (``–`` where no run
    has a finite final value); one panel per learning rate, one shared colorbar. "Final" is
    :func:`final_metric`. Accuracy metrics use the colour range ``[min(0.5, lowest), 1]``.
    Cells are annotated only while the grid has at most 400 of them.
    """
    return save_png(make_heatmap(result, metric=metric, title=title), path)
