"""An experiment's tables: the numbers a report renders, kept as ``EXP_DIR/tables.json``, and
the Markdown table they are rendered as (:func:`markdown_table`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from vgjax.io.store import atomic_write_text, dumps_json, jsonable

TABLES_NAME = "tables.json"
TABLES_FORMAT, TABLES_VERSION = "vgjax.tables", 1


def write_tables(exp_dir: Path, tables: dict[str, Any]) -> Path:
    """Write a figure-only experiment's numbers as ``EXP_DIR/tables.json`` (atomically)."""
    path = Path(exp_dir) / TABLES_NAME
    atomic_write_text(path, dumps_json(jsonable(
        {"format": TABLES_FORMAT, "version": TABLES_VERSION, **tables})))
    return path


def read_tables(path: Path) -> dict[str, Any] | None:
    """The tables written by :func:`write_tables` at ``path``, or None if there are none;
    a file that is not such a table is refused in one line."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"report: {str(path)!r} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != TABLES_FORMAT \
            or data.get("version") != TABLES_VERSION:
        raise ValueError(f"report: {str(path)!r} is not a vgjax tables file version "
                         f"{TABLES_VERSION}")
    return data


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table as lines: ``| h1 | h2 |``, ``|---|---|``, then one line per row.

    Cells are written with ``str`` (format numbers before); every row must have as many
    cells as ``header`` (``ValueError`` naming the row otherwise). The one writer of every
    hand-built table in the reports, so they all share one layout.
    """
    header = [str(h) for h in header]
    lines = [markdown_row(header), "|---" * len(header) + "|"]
    for i, row in enumerate(rows):
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"markdown_table: row {i} has {len(cells)} cells; allowed: "
                             f"{len(header)} (one per header column)")
        lines.append(markdown_row(cells))
    return lines


def markdown_row(cells: Sequence[object]) -> str:
    """One row of a Markdown table, ``| a | b |`` (for tables assembled from parts; a whole
    table is :func:`markdown_table`)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"
