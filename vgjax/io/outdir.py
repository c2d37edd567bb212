"""A sweep's output directory: its file names, claiming it (manifest, resume, overwrite)
(the chunk store that makes a sweep resumable is :mod:`vgjax.io.chunk_store`), and reading
the manifest of a sweep split into array-job shards.

Layout of an output directory::

    out/
      manifest.json           written first: config + grid + format version (resume key)
      chunks/chunk_00000.npz  per-chunk results of a resumable sweep (run axis split)
      summary.json            final: per-run finals, per-config statistics (vgjax.io.summary)
      history.npz             final: every history array plus the run table (vgjax.io.history)
      tensorboard/            event files (vgjax.io.tensorboard), removed here on --overwrite

Every file is written through :mod:`vgjax.io.store`'s atomic writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Mapping

from vgjax.config import Config, Grid
from vgjax.io.store import atomic_write_text, dumps_json, is_temp_name, reject_constant

MANIFEST_FORMAT = "vgjax.manifest"
MANIFEST_VERSION = 1

MANIFEST_NAME = "manifest.json"
LAYOUT_KEY = "layout"  # manifest entry of a sweep split into array-job shards (vgjax.run.distributed)
SUMMARY_NAME = "summary.json"
HISTORY_NAME = "history.npz"
CHUNKS_DIR = "chunks"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
PARAMS_NAME = "params.npz"
# Names in an output directory that vgjax owns and may delete on --overwrite. Anything else
# in the directory is foreign and is never touched.
OWNED_NAMES = (MANIFEST_NAME, SUMMARY_NAME, HISTORY_NAME, CHUNKS_DIR, TENSORBOARD_DIR, PLOTS_DIR,
               PARAMS_NAME)


# --------------------------------------------------------------------------------------------
# Output directory


def make_manifest(config: Config, grid: Grid) -> dict[str, Any]:
    """The manifest for :func:`prepare_out_dir`: format, version, config and grid as plain dicts."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "config": config.to_dict(),
        "grid": grid.to_dict(),
    }


def _probe_writable(directory: Path, label: str) -> None:
    # os.access is useless as root and on some network file systems; creating a real file
    # is the only reliable test. The probe is removed at once.
    probe = directory / f".vgjax-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise ValueError(
            f"out: {label!r} is not writable ({e.strerror or type(e).__name__} in "
            f"{str(directory)!r}); allowed: a directory you can write to"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _first_difference(old: Any, new: Any) -> str | None:
    """'field NAME: OLD != NEW' for the first differing key of two dicts, else None."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else f"{old!r} != {new!r}"
    missing = "(missing)"
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            return f"field {key}: {a!r} != {b!r}"
    return None


def _remove_owned(out: Path) -> None:
    """Delete vgjax-owned entries of ``out``; the manifest goes last so an interrupted
    removal still leaves a directory recognised as a vgjax sweep."""
    for entry in sorted(out.iterdir()):
        if is_temp_name(entry.name):
            with contextlib.suppress(OSError):
                entry.unlink()
    for name in OWNED_NAMES:
        if name == MANIFEST_NAME:
            continue
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    with contextlib.suppress(FileNotFoundError):
        (out / MANIFEST_NAME).unlink()


def _remove_stale_temps(out: Path) -> None:
    # Leftovers of a killed writer; a sweep directory has one writer at a time.
    for d in (out, out / CHUNKS_DIR):
        if d.is_dir():
            for entry in d.iterdir():
                if is_temp_name(entry.name):
                    with contextlib.suppress(OSError):
                        entry.unlink()


def _normalise_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(manifest, Mapping) or "config" not in manifest or "grid" not in manifest:
        raise ValueError("manifest: needs 'config' and 'grid' entries (see make_manifest)")
    m = dict(manifest)
    for key in ("config", "grid"):
        if hasattr(m[key], "to_dict"):
            m[key] = m[key].to_dict()
    m.setdefault("format", MANIFEST_FORMAT)
    m.setdefault("version", MANIFEST_VERSION)
    # A JSON round trip makes tuples lists and checks it is JSON-able (strictly: no NaN).
    return json.loads(json.dumps(m, allow_nan=False, sort_keys=True))


def _create(path: Path, label: str) -> None:
    """Create the directory ``path`` (with parents) after checking it can be."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"out: {label!r} cannot be created: {str(ancestor)!r} is a file; "
                         "allowed: a directory path")
    _probe_writable(ancestor, label)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out: {label!r} cannot be created ({e.strerror}); "
                         "allowed: a directory you can write to") from None


