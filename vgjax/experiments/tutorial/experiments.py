"""The tutorial group's kinds of experiment: the data set figure, a sweep drawn as learning
curves, a depth study, the width x depth study, and the per-layer comparisons of two sweeps
(gradients, weight norms). Each owns its figures, its tables and its part of the report
(:mod:`vgjax.experiments.tutorial.report` lays the group's report out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgjax.config import Config
from vgjax.experiments import base
from vgjax.experiments.base import Context, Study, Sweep
from vgjax.experiments.tutorial import report as rep
from vgjax.result import LEARN_THRESHOLD, SweepResult, final_metric, seed_stats


@dataclass(frozen=True)
class Dataset(Study):
    """The two-circles data set, train and test points together."""

    figures: tuple[str, ...] = ("dataset.png",)

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.data import make_data
        from vgjax.figures import plot_dataset

        d = make_data(Config())
        return [plot_dataset(np.concatenate([d.x_train, d.x_test]),
                             np.concatenate([d.y_train, d.y_test]),
                             ctx.exp_dir / self.figures[0],
                             title="dataset: make_circles(noise=0.1, random_state=1) scaled to "
                                   "[-1, 1]")]

    def rows(self, exp_dir: Path) -> list[str]:
        return []


@dataclass(frozen=True)
class Curves(Sweep):
    """One protocol trained over seeds, drawn as learning curves; one row per grid cell in
    the accuracy table."""

    figures: tuple[str, ...] = ("learning_curves.png",)

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        from vgjax.figures import plot_learning_curves
        return [plot_learning_curves(res, ctx.exp_dir / self.figures[0],
                                     title=f"{self.name}: {self.title}")]

    def rows(self, exp_dir: Path) -> list[str]:
        """Its rows of the accuracy table ([] before it has run)."""
        summary = base.summary_of(exp_dir)
        return [] if summary is None else rep.accuracy_rows(self.name, summary,
                                                            self.reported_at)

    def reported_at(self, depth: int) -> str:
        """What the tutorial reported for the row of ``depth``."""
        return self.reported


@dataclass(frozen=True)
class DepthStudy(Curves):
    """A protocol over depths: the share that learns against depth (beside the sweep
    ``compare`` when it ran in the same invocation), and learning curves at ``curve_depths``.

    label: this sweep's legend entry; plot_title: the depth figure's title; units: the
    hidden units' name in the curves' titles; reported_depths: (depth, what the tutorial
    said) for the accuracy table's rows.
    """

    figures: tuple[str, ...] = ("depth_study.png",)
    label: str = ""
    plot_title: str = ""
    curve_depths: tuple[int, ...] = ()
    units: str = ""
    compare: tuple[str, str] | None = None   # (experiment, label)
    reported_depths: tuple[tuple[int, str], ...] = ()

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        from vgjax.figures import plot_depth_study, plot_learning_curves

        study = {self.label: res}
        if self.compare is not None and self.compare[0] in ctx.results:
            study[self.compare[1]] = ctx.results[self.compare[0]]
        figs = [plot_depth_study(study, ctx.exp_dir / self.figures[0],
                                 learn_threshold=LEARN_THRESHOLD,
                                 title=f"{self.name}: {self.plot_title}")]
        for depth in self.curve_depths:
            if depth in res.depths:
                figs.append(plot_learning_curves(
                    res, ctx.exp_dir / f"learning_curves_d{depth}.png",
                    runs=np.flatnonzero(res.runs.depth == depth),
                    title=f"{self.name}: {depth} hidden {self.units} layers"))
        return figs

    def reported_at(self, depth: int) -> str:
        return dict(self.reported_depths).get(depth, "") if self.reported_depths else \
            self.reported


@dataclass(frozen=True)
class Breadth(Sweep):
    """A protocol over widths x depths: a heatmap, a depth study with one line per width and
    its own table of final test accuracy (instead of rows in the accuracy table)."""

    figures: tuple[str, ...] = ("heatmap.png", "depth_study.png")
    plot_title: str = ""
    heading: str = ""   # its report section's heading

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        from vgjax.figures import plot_depth_study, plot_width_depth_heatmap

        heat, depth = self.figures
        return [plot_width_depth_heatmap(res, ctx.exp_dir / heat,
                                         title=f"{self.name}: {self.plot_title}"),
                plot_depth_study(res, ctx.exp_dir / depth, learn_threshold=LEARN_THRESHOLD,
                                 title=f"{self.name}: {self.plot_title}, one line per width")]

    def rows(self, exp_dir: Path) -> list[str]:
        return []

    def section(self, exp_dir: Path) -> list[str]:
        summary = base.summary_of(exp_dir)
        if summary is None:
            return []
        return ["", f"## {self.heading}", "", *rep.breadth_table(summary)]


# ------------------------------------------------------------ two sweeps, layer by layer


def layer_labels(n_layers: int) -> list[str]:
    """'hidden 1', ..., 'output' for ``n_layers`` layers (hidden ones, then the output)."""
    return [f"hidden {i + 1}" for i in range(n_layers - 1)] + ["output"]


def _epoch_mean(res: SweepResult, stat: str) -> np.ndarray:
    """[R, L] each run's mean over epochs of a per-layer statistic (finite epochs only)."""
    return seed_stats(res.history[stat], axis=1)["mean"]


