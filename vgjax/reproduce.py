"""Run experiments end to end: each experiment object's run, then ``OUT/README.md``.

``run_experiments(names, out)`` runs ``names`` and the experiments they read, in catalog
order of dependency, each through its own :meth:`~vgjax.experiments.base.Experiment.run`
(sweeps train through the resumable :func:`vgjax.run.pipeline.run_sweep`, studies compute at
initialisation or from the sweeps they use), and rebuilds the report
(:func:`vgjax.report.write_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vgjax import experiments as ex
from vgjax import report
from vgjax.experiments.base import Context, StoredResults
from vgjax.io.store import safe_join, sanitize_name


def n_runs(names: list[str], seeds: tuple[int, ...]) -> int:
    """Runs the experiments ``names`` train together with the command line's ``seeds``."""
    return sum(ex.get(n).n_runs(seeds) for n in names)


def run_experiments(names: list[str], out: str | Path, *, seeds: tuple[int, ...],
                    epochs: int | None = None, overwrite: bool = False,
                    tensorboard: bool = True, chunk_size: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_start: Callable[[str], None] | None = None) -> dict[str, list[Path]]:
    """Run ``names`` (plus the experiments they read) into ``out``; returns figures per name.

    Every experiment writes ``OUT/NAME/`` (summary.json, history.npz and PNGs for sweeps,
    PNGs and tables.json for the others) and sweeps their TensorBoard logs under
    ``OUT/tensorboard/NAME/``. Re-running resumes finished chunks. Every experiment is
    checked before anything is written. At the end ``OUT/README.md`` is rebuilt from every
    experiment in ``OUT`` (see :mod:`vgjax.report`), so the experiments not run now keep
    their rows and figures.
    """
    exps = [ex.get(n) for n in ex.dependencies(list(names))]
    for e in exps:
        e.check(seeds, epochs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; allowed: a directory path")
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[Path]] = {}
    for i, e in enumerate(exps):
        if on_start is not None:
            on_start(e.name)
        exp_dir = safe_join(out, sanitize_name(e.name))
        for stale in e.figures:  # a figure this run does not redraw must not outlive it
            (exp_dir / stale).unlink(missing_ok=True)
        ctx = Context(out=out, exp_dir=exp_dir, seeds=tuple(seeds), epochs=epochs,
                      overwrite=overwrite, tensorboard=tensorboard, chunk_size=chunk_size,
                      progress=progress,
                      results=StoredResults(out, [d.name for d in exps[:i] if d.n_runs(seeds)]))
        figures[e.name] = e.run(ctx)
    report.write_report(out)
    return figures
