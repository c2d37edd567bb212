"""The signal group's experiments trained with the signal probe (``Config.probes=("signal",)``):
saturated tanh units per layer (two sweeps compared) and dead ReLU units against depth. The
numbers are :mod:`~vgjax.experiments.signal.results`', the figures
:mod:`~vgjax.experiments.signal.figures`', the prose and tables
:mod:`~vgjax.experiments.signal.report`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vgjax.experiments.base import Context, Experiment, Study, Sweep, figure_lines, \
    present_figures, tables_of
from vgjax.experiments.signal.report import dead_relu_section, saturation_section
from vgjax.result import SweepResult


def _probe_section(exp: Experiment, exp_dir: Path,
                   render: Callable[[dict], list[str]]) -> list[str]:
    """``render(tables)`` (its heading first) and the figures; a bare heading when only the
    figures are there, [] when neither is."""
    tables, figs = tables_of(exp_dir), present_figures(exp, exp_dir)
    if tables is None and not figs:
        return []
    head = render(tables)[1:] if tables is not None else [f"### {exp.name}: {exp.title}"]
    return head + [""] + figure_lines(exp, exp_dir)


@dataclass(frozen=True)
class Saturation(Study):
    """Saturated tanh units per layer over epochs of the sweeps it ``uses`` (``labels``: their
    legend and column labels, in ``uses`` order)."""

    figures: tuple[str, ...] = ("saturation.png",)
    labels: tuple[str, ...] = ()
    plot_title: str = ""

    def draw(self, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.figures import plot_saturation
        from vgjax.experiments.signal.results import saturation_tables
        from vgjax.io.tables import write_tables

        pair = {label: ctx.results[name] for label, name in zip(self.labels, self.uses)}
        write_tables(ctx.exp_dir, saturation_tables(pair))
        return [plot_saturation(pair, ctx.exp_dir / self.figures[0],
                                title=f"{self.name}: {self.plot_title}")]

    def section(self, exp_dir: Path) -> list[str]:
        return _probe_section(self, exp_dir, saturation_section)


@dataclass(frozen=True)
class DeadUnits(Sweep):
    """Dead ReLU units per layer against depth, and whether a fully dead layer explains the
    runs that stop learning."""

    figures: tuple[str, ...] = ("dead_units.png",)
    plot_title: str = ""

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        from vgjax.experiments.signal.figures import plot_dead_units
        from vgjax.experiments.signal.results import dead_tables
        from vgjax.io.tables import write_tables

        write_tables(ctx.exp_dir, dead_tables(res))
        return [plot_dead_units(res, ctx.exp_dir / self.figures[0],
                                title=f"{self.name}: {self.plot_title}")]

    def section(self, exp_dir: Path) -> list[str]:
        return _probe_section(self, exp_dir, dead_relu_section)
