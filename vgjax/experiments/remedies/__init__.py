"""The ``remedies`` group: the remedies the tutorial names, theory beside measurement.
``random-walk`` and ``batchnorm-explosion`` train nothing (pure JAX at initialisation,
``vmap``/``lax.map`` over seeds); ``architectures`` trains plain, residual and normalised
nets against depth.

Each experiment follows the catalog's experiment protocol: ``name``, ``group``, ``title``,
``reported``, ``uses``, ``figures``, ``n_runs(seeds)``, ``check(seeds, epochs)``,
``run(ctx) -> list[Path]`` (writes ``ctx.exp_dir = OUT/NAME/``: ``data.json``,
``tables.json`` and the PNG figures, and returns the figures) and ``section(exp_dir) ->
list[str]`` (Markdown rendered only from those files). ``vgjax reproduce --group remedies``
(or ``vgjax run random-walk``) runs them. JAX and matplotlib are imported only when one runs
or renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vgjax.experiments.base import Context, group_report

GROUP = "remedies"
SOURCE = "reference"   # whom `reported` quotes (vgjax list)
HEADING = ("## Remedies: random-walk initialisation, BatchNorm and residual "
           "architectures, beside their theory")
INTRO = ("The remedies the tutorial names, at initialisation against their mean-field "
         "theory, and trained against depth. `vgjax reproduce --group remedies` (or `vgjax "
         "run NAME`) rebuilds these sections.")


@dataclass(frozen=True)
class InitStudy:
    """One init-time experiment: a subclass computes its data (:meth:`compute`, JSON-able)
    and draws it (:meth:`draw`: figures and ``tables.json``; :meth:`render`: the report
    section), each with the functions of its own module and of :mod:`.outputs`.

    seeds: the study's own seeds (None: the context's); options: keyword arguments of its
    module's ``compute`` (smaller sizes for a quick look)."""

    name: str
    title: str
    reported: str
    figures: tuple[str, ...]
    seeds: tuple[int, ...] | None = None
    options: tuple[tuple[str, object], ...] = ()
    group: str = GROUP
    uses: tuple[str, ...] = ()

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Training runs: none (everything happens at initialisation)."""
        return 0

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Nothing to refuse: the study fixes its seeds and trains no epochs."""

    def compute(self, seeds: tuple[int, ...]) -> dict:
        """The study's data for ``seeds`` (JSON-able)."""
        raise NotImplementedError

    def draw(self, exp_dir: Path, data: dict) -> list[Path]:
        """The figures and ``tables.json`` of ``data`` in ``exp_dir``; the paths written."""
        raise NotImplementedError

    def render(self, exp_dir: Path) -> list[str]:
        """The report section's Markdown, from ``data.json`` and ``tables.json``."""
        raise NotImplementedError

    def write(self, exp_dir: Path, data: dict) -> list[Path]:
        """``data.json``, then the figures and ``tables.json`` from it; the paths written."""
        return [write_data(exp_dir, data)] + self.draw(exp_dir, data)

    def run(self, ctx: Context) -> list[Path]:
        """Compute and write ``ctx.exp_dir`` (``data.json`` records the seconds the
        computation took); returns the figures drawn."""
        seeds = self.seeds if self.seeds is not None else tuple(ctx.seeds)
        t0 = time.perf_counter()
        data = self.compute(seeds)
        data["seconds"] = time.perf_counter() - t0
        written = self.write(Path(ctx.exp_dir), data)
        return [p for p in written if p.suffix == ".png"]

    def section(self, exp_dir: Path) -> list[str]:
        """The report's Markdown for this study, from the files in ``exp_dir`` ([] when it
        has not run)."""
        if not (Path(exp_dir) / "data.json").is_file():
            return []
        return self.render(Path(exp_dir))


def write_data(exp_dir: Path, data: dict) -> Path:
    """``exp_dir/data.json`` (atomic); its path."""
    from vgjax.io.store import atomic_write_text, dumps_json, jsonable
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir / "data.json"
    atomic_write_text(path, dumps_json(jsonable(data)))
    return path


@dataclass(frozen=True)
class WalkStudy(InitStudy):
    """``random-walk``: :mod:`.random_walk` computes, :mod:`.outputs` draws."""

    def compute(self, seeds: tuple[int, ...]) -> dict:
        from vgjax.experiments.remedies import random_walk
        return random_walk.compute(tuple(seeds), **dict(self.options))

    def draw(self, exp_dir: Path, data: dict) -> list[Path]:
        from vgjax.experiments.remedies import outputs
        return outputs.write_walk(exp_dir, data)

    def render(self, exp_dir: Path) -> list[str]:
        from vgjax.experiments.remedies import outputs
        return outputs.walk_section(exp_dir)


@dataclass(frozen=True)
class BatchNormStudy(InitStudy):
    """``batchnorm-explosion``: :mod:`.batchnorm` computes, :mod:`.outputs` draws."""

    def compute(self, seeds: tuple[int, ...]) -> dict:
        from vgjax.experiments.remedies import batchnorm
        return batchnorm.compute(tuple(seeds), **dict(self.options))

    def draw(self, exp_dir: Path, data: dict) -> list[Path]:
        from vgjax.experiments.remedies import outputs
        return outputs.write_bn(exp_dir, data)

    def render(self, exp_dir: Path) -> list[str]:
        from vgjax.experiments.remedies import outputs
        return outputs.bn_section(exp_dir)


