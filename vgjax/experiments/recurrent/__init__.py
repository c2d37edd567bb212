"""The ``recurrent`` group: gradient flow through time and sequence-length studies of tanh
RNNs, IRNNs, LSTMs and GRUs (:mod:`vgjax.recurrent`).

Each experiment is an object with ``name``, ``group``, ``title``, ``uses``, ``run(ctx) ->
list[Path]`` (writes ``ctx.out/NAME/`` : ``data.json``, ``tables.json``, figures) and
``section(exp_dir) -> list[str]`` (Markdown lines rendered only from those files).
:class:`Context` is the minimal context ``run`` needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from vgjax.experiments.recurrent.gradient_flow import GradientFlow
from vgjax.experiments.recurrent.length import Length

GROUP = "recurrent"


class Context(NamedTuple):
    """What an experiment's ``run`` needs: the output root and a progress logger."""

    out: Path
    log: Callable[[str], None] = print


EXPERIMENTS = (GradientFlow(), Length())
"""The group's experiments, cheapest first."""

__all__ = ["Context", "EXPERIMENTS", "GROUP", "GradientFlow", "Length"]
