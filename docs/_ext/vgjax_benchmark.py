"""Measured figures rendered from the committed ``results/*.json`` when the docs are built,
so no page types a number that was measured.

- ``{bench}`w600.train_s:.1f``` (a role): one value of ``results/benchmark.json``, addressed
  by its path (dots between keys, list indices as numbers, ``wide.name=W-wide.train_s`` picks
  the list entry whose ``name`` is ``W-wide``), formatted with the optional format spec after
  ``:``; ``A / B`` gives the ratio of two values. ``{result}`distributed seconds.single:.1f```
  does the same for another file of ``results/`` (here ``distributed.json``).
- ````{benchmark}```` (a directive): the benchmark's full table, as ``vgjax bench`` writes it
  into ``results/README.md`` (:func:`vgjax.bench.render.render_table`).

A missing file or path is a build error naming it, never a blank.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective, SphinxRole


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExtensionError(f"vgjax_benchmark: cannot read {path}: {e}") from e


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data``: keys separated by dots, a number indexes a list,
    ``key=value`` (or ``k1=v1,k2=v2``) picks the one list entry whose fields equal those."""
    value = data
    for part in path.split("."):
        if isinstance(value, list) and "=" in part:
            want = dict(kv.split("=", 1) for kv in part.split(","))
            matches = [v for v in value if all(str(v.get(k)) == w for k, w in want.items())]
            if len(matches) != 1:
                raise KeyError(f"{part!r} matches {len(matches)} entries")
            value = matches[0]
        elif isinstance(value, list):
            value = value[int(part)]
        else:
            value = value[part]
    return value


def _number_or(data: dict, path: str) -> Any:
    try:
        return float(path)  # a constant, such as 60 to turn seconds into minutes
    except ValueError:
        return lookup(data, path)


def format_value(data: dict, spec: str) -> str:
    """``PATH[:FORMAT]`` or ``PATH / PATH[:FORMAT]`` (a ratio of two values; either may be a
    number), with a Python format spec (``.1f``, ``.0%`` ...)."""
    paths, _, fmt = spec.partition(":")
    try:
        values = [_number_or(data, p.strip()) for p in paths.split(" / ")]
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ExtensionError(f"vgjax_benchmark: no {paths!r} in that file ({e})") from e
    value = values[0] / values[1] if len(values) == 2 else values[0]
    return format(value, fmt) if fmt else str(value)


def _results_file(config, stem: str) -> Path:
    return Path(config.vgjax_benchmark_json).parent / f"{stem}.json"


class BenchRole(SphinxRole):
    """``{bench}`PATH[:FORMAT]```: one measured value from benchmark.json, as text."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        path = Path(self.config.vgjax_benchmark_json)
        self.env.note_dependency(str(path))
        return [nodes.Text(format_value(_load(path), self.text))], []


class ResultRole(SphinxRole):
    """``{result}`FILE PATH[:FORMAT]```: one value from ``results/FILE.json``, as text."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        stem, _, spec = self.text.strip().partition(" ")
        path = _results_file(self.config, stem)
        self.env.note_dependency(str(path))
        return [nodes.Text(format_value(_load(path), spec))], []


class BenchmarkDirective(SphinxDirective):
    """The full benchmark table, parsed as the page's own Markdown."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from vgjax.bench.render import render_table

        self.env.note_dependency(self.config.vgjax_benchmark_json)
        lines = render_table(_load(Path(self.config.vgjax_benchmark_json))).splitlines()
        # The table's figure sits beside benchmark.json; link it from this page.
        figure = Path(self.config.vgjax_benchmark_json).with_suffix(".png")
        here = Path(self.env.doc2path(self.env.docname)).parent
        rel = Path(os.path.relpath(figure, here)).as_posix()
        lines = [f"![benchmark]({rel})" if ln.strip() == "![benchmark](benchmark.png)" else ln
                 for ln in lines]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="results/benchmark.json"),
                                self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict:
    app.add_config_value("vgjax_benchmark_json", "", "env")
    app.add_role("bench", BenchRole())
    app.add_role("result", ResultRole())
    app.add_directive("benchmark", BenchmarkDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
