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
class TrainingStudy:
    """An experiment that trains several sweeps of seeds x depths (one per setting that is a
    Config field, not a per-run axis) into ``OUT/NAME/sweeps/``, then writes ``data.json``,
    ``tables.json`` and the figures (:func:`.outputs.write_architectures`). A subclass
    gives its sizes, its sweeps' configs, its training and its report section.

    seeds: the study's own seeds (None: the context's); options: keyword arguments of its
    module's ``train_all`` (depths, width, ...: smaller sizes for a quick look)."""

    name: str
    title: str
    reported: str
    figures: tuple[str, ...]
    seeds: tuple[int, ...] | None = None
    options: tuple[tuple[str, object], ...] = ()
    group: str = GROUP
    uses: tuple[str, ...] = ()

    def depths_width(self) -> tuple[tuple[int, ...], int]:
        """The depths and the width of every sweep."""
        raise NotImplementedError

    def configs(self, epochs: int | None) -> list:
        """Every sweep's Config (``epochs``: None for the study's own budget)."""
        raise NotImplementedError

    def train(self, out: Path, seeds: tuple[int, ...], epochs: int | None, **how) -> dict:
        """Train every sweep into ``out`` and return the data (JSON-able)."""
        raise NotImplementedError

    def render(self, exp_dir: Path) -> list[str]:
        """The report section's Markdown, from ``data.json`` and ``tables.json``."""
        raise NotImplementedError

    def _seeds(self, seeds: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(self.seeds if self.seeds is not None else seeds)

    def n_runs(self, seeds: tuple[int, ...]) -> int:
        """Runs trained: seeds x depths per sweep."""
        return len(self._seeds(seeds)) * len(self.depths_width()[0]) * len(self.configs(None))

    def check(self, seeds: tuple[int, ...], epochs: int | None) -> None:
        """Every sweep's Config and Grid, built (they check themselves)."""
        from vgjax.config import Grid
        depths, width = self.depths_width()
        Grid(self._seeds(seeds), tuple(depths), (width,))
        self.configs(epochs)

    def run(self, ctx: Context) -> list[Path]:
        """Train (resumable), then write ``ctx.exp_dir``; ``data.json`` records the seconds
        the whole study and each sweep took. Returns the figures drawn."""
        from vgjax.experiments.base import TENSORBOARD_ROOT
        t0 = time.perf_counter()
        data = self.train(Path(ctx.exp_dir), self._seeds(ctx.seeds), ctx.epochs,
                          overwrite=ctx.overwrite, chunk_size=ctx.chunk_size,
                          tensorboard=ctx.tensorboard,
                          logdir=Path(ctx.out) / TENSORBOARD_ROOT / self.name,
                          progress=ctx.progress)
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
        return self.render(Path(exp_dir))


@dataclass(frozen=True)
class ArchitectureStudy(TrainingStudy):
    """``architectures``: a sweep per (family, architecture) of :mod:`.architectures`."""

    def _opts(self) -> dict:
        from vgjax.experiments.remedies import architectures as arch
        return {"depths": arch.DEPTHS, "width": arch.WIDTH, "families": arch.FAMILIES,
                "architectures": arch.ARCHITECTURES} | dict(self.options)

    def depths_width(self) -> tuple[tuple[int, ...], int]:
        o = self._opts()
        return tuple(o["depths"]), o["width"]

    def configs(self, epochs: int | None) -> list:
        from vgjax.experiments.remedies import architectures as arch
        o = self._opts()
        return [arch.sweep_config(f, a, epochs or arch.EPOCHS)
                for f in o["families"] for a in o["architectures"]]

    def train(self, out: Path, seeds: tuple[int, ...], epochs: int | None, **how) -> dict:
        from vgjax.experiments.remedies import architectures as arch
        return arch.train_all(out, seeds=seeds, epochs=epochs or arch.EPOCHS, **how,
                              **dict(self.options))

    def render(self, exp_dir: Path) -> list[str]:
        from vgjax.experiments.remedies import outputs
        return outputs.architectures_section(exp_dir)


@dataclass(frozen=True)
class WalkTrainingStudy(TrainingStudy):
    """``random-walk-training``: a sweep per (activation, initialiser) of
    :mod:`.walk_training`."""

    def _opts(self) -> dict:
        from vgjax.experiments.remedies import walk_training as wt
        return {"depths": wt.DEPTHS, "width": wt.WIDTH,
                "activations": wt.ACTIVATIONS} | dict(self.options)

    def depths_width(self) -> tuple[tuple[int, ...], int]:
        o = self._opts()
        return tuple(o["depths"]), o["width"]

    def configs(self, epochs: int | None) -> list:
        from vgjax.experiments.remedies import walk_training as wt
        return [wt.sweep_config(a, init, epochs or wt.EPOCHS)
                for a in self._opts()["activations"] for init, _ in wt.inits(a)]

    def train(self, out: Path, seeds: tuple[int, ...], epochs: int | None, **how) -> dict:
        from vgjax.experiments.remedies import walk_training as wt
        return wt.train_all(out, seeds=seeds, epochs=epochs or wt.EPOCHS, **how,
                            **dict(self.options))

    def render(self, exp_dir: Path) -> list[str]:
        from vgjax.experiments.remedies import outputs
        return outputs.walk_training_section(exp_dir)


EXPERIMENTS: tuple[InitStudy | TrainingStudy, ...] = (
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
    WalkTrainingStudy("random-walk-training", "Trainability at depths 50-200: random-walk "
                      "initialisation against Glorot/He, linear, ReLU and tanh nets",
                      reported="Sussillo & Abbott 2014: random-walk init trains nets of "
                      "depth 200 with plain SGD",
                      figures=("learn.png", "profiles.png"), seeds=tuple(range(4))),
)


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md``: its heading, introduction and the section of
    each experiment present in ``out`` ([] when none is)."""
    return group_report(HEADING, INTRO, EXPERIMENTS, out)
