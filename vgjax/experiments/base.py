"""What every experiment is built from: the :class:`Context` a run gets, the
:class:`Experiment` protocol, :class:`Sweep` (an experiment that trains one grid) and
:class:`Study` (one that trains nothing), and the report helpers they share.

Host-side; jax, the training pipeline and matplotlib are imported only when an experiment
runs, so listing experiments and rendering the report stay cheap.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Protocol, Sequence

from vgjax.config import Config, Grid
from vgjax.io.outdir import SUMMARY_NAME
from vgjax.io.store import sanitize_name
from vgjax.io.summary import load_summary
from vgjax.io.tables import TABLES_NAME, read_tables
from vgjax.result import LEARN_THRESHOLD, SweepResult

# Where `vgjax run`/`reproduce` writes each sweep's TensorBoard logs: OUT/tensorboard/NAME/.
TENSORBOARD_ROOT = "tensorboard"


class Context(NamedTuple):
    """What :meth:`Experiment.run` gets.

    out: OUT, the directory every experiment writes into; exp_dir: ``OUT/NAME/``, this
    experiment's own; seeds: the command line's seeds (an experiment may fix its own);
    epochs: overrides the protocol's epochs (None: the protocol's); overwrite: retrain
    instead of resuming; tensorboard: write TensorBoard logs; chunk_size: runs per compiled
    chunk (None: the engine's memory rule); progress: called with the runs finished (see
    :func:`vgjax.run.pipeline.run_sweep`); results: the results of the experiments run before
    this one in the same invocation (those it ``uses`` among them), read from their
    ``OUT/NAME/`` when looked up.
    """

    out: Path
    exp_dir: Path
    seeds: tuple[int, ...]
    epochs: int | None
    overwrite: bool
    tensorboard: bool
    chunk_size: int | None
    progress: Callable[[int], None] | None
    results: Mapping[str, SweepResult]


class Experiment(Protocol):
    """One experiment: the protocol every group's experiments implement.

    name: unique over the catalog (its directory ``OUT/NAME/``); group: its group's name;
    title: one line for ``vgjax list``; reported: what the tutorial or paper reported (shown
    by ``vgjax list``); uses: experiments whose results it reads (run before it);
    figures: the PNG names it draws into ``OUT/NAME/``, in the order the report shows them.
    """

    name: str
    group: str
    title: str
    reported: str
    uses: tuple[str, ...]
    figures: tuple[str, ...]

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs it trains with the command line's ``seeds`` (0 when it trains nothing)."""

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """``ValueError`` (one line) if it cannot run so; called before anything is written."""

    def run(self, ctx: Context) -> list[Path]:
        """Compute and write ``ctx.exp_dir``; the figures (PNG paths) drawn."""

    def section(self, exp_dir: Path) -> list[str]:
        """Its report section's Markdown lines, from the files in ``exp_dir`` alone ([] when
        there is nothing to show)."""