@dataclass(frozen=True)
class ArchitectureStudy:
    """``architectures``: trains one sweep per (family, architecture) of
    :mod:`.architectures` (an architecture is a Config field, so a sweep each) into
    ``OUT/architectures/sweeps/``, then writes ``data.json``, ``tables.json`` and the
    figures (:mod:`.outputs`).

    seeds: the study's own seeds (None: the context's); options: keyword arguments of
    :func:`.architectures.train_all` (depths, width, families, architectures: smaller
    sizes for a quick look)."""

    name: str
    title: str
    reported: str
    figures: tuple[str, ...]
    seeds: tuple[int, ...] | None = None
    options: tuple[tuple[str, object], ...] = ()
    group: str = GROUP
    uses: tuple[str, ...] = ()

    def _sizes(self) -> dict:
        from vgjax.experiments.remedies import architectures as arch
        sizes = {"depths": arch.DEPTHS, "width": arch.WIDTH, "families": arch.FAMILIES,
                 "architectures": arch.ARCHITECTURES}
        return sizes | dict(self.options)

    def _seeds(self, seeds: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.seeds if self.seeds is not None else seeds)

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs trained: seeds x depths per sweep, a sweep per (family, architecture)."""
        s = self._sizes()
        return (len(self._seeds(seeds)) * len(s["depths"]) * len(s["families"])
                * len(s["architectures"]))

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Every sweep's Config and Grid, built (they check themselves)."""
        from vgjax.config import Grid
        from vgjax.experiments.remedies import architectures as arch
        s = self._sizes()
        Grid(self._seeds(seeds), tuple(s["depths"]), (s["width"],))
        for family in s["families"]:
            for a in s["architectures"]:
                arch.sweep_config(family, a, epochs or arch.EPOCHS)

    def run(self, ctx: Context) -> list[Path]:
        """Train (resumable), then write ``ctx.exp_dir``; ``data.json`` records the seconds
        the whole study and each sweep took. Returns the figures drawn."""
        from vgjax.experiments.base import TENSORBOARD_ROOT
        from vgjax.experiments.remedies import architectures as arch
        t0 = time.perf_counter()
        data = arch.train_all(Path(ctx.exp_dir), seeds=self._seeds(ctx.seeds),
                              epochs=ctx.epochs or arch.EPOCHS, overwrite=ctx.overwrite,
                              chunk_size=ctx.chunk_size, tensorboard=ctx.tensorboard,
                              logdir=Path(ctx.out) / TENSORBOARD_ROOT / self.name,
                              progress=ctx.progress, **dict(self.options))
        data["seconds"] = time.perf_counter() - t0
        return [p for p in self.write(Path(ctx.exp_dir), data) if p.suffix == ".png"]

    def write(self, exp_dir: Path, data: dict) -> list[Path]:
        """``data.json``, then the figures and ``tables.json`` from it; the paths written."""
        from vgjax.experiments.remedies import outputs
        return [write_data(exp_dir, data)] + outputs.write_architectures(exp_dir, data)

    def section(self, exp_dir: Path) -> list[str]:
        """The report section, from ``data.json`` and ``tables.json`` ([] before a run)."""
        if not (Path(exp_dir) / "data.json").is_file():
            return []
        from vgjax.experiments.remedies import outputs
        return outputs.architectures_section(Path(exp_dir))


EXPERIMENTS: tuple[InitStudy | ArchitectureStudy, ...] = (
    WalkStudy("random-walk", "ln‖δ_l‖ at random-walk initialisation against its theory, "
              "linear and ReLU nets, widths 10/30/100, depth 200",
              reported="Sussillo & Abbott 2014: an unbiased walk, variance ~ depth/(2N)",
              figures=("walk.png", "variance.png"), seeds=tuple(range(1000))),
    BatchNormStudy("batchnorm-explosion", "Per-layer gradient growth at initialisation in "
                   "BatchNorm nets against Yang et al.'s rates, batch sizes 4-512",
                   reported="Yang et al. 2019: π/(π−1) (ReLU), (B−2)/(B−3) (linear)",
                   figures=("growth.png", "profiles.png"), seeds=tuple(range(4))),
    ArchitectureStudy("architectures", "Share that learns and per-layer gradients against "
                      "depth: plain, residual (α = 1, 1/√L, ReZero), LayerNorm, BatchNorm, "
                      "BatchNorm + residual; tanh U(0,1) and ReLU/He nets",
                      reported="Yang & Schoenholz 2017, Yang et al. 2019, Bachlechner et al. "
                      "2020: skips and ReZero train deep nets, BatchNorm alone does not",
                      figures=("learn.png", "profiles.png"), seeds=tuple(range(6))),
)


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md``: its heading, introduction and the section of
    each experiment present in ``out`` ([] when none is)."""
    return group_report(HEADING, INTRO, EXPERIMENTS, out)
