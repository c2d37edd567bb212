"""``OUT/README.md``: every experiment's numbers beside the tutorial's (or the paper's), then
the figures, then the benchmark.

The report is a function of the files in ``OUT`` alone, never of what was just trained: each
group of :mod:`vgjax.experiments` renders its part (``render(out)``), each experiment its
section from its own ``OUT/NAME/`` (summary.json, tables.json, data.json, PNGs), and
``OUT/benchmark.json`` the benchmark section. So running any subset of experiments rebuilds
the whole report, and a fresh clone (which has no ``history.npz``) can rebuild it too.
"""

from __future__ import annotations

import json
from pathlib import Path

from vgjax.experiments import GROUP_MODULES
from vgjax.experiments.base import TENSORBOARD_ROOT
from vgjax.io.store import atomic_write_text

BENCH_START, BENCH_END = "<!-- benchmark -->", "<!-- /benchmark -->"


def render(out: str | Path) -> str:
    """The report of everything in ``out`` as Markdown (figure links relative to ``out``)."""
    out = Path(out)
    lines = [line for group in GROUP_MODULES for line in group.render(out)]
    lines += ["TensorBoard logs (not committed): `tensorboard --logdir "
              f"{(out / TENSORBOARD_ROOT).as_posix()}`", ""]
    return "\n".join(lines) + benchmark_section(out)


def benchmark_section(out: Path) -> str:
    """The benchmark table from ``OUT/benchmark.json`` between markers ('' if absent)."""
    path = Path(out) / "benchmark.json"
    if not path.exists():
        return ""
    from vgjax.bench import render_table
    table = render_table(json.loads(path.read_text()))
    return (f"\n{BENCH_START}\n## Benchmark (`vgjax bench`, this machine)\n\n{table}\n"
            f"{BENCH_END}\n")


def refresh_benchmark(out: Path) -> Path:
    """Replace (or append) the benchmark section of ``OUT/README.md``."""
    path = Path(out) / "README.md"
    text = path.read_text() if path.exists() else ""
    if BENCH_START in text and BENCH_END in text:
        head, rest = text.split(BENCH_START, 1)
        text = head.rstrip("\n") + "\n" + rest.split(BENCH_END, 1)[1].lstrip("\n")
    atomic_write_text(path, text.rstrip("\n") + "\n" + benchmark_section(out))
    return path


def write_report(out: str | Path) -> Path:
    """Rebuild ``OUT/README.md`` from every experiment in ``OUT`` (atomically); its path."""
    path = Path(out) / "README.md"
    atomic_write_text(path, render(out))
    return path
