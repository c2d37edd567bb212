"""The data set: a scatter of the 2-D points coloured by class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure

from vgjax.figures.common import CLASS_COLORS, new_figure, save_png, suptitle


def make_dataset(x: np.ndarray, y: np.ndarray, *, title: str | None = None) -> Figure:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"plot_dataset: expected x [N, 2] and y [N], got {x.shape} and {y.shape}")
    fig, (ax,) = new_figure(1, panel_w=5.0, panel_h=4.8)
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
    suptitle(fig, f"{head} — {x.shape[0]} points")
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
    return save_png(make_dataset(x, y, title=title), path)
