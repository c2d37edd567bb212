"""Every experiment, as objects: the catalog of the groups in :data:`GROUP_MODULES`.

An experiment is one object that owns its grid or computation, its run, its figures, its
tables and its report section; :mod:`vgjax.reproduce` runs them and :mod:`vgjax.report`
renders them, both by iterating over the objects (no name dispatch).

The experiment protocol (:class:`vgjax.experiments.base.Experiment`)::

    name: str                 unique; its files go to OUT/NAME/
    group: str                its group's GROUP
    title: str                one line, for `vgjax list`
    reported: str             what the tutorial or paper reported (`vgjax list`)
    uses: tuple[str, ...]     experiments whose outputs it reads (run before it)
    figures: tuple[str, ...]  the PNGs it draws into OUT/NAME/, in report order
    n_runs(seeds) -> int      runs it trains (0: none), for the progress bar
    check(seeds, epochs)      ValueError (one line) before anything is written
    run(ctx) -> list[Path]    computes and writes ctx.exp_dir = OUT/NAME/; the PNGs drawn.
                              ctx (base.Context, a NamedTuple): out, exp_dir, seeds, epochs,
                              overwrite, tensorboard, chunk_size, progress, and results (the
                              experiments run before it, its `uses` among them, read from
                              their OUT/NAME/ when looked up)
    section(exp_dir) -> list[str]
                              its report section's Markdown, rendered only from the files in
                              exp_dir (summary.json, tables.json, data.json, PNGs); [] when
                              there is nothing to show

:class:`~vgjax.experiments.base.Sweep` (trains one grid: ``config`` and the grid's axes; a
subclass draws in ``draw(result, ctx)``) and :class:`~vgjax.experiments.base.Study` (trains
nothing; a subclass computes and draws in ``draw(ctx)``) implement everything but the
drawing and the section.

A group is a subpackage exporting ``GROUP`` (its name), ``SOURCE`` (whom ``reported``
quotes), ``EXPERIMENTS`` (a tuple of objects, in the order they run and are reported) and
``render(out) -> list[str]`` (its part of ``OUT/README.md``;
:func:`~vgjax.experiments.base.group_report` gives a heading, an introduction and every
present experiment's section). A new group is one more module in :data:`GROUP_MODULES`.
``tutorial`` is what ``vgjax reproduce`` runs by default; ``vgjax reproduce --group NAME``
runs another.
"""

from __future__ import annotations

from types import ModuleType

from vgjax.config import check_choice
from vgjax.experiments import recurrent, remedies, signal, tutorial
from vgjax.experiments.base import Experiment

GROUP_MODULES: tuple[ModuleType, ...] = (tutorial, signal, remedies, recurrent)
GROUPS = tuple(m.GROUP for m in GROUP_MODULES)
DEFAULT_GROUP = GROUPS[0]


def _catalog() -> dict[str, Experiment]:
    """name -> experiment over every group, checked: unique names, each experiment in its
    module's group, every ``uses`` naming an earlier experiment."""
    catalog: dict[str, Experiment] = {}
    for module in GROUP_MODULES:
        for e in module.EXPERIMENTS:
            if e.name in catalog or e.group != module.GROUP:
                raise ValueError(f"experiment: {e.name!r} is defined twice or outside its "
                                 f"group; allowed: unique names, group {module.GROUP!r}")
            missing = [u for u in e.uses if u not in catalog]
            if missing:
                raise ValueError(f"experiment: {e.name!r} uses {missing[0]!r}, which is not "
                                 "defined before it")
            catalog[e.name] = e
    return catalog


EXPERIMENTS: dict[str, Experiment] = _catalog()


def group_module(group: str) -> ModuleType:
    """The module of ``group`` (one of :data:`GROUPS`)."""
    check_choice("group", group, GROUPS)
    return GROUP_MODULES[GROUPS.index(group)]


def in_group(group: str) -> list[str]:
    """Names of the experiments of ``group`` (one of :data:`GROUPS`, or ``"all"``)."""
    check_choice("group", group, GROUPS + ("all",))
    return [n for n, e in EXPERIMENTS.items() if group in ("all", e.group)]


def get(name: str) -> Experiment:
    """The experiment called ``name``; ``ValueError`` with a suggestion otherwise."""
    check_choice("experiment", name, tuple(EXPERIMENTS))
    return EXPERIMENTS[name]


def dependencies(names: list[str]) -> list[str]:
    """``names`` plus the experiments they read, in an order where each comes after those."""
    order: list[str] = []
    for name in names:
        for dep in get(name).uses:
            if dep not in order:
                order.append(dep)
        if name not in order:
            order.append(name)
    return order