def _manifest_problem(mpath: Path, new: dict[str, Any]) -> str | None:
    """Why the manifest at ``mpath`` is not the sweep ``new`` (None: the same sweep)."""
    try:
        old = json.loads(mpath.read_text(encoding="utf-8"), parse_constant=reject_constant)
        if not isinstance(old, dict):
            raise ValueError
    except (OSError, ValueError, UnicodeDecodeError):
        return "an unreadable manifest.json"
    if old.get("format") != MANIFEST_FORMAT or old.get("version") != new["version"]:
        return (f"a manifest.json of format {old.get('format')!r} version "
                f"{old.get('version')!r}; this vgjax writes {MANIFEST_FORMAT!r} "
                f"version {new['version']}")
    for key, defaults in (("config", Config().to_dict()), ("grid", Grid().to_dict())):
        mine = old.get(key)
        if isinstance(mine, dict):
            # A field added to Config/Grid after this manifest was written is missing from
            # it; at its default value it names the same sweep, so older results resume.
            mine = {**{k: v for k, v in defaults.items() if k not in mine}, **mine}
        diff = _first_difference(mine, new[key])
        if diff is not None:
            return f"a sweep with a different {key} ({diff})"
    return None


def prepare_out_dir(out: str | os.PathLike[str], manifest: Mapping[str, Any], *,
                    overwrite: bool) -> Path:
    """Check, create and claim a sweep's output directory, writing ``manifest.json``.

    Everything is checked before anything is created or removed:

    * ``out`` must not be a file, nor lie below a file, and must be writable (tested by
      creating and removing a probe file, which also works when running as root).
    * New or empty directory: created (with parents) and the manifest written.
    * Directory with a ``manifest.json`` of the same config and grid: resume; chunk files
      are kept, stale temp files of a killed writer are removed. With ``overwrite=True`` the
      old vgjax-owned entries (:data:`OWNED_NAMES`) are removed instead, starting afresh.
    * Directory with a manifest of a different config/grid/version, or an unreadable one:
      ``ValueError`` unless ``overwrite=True``, which removes the old vgjax-owned entries.
      Foreign files beside them are never touched.
    * Non-empty directory without a manifest: refused even with ``overwrite=True`` if it
      holds anything vgjax did not write (foreign files are never deleted nor mixed with a
      sweep); if it only holds vgjax-named leftovers (``summary.json``, ``history.npz``,
      ``chunks/``, ``tensorboard/``, temp files), ``overwrite=True`` removes them.

    Args:
        out: the output directory path.
        manifest: dict with ``config`` and ``grid`` (dicts, or objects with ``to_dict``),
            e.g. from :func:`make_manifest`; ``format``/``version`` are added if absent.
            Only ``config``, ``grid`` and ``version`` decide resume vs. refusal.
        overwrite: replace an existing sweep instead of refusing.

    Returns:
        ``Path(out)``.

    Raises:
        ValueError: one line naming the path and the problem, e.g. ``out: 'runs/a' holds a
            sweep with a different config (field lr: 0.01 != 0.1); pass --overwrite to
            replace it`` (stored value first, requested value second).
    """
    new = _normalise_manifest(manifest)
    label = os.fspath(out)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out: {label!r} is a file; allowed: a directory path")
    if not path.exists():
        _create(path, label)
    elif not _clear_existing(path, label, new, overwrite=overwrite):
        return path  # resume
    atomic_write_text(path / MANIFEST_NAME, dumps_json(new))
    return path