class StoredResults(Mapping[str, SweepResult]):
    """The sweeps ``names`` under ``out`` as a read-only mapping: a result is read from
    ``OUT/NAME/`` (:func:`vgjax.io.history.load_result`) when looked up, never before."""

    def __init__(self, out: Path, names: Sequence[str]):
        self._out, self._names = Path(out), tuple(names)

    def __getitem__(self, name: str) -> SweepResult:
        if name not in self._names:
            raise KeyError(name)
        from vgjax.io.history import load_result
        return load_result(self._out / sanitize_name(name))

    def __contains__(self, name: object) -> bool:   # Mapping's own would read the result
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Sweep:
    """An experiment that trains one grid (one compiled program) and draws from its result.

    config: the protocol; depths, widths, lrs, weight_vars, bias_vars: the grid's axes (an
    empty axis: the config's single value); seeds: fixed seeds of an expensive grid (None:
    the command line's); prefix: TensorBoard run-name prefix. Subclasses draw their figures
    and write their tables in :meth:`draw`.
    """

    name: str
    title: str
    config: Config
    depths: tuple[int, ...] = (5,)
    widths: tuple[int, ...] = (5,)
    prefix: str = ""
    reported: str = "–"
    uses: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    lrs: tuple[float, ...] = ()
    weight_vars: tuple[float, ...] = ()
    bias_vars: tuple[float, ...] = ()
    seeds: tuple[int, ...] | None = None
    group: str = ""

    def grid(self, seeds: tuple[int, ...]) -> Grid:
        """The experiment's grid: its own seeds if it fixes them, else ``seeds``."""
        return Grid(tuple(self.seeds if self.seeds is not None else seeds), self.depths,
                    self.widths, self.lrs, self.weight_vars, self.bias_vars)

    def config_for(self, epochs: int | None) -> Config:
        """The protocol with ``epochs`` overridden (histogram interval clipped to it)."""
        if epochs is None:
            return self.config
        return replace(self.config, epochs=epochs, hist_every=min(self.config.hist_every, epochs))

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        g = self.grid(seeds)
        return (len(g.seeds) * len(g.depths) * len(g.widths) * max(len(g.lrs), 1)
                * max(len(g.weight_vars), 1) * max(len(g.bias_vars), 1))

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        # a Config and a Grid check their fields when built: building them is the check
        self.config_for(epochs)
        self.grid(seeds)

    def run(self, ctx: Context) -> list[Path]:
        """Train the grid into ``ctx.exp_dir`` (resumable), TensorBoard logs under
        ``OUT/tensorboard/NAME/``, then :meth:`draw`."""
        from vgjax.run.pipeline import run_sweep

        logdir = ctx.out / TENSORBOARD_ROOT / sanitize_name(self.name)
        if ctx.overwrite and logdir.exists():
            shutil.rmtree(logdir)
        res = run_sweep(self.config_for(ctx.epochs), self.grid(ctx.seeds), ctx.exp_dir,
                        overwrite=ctx.overwrite, chunk_size=ctx.chunk_size,
                        tensorboard=ctx.tensorboard, prefix=self.prefix, logdir=logdir,
                        learn_threshold=LEARN_THRESHOLD, progress=ctx.progress)
        return self.draw(res.result, ctx)

    def draw(self, res: SweepResult, ctx: Context) -> list[Path]:
        """Figures and tables of the trained ``res`` into ``ctx.exp_dir``; the PNGs drawn."""
        return []

    def section(self, exp_dir: Path) -> list[str]:
        return []


@dataclass(frozen=True)
class Study:
    """An experiment that trains nothing: it computes (at initialisation, or from the results
    it ``uses``) and draws. Subclasses implement :meth:`draw`."""

    name: str
    title: str
    reported: str = "–"
    uses: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    group: str = ""

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        return 0

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        return None

    def run(self, ctx: Context) -> list[Path]:
        ctx.exp_dir.mkdir(parents=True, exist_ok=True)
        return self.draw(ctx)

    def draw(self, ctx: Context) -> list[Path]:
        """Compute and write ``ctx.exp_dir``; the PNGs drawn."""
        return []

    def section(self, exp_dir: Path) -> list[str]:
        return []


# -------------------------------------------------------------------------- report helpers


def summary_of(exp_dir: Path) -> dict[str, Any] | None:
    """``EXP_DIR/summary.json`` checked (:func:`vgjax.io.summary.load_summary`), or None."""
    return load_summary(exp_dir) if (Path(exp_dir) / SUMMARY_NAME).is_file() else None


def tables_of(exp_dir: Path) -> dict[str, Any] | None:
    """``EXP_DIR/tables.json`` (:func:`vgjax.io.tables.read_tables`), or None."""
    return read_tables(Path(exp_dir) / TABLES_NAME)


def present_figures(exp: Experiment, exp_dir: Path) -> list[str]:
    """The figures of ``exp`` that exist in ``exp_dir``, in its order."""
    return [f for f in exp.figures if (Path(exp_dir) / f).is_file()]


def figure_caption(fig: str) -> str:
    """'layer gradients test' for 'layer_gradients_test.png'."""
    return Path(fig).stem.replace("_", " ")


def figure_lines(exp: Experiment, exp_dir: Path) -> list[str]:
    """``![NAME: caption](NAME/FIG)`` and a blank line per figure present (links relative to
    OUT)."""
    return [line for f in present_figures(exp, exp_dir)
            for line in (f"![{exp.name}: {figure_caption(f)}]({sanitize_name(exp.name)}/{f})", "")]


def group_report(heading: str, intro: str, experiments: Sequence[Experiment],
                 out: Path) -> list[str]:
    """A group's part of ``OUT/README.md``: ``heading``, ``intro`` and the section of each
    experiment present in ``out``, in catalog order ([] when none is)."""
    lines = [line for e in experiments for line in e.section(Path(out) / sanitize_name(e.name))]
    return [heading, "", intro, ""] + lines if lines else []
