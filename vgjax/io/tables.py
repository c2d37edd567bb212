"""An experiment's tables: the numbers a report renders, kept as ``EXP_DIR/tables.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
