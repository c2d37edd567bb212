"""The ``recurrent`` group: gradient flow through time and sequence-length studies of tanh
RNNs, IRNNs, LSTMs and GRUs (:mod:`vgjax.recurrent`).

Each experiment follows the catalog's protocol (:mod:`vgjax.experiments`): ``run(ctx)``
writes ``ctx.exp_dir = OUT/NAME/`` (``data.json``, ``tables.json``, figures) and
``section(exp_dir)`` renders Markdown only from those files; ``vgjax reproduce --group
recurrent`` runs them.
"""

from __future__ import annotations

from pathlib import Path

from vgjax.experiments.base import group_report
from vgjax.experiments.recurrent.clipping import Clipping
from vgjax.experiments.recurrent.gradient_flow import GradientFlow
from vgjax.experiments.recurrent.length import Length

GROUP = "recurrent"
SOURCE = "reference"   # whom `reported` quotes (vgjax list)
HEADING = "## Recurrent nets: gradient flow through time"
INTRO = ("Vanilla (tanh) RNNs, IRNNs, LSTMs and GRUs (`vgjax.recurrent`): the gradient of the "
         "loss with respect to the hidden state at each time step, beside the mean-field "
         "theory, exploding gradients with and without clipping, and the sequence lengths "
         "each cell learns. `vgjax reproduce --group "
         "recurrent` (or `vgjax run NAME`) rebuilds these sections.")

EXPERIMENTS = (GradientFlow(), Clipping(), Length())
"""The group's experiments, cheapest first."""


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md``: its heading, introduction and the section of
    each experiment present in ``out`` ([] when none is)."""
    return group_report(HEADING, INTRO, EXPERIMENTS, out)


__all__ = ["Clipping", "EXPERIMENTS", "GROUP", "GradientFlow", "Length", "render"]
