"""The depth study: final accuracy and the share of seeds that learn, against depth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from vgjax.figures.common import (SERIES_COLORS, check_history, describe, config_label, split_key, n_seeds, new_figure, save_png, seed_phrase, suptitle)
from vgjax.result import (GROUP_FIELDS, LEARN_THRESHOLD, SweepResult, final_metric, group_indices, learns,
                          seed_stats)


def _depth_series(label: str, res: SweepResult, learn_threshold: float, multi: bool):
    """Yield (line label, depths [n], stats dict per metric, learn share [n], seeds [n])."""
    final_train = final_metric(res, "train_accuracy")
    final_test = final_metric(res, "test_accuracy")
    groups = group_indices(res)
    by_rest: dict[tuple, list[tuple]] = {}
    for k in groups:  # one line per config without its depth
        by_rest.setdefault(split_key(k, "depth")[1], []).append(k)
    sub = sorted(by_rest)
    others = [f for f in GROUP_FIELDS if f != "depth"]
    vary = [len({s[j] for s in sub}) > 1 for j in range(len(others))]
    for rest in sub:
        keys = sorted(by_rest[rest], key=lambda k: split_key(k, "depth")[0])
        depths = np.array([split_key(k, "depth")[0][0] for k in keys])
        rows = {"train": [], "test": []}
        share, seeds = [], []
        for k in keys:
            g = groups[k]
            rows["train"].append(final_train[g])
            rows["test"].append(final_test[g])
            share.append(float(np.mean(learns(final_test[g], res.runs.diverged_epoch[g],
                                              learn_threshold))))
            seeds.append(n_seeds(res, g))
        stats = {}
        for m, lst in rows.items():
            per = [seed_stats(v) for v in lst]
            stats[m] = {s: np.array([p[s] for p in per], dtype=float) for s in ("mean", "std", "min", "max")}
        name = label
        if (len(sub) > 1 or multi) and any(vary):
            extra = config_label(rest, vary, others)
            name = f"{label}, {extra}" if label else extra
        yield name, depths, stats, np.array(share), seeds


def make_depth_study(results, *, learn_threshold: float = LEARN_THRESHOLD, title: str | None = None) -> Figure:
    """The depth study: final train and test accuracy against depth (seed mean ± 1 std and
    min–max bands) and the share of seeds that learn, one colour per config.

    ``results``: a :class:`SweepResult` or a dict label -> SweepResult (one series per
    config of each); its ``train_accuracy``/``test_accuracy`` [R, E] give the final values.
    """
    if isinstance(results, SweepResult):
        results = {"": results}
    if not results:
        raise ValueError("plot_depth_study: give at least one result")
    fig, axes = new_figure(3, panel_w=4.4, panel_h=4.4, sharex=True)
    series = []
    for label, res in results.items():
        for name in ("train_accuracy", "test_accuracy"):
            check_history(res, name, "plot_depth_study")
        series.extend(_depth_series(str(label), res, learn_threshold, len(results) > 1))
    counts, handles = _draw_series(axes, series)
    _style_axes(axes, series, learn_threshold)
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
    suptitle(fig, f"{head} — final accuracy vs depth, mean ± 1 std over "
                   f"{seed_phrase(counts)}")
    return fig


def _draw_series(axes, series) -> tuple[list[int], list[Line2D]]:
    """Bands and mean lines of each series on the train/test panels, the learning share on
    the third; returns (every series' seed counts, one legend handle per series)."""
    ax_train, ax_test, ax_share = axes
    counts, handles = [], []
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
    return counts, handles


def _style_axes(axes, series, learn_threshold: float) -> None:
    """Titles, labels, the threshold line and y limits shared by every series."""
    ax_train, ax_test, ax_share = axes
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


def plot_depth_study(results: Union[SweepResult, Mapping[str, SweepResult]],
                     path: Union[str, os.PathLike], *, learn_threshold: float = LEARN_THRESHOLD,
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
    return save_png(make_depth_study(results, learn_threshold=learn_threshold, title=title), path)