def gradient_tables(results: dict[str, SweepResult]) -> dict[str, Any]:
    """Per layer, seed mean ± std of the epoch-mean |dL/dW| (training steps and test set)
    of each ``{label: result}``; the results have the same layers."""
    columns = []  # a list, not a dict: JSON keys are sorted, the column order is not
    for label, res in results.items():
        for stat, where in (("grad_mean_abs", "steps"), ("test_grad_mean_abs", "test set")):
            st = seed_stats(_epoch_mean(res, stat)) if stat in res.history else None
            columns.append({"label": f"{label}, {where}",
                            "mean": None if st is None else st["mean"],
                            "std": None if st is None else st["std"]})
    return {"layers": layer_labels(next(iter(results.values())).n_layers), "columns": columns}


def weight_tables(results: dict[str, SweepResult]) -> dict[str, Any]:
    """Per layer, seed mean of the kernel L1 after epoch 1 and at the end (the final value:
    the last epoch before a run diverged) of each ``{label: result}``."""
    columns = [{"label": label, "first": seed_stats(res.history["weight_l1"][:, 0])["mean"],
                "last": seed_stats(final_metric(res, "weight_l1"))["mean"]}
               for label, res in results.items()]
    return {"layers": layer_labels(next(iter(results.values())).n_layers), "columns": columns}


@dataclass(frozen=True)
class LayerComparison(Study):
    """Two sweeps (``uses``) compared layer by layer. labels: (figure label, table label)
    of each, in ``uses`` order; depth_note: the figures' title suffix; heading: its report
    section's heading."""

    labels: tuple[tuple[str, str], ...] = ()
    depth_note: str = ""
    heading: str = ""

    def pairs(self, ctx: Context) -> tuple[dict[str, SweepResult], dict[str, SweepResult]]:
        """The sweeps it uses as ``{figure label: result}`` and ``{table label: result}``."""
        results = [ctx.results[name] for name in self.uses]
        return ({lab[0]: r for lab, r in zip(self.labels, results)},
                {lab[1]: r for lab, r in zip(self.labels, results)})

    def rows(self, exp_dir: Path) -> list[str]:
        return []


@dataclass(frozen=True)
class Gradients(LayerComparison):
    """Per-layer gradients of two sweeps: over epochs (training steps and test set) and
    across layers, and their table."""

    figures: tuple[str, ...] = ("layer_gradients.png", "layer_gradients_test.png",
                                "gradient_profile.png")

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.figures import plot_gradient_profile, plot_layer_gradients
        from vgjax.io.tables import write_tables

        (pair, short), out = self.pairs(ctx), ctx.exp_dir
        write_tables(out, gradient_tables(short))
        steps, test, profile = self.figures
        return [plot_layer_gradients(pair, out / steps,
                                     title=f"{self.name}: training steps, {self.depth_note}"),
                plot_layer_gradients(pair, out / test, stat="test_grad_mean_abs",
                                     title=f"{self.name}: on the test set at each epoch's end "
                                           "(as the tutorial's callback logged)"),
                plot_gradient_profile(pair, out / profile,
                                      title=f"{self.name}: {self.depth_note}")]

    def section(self, exp_dir: Path) -> list[str]:
        t = base.tables_of(exp_dir)
        if t is None:
            return []
        return ["", f"## {self.heading}", "",
                f"Tutorial: {self.reported}. 'steps' averages the training minibatch "
                "gradients; 'test set' is the gradient on the test data at each epoch's end, "
                "as the tutorial's Keras callback computed it.", "", *rep.gradient_lines(t)]


@dataclass(frozen=True)
class WeightNorms(LayerComparison):
    """The L1 norm of each layer's kernel over epochs, two sweeps side by side, and its
    table."""

    figures: tuple[str, ...] = ("weight_norms.png",)

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.figures import plot_weight_norms
        from vgjax.io.tables import write_tables

        pair, short = self.pairs(ctx)
        write_tables(ctx.exp_dir, weight_tables(short))
        return [plot_weight_norms(pair, ctx.exp_dir / self.figures[0],
                                  title=f"{self.name}: {self.depth_note}")]

    def section(self, exp_dir: Path) -> list[str]:
        t = base.tables_of(exp_dir)
        if t is None:
            return []
        return ["", f"## {self.heading}", "", *rep.weight_lines(t)]
