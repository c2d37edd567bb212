"""The ``remedies`` group: initialisation-time studies of the remedies the tutorial names
(random-walk initialisation, BatchNorm), theory beside measurement. They train nothing: pure
JAX at initialisation, ``vmap``/``lax.map`` over seeds.

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
HEADING = "## Remedies: random-walk initialisation and BatchNorm, beside their theory"
INTRO = ("The remedies the tutorial names, at initialisation, against their mean-field "
         "theory. `vgjax reproduce --group remedies` (or `vgjax run NAME`) rebuilds these "
         "sections.")


@dataclass(frozen=True)
class InitStudy:
    """One init-time experiment, computed by ``vgjax.experiments.remedies.<module>``'s
    ``compute(seeds, **options) -> data`` (JSON-able) and drawn by :mod:`.outputs`'s
    ``write_<kind>(exp_dir, data)`` and ``<kind>_section(exp_dir)``.

    seeds: the study's own seeds (None: the context's); options: keyword arguments of
    ``compute`` (smaller sizes for a quick look)."""

    name: str
    title: str
    reported: str
    module: str
    kind: str
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
        import importlib
        module = importlib.import_module(f"vgjax.experiments.remedies.{self.module}")
        return module.compute(tuple(seeds), **dict(self.options))

    def write(self, exp_dir: Path, data: dict) -> list[Path]:
        """``data.json``, then the figures and ``tables.json`` from it; the paths written."""
        from vgjax.experiments.remedies import outputs
        from vgjax.io.store import atomic_write_text, dumps_json, jsonable
        exp_dir.mkdir(parents=True, exist_ok=True)
        path = exp_dir / "data.json"
        atomic_write_text(path, dumps_json(jsonable(data)))
        return [path] + getattr(outputs, f"write_{self.kind}")(exp_dir, data)

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
        from vgjax.experiments.remedies import outputs
        return getattr(outputs, f"{self.kind}_section")(Path(exp_dir))


EXPERIMENTS: tuple[InitStudy, ...] = (
    InitStudy("random-walk", "ln‖δ_l‖ at random-walk initialisation against its theory, "
              "linear and ReLU nets, widths 10/30/100, depth 200",
              reported="Sussillo & Abbott 2014: an unbiased walk, variance ~ depth/(2N)",
              module="random_walk", kind="walk", figures=("walk.png", "variance.png"),
              seeds=tuple(range(1000))),
    InitStudy("batchnorm-explosion", "Per-layer gradient growth at initialisation in "
              "BatchNorm nets against Yang et al.'s rates, batch sizes 4-512",
              reported="Yang et al. 2019: π/(π−1) (ReLU), (B−2)/(B−3) (linear)",
              module="batchnorm", kind="bn", figures=("growth.png", "profiles.png"),
              seeds=tuple(range(4))),
)


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md``: its heading, introduction and the section of
    each experiment present in ``out`` ([] when none is)."""
    return group_report(HEADING, INTRO, EXPERIMENTS, out)