def _clear_existing(path: Path, label: str, new: dict, *, overwrite: bool) -> bool:
    """An existing directory for the sweep ``new``: False to resume it as it is, True once it
    is ready for a fresh manifest (empty, or its vgjax-owned entries removed); ValueError
    when it is refused (see :func:`prepare_out_dir`)."""
    _probe_writable(path, label)
    entries = [e.name for e in path.iterdir()]
    if MANIFEST_NAME in entries:
        problem = _manifest_problem(path / MANIFEST_NAME, new)
        if problem is None and not overwrite:
            _remove_stale_temps(path)
            return False
        if problem is not None and not overwrite:
            raise ValueError(f"out: {label!r} holds {problem}; pass --overwrite to replace it")
        _remove_owned(path)
    elif entries:
        leftovers = {CHUNKS_DIR, SUMMARY_NAME, HISTORY_NAME, TENSORBOARD_DIR}
        foreign = sorted(n for n in entries if n not in leftovers and not is_temp_name(n))
        if foreign:
            raise ValueError(
                f"out: {label!r} is not empty and holds no vgjax sweep (no manifest.json; "
                f"found {foreign[0]!r}); allowed: a new or empty directory, or one vgjax wrote"
            )
        if not overwrite:
            raise ValueError(
                f"out: {label!r} holds leftovers of a vgjax sweep without manifest.json; "
                "pass --overwrite to replace them"
            )
        _remove_owned(path)
    return True


def read_manifest(out: Path) -> dict | None:
    """``out``'s manifest as a dict, None when it has none; ValueError (one line) when unreadable."""
    p = Path(out) / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise ValueError(f"out: {str(p)!r} is unreadable; allowed: a manifest vgjax "
                         "wrote") from None
    if not isinstance(m, dict):
        raise ValueError(f"out: {str(p)!r} is not a vgjax manifest")
    return m


def plain_json(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists), to compare manifests."""
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))


def sharded_layout(out: str | Path, config: Config, grid: Grid) -> dict | None:
    """The ``layout`` of ``out`` if it holds array-job shards of this sweep, else None."""
    m = read_manifest(Path(out)) if Path(out).is_dir() else None
    if not m or LAYOUT_KEY not in m:
        return None
    if m.get("config") != plain_json(config.to_dict()) or m.get("grid") != plain_json(grid.to_dict()):
        return None  # a different sweep: prepare_out_dir refuses or overwrites it
    return m[LAYOUT_KEY]


def summary_format(out: str | os.PathLike[str]) -> str | None:
    """The ``format`` field of ``OUT/summary.json`` (None when absent or unreadable): which
    writer made the directory (a sweep, a watched model, a recurrent grid)."""
    p = Path(out) / SUMMARY_NAME
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("format") if p.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def read_format_summary(out: str | os.PathLike[str], fmt: str, version: int,
                        what: str) -> dict:
    """``OUT/summary.json`` of format ``fmt`` at ``version``, checked (one-line
    ``ValueError`` naming the file; ``what`` names the writer, e.g. "a recurrent grid")."""
    p = Path(out) / SUMMARY_NAME
    try:
        s = json.loads(p.read_text(encoding="utf-8"), parse_constant=reject_constant)
    except FileNotFoundError:
        raise ValueError(f"results: {str(p)!r} is missing; run the training first") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise ValueError(f"results: {str(p)!r} is not valid JSON (truncated?)") from None
    if not isinstance(s, dict) or s.get("format") != fmt:
        raise ValueError(f"results: {str(p)!r} is not {what}'s summary")
    if s.get("version") != version:
        raise ValueError(f"results: {str(p)!r} has version {s.get('version')!r}; this vgjax "
                         f"reads version {version}")
    return s
