"""Every file a sweep writes or reads, except TensorBoard event files and PNGs.

Layout of an output directory::

    out/
      manifest.json        written first: config + grid + format version (resume key)
      chunks/chunk_00000.npz  per-chunk results of a resumable sweep (run axis split)
      summary.json         final: per-run finals, per-group statistics, versions, timing
      history.npz          final: every history array plus the run table (``run_*``)
      tensorboard/         written by the TensorBoard module, removed here on --overwrite

Rules kept everywhere in this module:

* Writes are atomic: a temp file in the same directory is written, flushed, fsynced and
  ``os.replace``-d over the final name, so a reader never sees a half-written file.
* No pickle: arrays must have plain bool/int/uint/float dtypes and are always read with
  ``np.load(..., allow_pickle=False)``.
* JSON is strict (NaN/Inf are written as ``null``) and deterministic (``sort_keys``, fixed
  float formatting), so identical results give byte-identical files apart from ``timing``.
* npz files are written by one zip writer with fixed member order (sorted names) and fixed
  timestamps, so the streamed and the in-memory history writers give identical bytes.

This module never imports jax (versions are read with ``importlib.metadata``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import json
import math
import os
import re
import secrets
import shutil
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from vgjax.config import Config, Grid
from vgjax.result import (
    CURVES,
    HIST_ARRAYS,
    LAYER_STATS,
    TEST_LAYER_STATS,
    RunTable,
    SweepResult,
    final_metric,
)

SUMMARY_FORMAT = "vgjax.sweep"
SUMMARY_VERSION = 1
MANIFEST_FORMAT = "vgjax.manifest"
MANIFEST_VERSION = 1

MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
HISTORY_NAME = "history.npz"
CHUNKS_DIR = "chunks"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
# Names in an output directory that vgjax owns and may delete on --overwrite. Anything else
# in the directory is foreign and is never touched.
OWNED_NAMES = (MANIFEST_NAME, SUMMARY_NAME, HISTORY_NAME, CHUNKS_DIR, TENSORBOARD_DIR, PLOTS_DIR,
               "params.npz")

# Run-table arrays stored in history.npz beside the history arrays.
RUN_ARRAYS = ("run_seed", "run_depth", "run_width", "run_lr", "run_diverged_epoch",
              "run_weight_var", "run_bias_var")
# Files written before the variance axes existed lack these; they default to 1 and 0.
OPTIONAL_RUN_ARRAYS = ("run_weight_var", "run_bias_var")
# History arrays without a leading run axis.
SHARED_ARRAYS = ("hist_epochs", "hist_edges")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")

_ALLOWED_KINDS = "biuf"  # bool, signed int, unsigned int, float: nothing that needs pickle
_TMP_RE = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+$")
_CHUNK_RE = re.compile(r"^chunk_(\d+)\.npz$")
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")
_WRITE_BLOCK = 1 << 22  # bytes per write into a zip member
_MAX_NAME = 200  # leaves room under the usual 255-byte limit for suffixes such as ".npz"


# --------------------------------------------------------------------------------------------
# Atomic writes


def _tmp_path(path: Path) -> Path:
    # Same directory as the target so os.replace never crosses file systems; the leading dot
    # and the pid + random suffix keep it hidden and unique per writer.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform/file system allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the ``with`` body succeeds."""
    path = Path(path)
    tmp = _tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    Args:
        path: destination file; its directory must exist.
        data: the complete file contents.

    On any error the temp file is removed, an existing file at ``path`` is left unchanged, and
    the error is re-raised.
    """
    with _atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _check_array(name: str, arr: Any) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
        raise ValueError(
            f"array {name!r}: dtype {arr.dtype} is not allowed; allowed: bool, int, uint, float"
        )
    return arr


def _check_member_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"array name {name!r} is not allowed; allowed: a plain non-empty name")


def _write_npz(f: BinaryIO, members: Mapping[str, Callable[[], Iterable[np.ndarray]]],
               leading: Mapping[str, int | None], *, compress: bool) -> None:
    """Write an npz archive to ``f``, one member at a time, streaming each member's pieces.

    ``members[name]()`` yields the pieces of one array in order along axis 0 (a single piece
    for an array written whole). ``leading[name]`` is the full length of axis 0 when the
    array is given in pieces, or None when it comes as one piece. Members are written in
    sorted order with zipfile's fixed 1980 timestamp, so output bytes depend on data only.
    """
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=compression, compresslevel=1 if compress else None,
                         allowZip64=True) as zf:
        for name in sorted(members):
            _check_member_name(name)
            pieces = iter(members[name]())
            n_total = leading[name]
            try:
                first = _check_array(name, next(pieces))
            except StopIteration:
                raise ValueError(f"array {name!r}: no chunks were given") from None
            dtype, tail = first.dtype, first.shape[1:]
            shape = first.shape if n_total is None else (int(n_total),) + tail
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": shape,
            }
            piece: np.ndarray | None = first
            del first  # only `piece` may hold a chunk, so at most one is alive at a time
            with zf.open(name + ".npy", "w", force_zip64=True) as m:
                np.lib.format.write_array_header_1_0(m, header)
                rows = 0
                while piece is not None:
                    piece = _check_array(name, piece)
                    if n_total is not None and piece.ndim == 0:
                        raise ValueError(f"array {name!r}: a chunk is 0-d; chunks need a run axis")
                    if piece.dtype != dtype or piece.shape[1:] != tail:
                        raise ValueError(
                            f"array {name!r}: a chunk of {piece.dtype} {piece.shape} does not "
                            f"match the first chunk's {dtype} [..., {tail}] beyond the run axis"
                        )
                    rows += piece.shape[0] if piece.ndim else 1
                    if piece.size:
                        # A uint8 view of C-ordered data, written in blocks so the compressor's
                        # output buffer stays small too.
                        raw = np.ascontiguousarray(piece).reshape(-1).view(np.uint8)
                        for lo in range(0, raw.size, _WRITE_BLOCK):
                            m.write(raw[lo:lo + _WRITE_BLOCK])
                        del raw
                    piece = None  # drop this chunk before the next one is loaded
                    piece = next(pieces, None)
                    if n_total is None and piece is not None:
                        raise ValueError(f"array {name!r}: expected one piece, got more")
                if n_total is not None and rows != n_total:
                    raise ValueError(
                        f"array {name!r}: chunks hold {rows} runs along axis 0; expected {n_total}"
                    )


def atomic_save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], *,
                    compress: bool = False) -> None:
    """Save ``arrays`` as an npz file atomically, without pickle.

    Args:
        path: destination ``.npz`` file; its directory must exist.
        arrays: name -> array of a bool/int/uint/float dtype, any shape. Names are plain
            (no ``/``, not starting with ``.``).
        compress: deflate the members (level 1) instead of storing them.

    The file is readable with ``np.load(path, allow_pickle=False)``; members are written in
    sorted name order with fixed timestamps, so equal arrays give equal bytes.
    Raises ``ValueError`` for a disallowed dtype or name; nothing is written then.
    """
    checked = {k: _check_array(k, v) for k, v in arrays.items()}
    for k in checked:
        _check_member_name(k)
    with _atomic_open(path) as f:
        _write_npz(f, {k: (lambda v=v: [v]) for k, v in checked.items()},
                   dict.fromkeys(checked), compress=compress)


# --------------------------------------------------------------------------------------------
# Names and paths


def sanitize_name(text: str) -> str:
    """Turn a run or experiment name into one safe path component.

    Keeps ``[A-Za-z0-9_.-]`` and replaces every other character with ``_``. Leading dots
    become ``_`` (so ``.``, ``..`` and hidden names cannot appear), an empty result becomes
    ``_``, and names longer than 200 characters are cut and given a short hash of the full
    text so distinct long names stay distinct. Different inputs can map to the same output
    (``a/b`` and ``a_b``).

    Args:
        text: any string.

    Returns:
        A non-empty string of at most 209 characters that is never ``.`` or ``..``.
    """
    if not isinstance(text, str):
        raise ValueError(f"name: {text!r} is not a string")
    out = _NAME_RE.sub("_", text)
    stripped = out.lstrip(".")
    out = "_" * (len(out) - len(stripped)) + stripped
    if len(out) > _MAX_NAME:
        digest = format(zlib.crc32(text.encode("utf-8", "surrogatepass")), "08x")
        out = out[:_MAX_NAME] + "_" + digest
    return out or "_"


def safe_join(root: str | os.PathLike[str], *parts: str) -> Path:
    """Join ``parts`` under ``root`` and refuse anything that lands outside it.

    Args:
        root: the directory everything must stay inside (it need not exist yet).
        parts: relative path components, e.g. sanitized run names.

    Returns:
        ``Path(root, *parts)`` (not resolved).

    Raises:
        ValueError: if a part is empty or absolute, or the resolved result (following
            symlinks that exist) is ``root`` itself or outside it, e.g. through ``..``.
    """
    root_p = Path(root)
    for p in parts:
        if not isinstance(p, str) or not p:
            raise ValueError(f"path: empty component in {list(parts)!r}; allowed: relative names")
        if os.path.isabs(p):
            raise ValueError(f"path: {p!r} is absolute; allowed: a path relative to {str(root)!r}")
    joined = root_p.joinpath(*parts)
    base = root_p.resolve()
    target = joined.resolve()
    if target == base or not target.is_relative_to(base):
        raise ValueError(f"path: {str(joined)!r} is outside {str(root)!r}; allowed: paths inside it")
    return joined


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


def _is_vgjax_temp(name: str) -> bool:
    return bool(_TMP_RE.match(name))


def _remove_owned(out: Path) -> None:
    """Delete vgjax-owned entries of ``out``; the manifest goes last so an interrupted
    removal still leaves a directory recognised as a vgjax sweep."""
    for entry in sorted(out.iterdir()):
        if _is_vgjax_temp(entry.name):
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
                if _is_vgjax_temp(entry.name):
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
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ValueError(
                f"out: {label!r} cannot be created: {str(ancestor)!r} is a file; "
                "allowed: a directory path"
            )
        _probe_writable(ancestor, label)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"out: {label!r} cannot be created ({e.strerror}); "
                             "allowed: a directory you can write to") from None
        atomic_write_text(path / MANIFEST_NAME, _dumps(new))
        return path

    _probe_writable(path, label)
    entries = [e.name for e in path.iterdir()]
    mpath = path / MANIFEST_NAME
    if MANIFEST_NAME in entries:
        problem: str | None = None
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"), parse_constant=_reject_constant)
            if not isinstance(old, dict):
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            problem = "an unreadable manifest.json"
        else:
            if old.get("format") != MANIFEST_FORMAT or old.get("version") != new["version"]:
                problem = (f"a manifest.json of format {old.get('format')!r} version "
                           f"{old.get('version')!r}; this vgjax writes {MANIFEST_FORMAT!r} "
                           f"version {new['version']}")
            else:
                for key in ("config", "grid"):
                    diff = _first_difference(old.get(key), new[key])
                    if diff is not None:
                        problem = f"a sweep with a different {key} ({diff})"
                        break
        if problem is None and not overwrite:
            _remove_stale_temps(path)
            return path  # resume
        if problem is not None and not overwrite:
            raise ValueError(f"out: {label!r} holds {problem}; pass --overwrite to replace it")
        _remove_owned(path)
    elif entries:
        leftovers = {CHUNKS_DIR, SUMMARY_NAME, HISTORY_NAME, TENSORBOARD_DIR}
        foreign = sorted(n for n in entries if n not in leftovers and not _is_vgjax_temp(n))
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
    atomic_write_text(mpath, _dumps(new))
    return path


# --------------------------------------------------------------------------------------------
# Chunks


class ChunkStore:
    """Per-chunk result files of a resumable sweep: ``OUT/chunks/chunk_00012.npz``.

    A chunk holds a contiguous slice of the run axis of the per-run arrays; what exactly is in
    it is up to the sweep. Files are written atomically, so a file under its final name is
    complete unless the disk or someone else damaged it; damaged files are removed (with a
    warning) so the sweep recomputes them.

    Args:
        out_dir: the sweep's output directory.
        keys: array names every chunk must hold; ``None`` checks nothing.
    """

    def __init__(self, out_dir: str | os.PathLike[str], keys: Iterable[str] | None = None):
        self.dir = Path(out_dir) / CHUNKS_DIR
        self.keys: tuple[str, ...] | None = None if keys is None else tuple(sorted(keys))

    def path(self, i: int) -> Path:
        """File of chunk ``i`` (``i >= 0``), e.g. ``OUT/chunks/chunk_00012.npz``."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"chunk: index {i!r} is not allowed; allowed: integers >= 0")
        return self.dir / f"chunk_{int(i):05d}.npz"

    def save(self, i: int, arrays: Mapping[str, np.ndarray]) -> Path:
        """Atomically write chunk ``i``.

        Args:
            i: chunk index.
            arrays: name -> array (bool/int/float dtypes); must hold ``keys`` if set.

        Returns:
            The chunk's path.
        """
        missing = self._missing(arrays.keys())
        if missing:
            raise ValueError(f"chunk {i}: missing array(s) {missing}; expected {list(self.keys or ())}")
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(i)
        atomic_save_npz(p, arrays)
        return p

    def _missing(self, names: Iterable[str]) -> list[str]:
        return sorted(set(self.keys or ()) - set(names))

    def _discard(self, p: Path, why: str) -> None:
        warnings.warn(f"chunk {str(p)!r} is damaged ({why}); removed, it will be recomputed",
                      RuntimeWarning, stacklevel=3)
        with contextlib.suppress(OSError):
            p.unlink()

    def done(self) -> set[int]:
        """Indices of the chunks on disk that open as zip files and hold ``keys``.

        The check reads only each file's zip directory (cheap); full reads happen in
        :meth:`load`. Damaged files are removed with a ``RuntimeWarning``.
        """
        if not self.dir.is_dir():
            return set()
        out: set[int] = set()
        for entry in sorted(self.dir.iterdir()):
            m = _CHUNK_RE.match(entry.name)
            if not m or not entry.is_file():
                continue
            try:
                with zipfile.ZipFile(entry) as zf:
                    names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                self._discard(entry, f"not a readable npz: {type(e).__name__}")
                continue
            missing = self._missing(names)
            if missing:
                self._discard(entry, f"missing array(s) {missing}")
                continue
            out.add(int(m.group(1)))
        return out

    def load(self, i: int, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read chunk ``i`` (all arrays, or only ``names``).

        Returns:
            name -> array, as saved.

        Raises:
            ValueError: the file is missing, unreadable or lacks an array. A damaged file
                (bad zip, CRC error, truncated data) is removed first so that rerunning the
                sweep recomputes it.
        """
        p = self.path(i)
        if not p.is_file():
            raise ValueError(f"results: chunk {str(p)!r} is missing; run the sweep again")
        try:
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                wanted = list(z.files) if names is None else list(names)
                missing = sorted(set(self.keys or ()) - set(z.files)) + \
                    sorted(n for n in wanted if n not in z.files)
                if missing:
                    raise KeyError(f"missing array(s) {missing}")
                return {n: z[n] for n in wanted}
        except PermissionError as e:
            raise ValueError(f"results: chunk {str(p)!r} cannot be read ({e.strerror})") from None
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, zlib.error) as e:
            with contextlib.suppress(OSError):
                p.unlink()
            why = e.args[0] if isinstance(e, KeyError) and e.args else type(e).__name__
            raise ValueError(f"results: chunk {str(p)!r} is damaged ({why}); it was removed, "
                             "run the sweep again to recompute it") from None

    def iter_array(self, name: str, indices: Iterable[int]) -> Iterator[np.ndarray]:
        """Yield array ``name`` of each chunk in ``indices`` order, reading one at a time.

        Meant for :func:`write_history_from_chunks`: peak memory is one chunk of one array.
        """
        for i in indices:
            yield self.load(i, [name])[name]


# --------------------------------------------------------------------------------------------
# JSON helpers


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _jfloat(x: Any) -> float | None:
    """A JSON float: None for NaN/Inf; float32 values by their shortest float32 repr (0.1, not
    0.10000000149011612), so the text is short and fixed for a given bit pattern."""
    if x is None:
        return None
    if isinstance(x, np.floating) and x.dtype == np.float32:
        return float(str(x)) if np.isfinite(x) else None
    v = float(x)
    return v if math.isfinite(v) else None


def _f32(x: float) -> float | None:
    # Statistics are computed in float64 from float32 data; float32 precision is all they have.
    return _jfloat(np.float32(x)) if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    """Plain JSON types, with NaN/Inf -> None and NumPy scalars/arrays converted."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()] if obj.ndim else _jsonable(obj[()])
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _jfloat(obj)
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------
# Validation of a result (shared by the writers and load_result)


def _expected_names(config: Config) -> tuple[str, ...]:
    names = CURVES + LAYER_STATS
    if config.test_gradients:
        names += TEST_LAYER_STATS
    if config.hist_every > 0:
        names += HIST_ARRAYS + SHARED_ARRAYS
    return names


def _check_shapes(where: str, result: SweepResult, *, need_hist: bool = True) -> None:
    """Raise ValueError(f'{where} ...') unless the history matches the run table and grid.

    ``need_hist=False`` accepts a result without the histogram arrays (the summary needs
    none; a chunked sweep streams them from the chunk files into history.npz).
    """
    runs = result.runs
    r = len(runs)
    for f in ("seed", "depth", "width", "lr", "diverged_epoch", "weight_var", "bias_var"):
        a = np.asarray(getattr(runs, f))
        if a.shape != (r,):
            raise ValueError(f"{where} run table field {f} has shape {a.shape}; expected ({r},)")
        want = "f" if f in ("lr", "weight_var", "bias_var") else "iu"
        if a.dtype.kind not in want:
            raise ValueError(f"{where} run table field {f} has dtype {a.dtype}")
    n_grid = len(result.seeds) * _n_groups(result)
    if r != n_grid:
        raise ValueError(f"{where} has {r} runs; the grid has {n_grid}")
    _group_keys(where, result)
    h = result.history
    missing = [n for n in _expected_names(result.config) if n not in h
               and (need_hist or n not in HIST_ARRAYS)]
    if missing:
        raise ValueError(f"{where} lacks array(s) {', '.join(missing)}")
    e = result.config.epochs
    layers = result.n_layers
    want: dict[str, tuple[int, ...]] = {n: (r, e) for n in CURVES}
    want.update({n: (r, e, layers) for n in LAYER_STATS + TEST_LAYER_STATS if n in h})
    if "hist_epochs" in h and "hist_edges" in h:
        n_h = int(np.shape(h["hist_epochs"])[0]) if np.ndim(h["hist_epochs"]) == 1 else -1
        n_k = int(np.shape(h["hist_edges"])[0]) - 1 if np.ndim(h["hist_edges"]) == 1 else -1
        if n_h < 0 or n_k < 1:
            raise ValueError(f"{where} hist_epochs/hist_edges must be 1-d (edges with >= 2 values)")
        for n in ("grad_hist", "weight_hist"):
            want[n] = (r, n_h, layers, n_k)
        for n in ("grad_hist_stats", "weight_hist_stats"):
            want[n] = (r, n_h, layers, 4)
    for n, shape in want.items():
        if n not in h:
            continue
        got = np.shape(h[n])
        if got != shape:
            raise ValueError(f"{where} array {n} has shape {got}; expected {shape} "
                             f"(R={r} runs, E={e} epochs, L={layers} layers)")


# --------------------------------------------------------------------------------------------
# Summary


def _float_axes(result: SweepResult) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The float grid axes that group runs, each with its values (the config's if empty)."""
    c = result.config
    return (("lr", result.lrs or (c.lr,)), ("weight_var", result.weight_vars or (c.weight_var,)),
            ("bias_var", result.bias_vars or (c.bias_var,)))


def _n_groups(result: SweepResult) -> int:
    n = len(result.depths) * len(result.widths)
    for _, values in _float_axes(result):
        n *= len(values)
    return n


def _group_keys(where: str, result: SweepResult) -> np.ndarray:
    """[R] int64 index of each run's depth x width x lr x weight_var x bias_var group, in
    grid order.

    Raises ValueError if a run's depth, width, lr, weight_var or bias_var is not in the grid.
    """
    runs = result.runs
    # Floats are matched in the run table's own dtype: float32(0.1) != 0.1 as float64.
    maps = (
        ("depth", np.asarray(runs.depth), {int(v): i for i, v in enumerate(result.depths)}, int),
        ("width", np.asarray(runs.width), {int(v): i for i, v in enumerate(result.widths)}, int),
    ) + tuple(
        (name, np.asarray(getattr(runs, name)),
         {float(v): i for i, v in enumerate(np.asarray(values, dtype=np.asarray(getattr(runs, name)).dtype))},
         float)
        for name, values in _float_axes(result))
    key = np.zeros(len(runs), np.int64)
    for field, values, index, conv in maps:
        idx = np.array([index.get(conv(v), -1) for v in values.tolist()], np.int64)
        bad = np.flatnonzero(idx < 0)
        if bad.size:
            raise ValueError(f"{where} run {int(bad[0])} has {field} {values[bad[0]]!r}, "
                             "which is not in the grid")
        key = key * len(index) + idx
    return key


def final_values(result: SweepResult) -> dict[str, np.ndarray]:
    """Each run's final train/test loss and accuracy.

    The last finite value before the run diverged (see :func:`vgjax.result.final_metric`):
    the one at the last epoch, or at epoch ``d - 1`` for a run that diverged in epoch ``d``
    (1-based); NaN when no epoch qualifies (``d == 1``).

    Returns:
        curve name (``train_loss``, ...) -> [R] array of the history's dtype.
    """
    return {name: final_metric(result, name) for name in CURVES}


def package_versions() -> dict[str, str | None]:
    """Installed versions of jax, jaxlib, flax, optax and numpy (None if absent), read from
    package metadata so that nothing is imported."""
    out: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _stats(vals: np.ndarray) -> dict[str, float | None]:
    v = vals[np.isfinite(vals)].astype(np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": _f32(float(v.mean())), "std": _f32(float(v.std())),
            "min": _f32(float(v.min())), "max": _f32(float(v.max()))}


def build_summary(result: SweepResult, *, timing: Mapping[str, Any],
                  extra: Mapping[str, Any] | None = None,
                  learn_threshold: float = 0.7) -> dict[str, Any]:
    """The content of ``summary.json`` as plain JSON types (see :func:`write_summary`)."""
    if not (isinstance(learn_threshold, (int, float)) and 0.0 <= learn_threshold <= 1.0):
        raise ValueError(f"learn_threshold: {learn_threshold!r} is out of range; allowed: [0, 1]")
    _check_shapes("result:", result, need_hist=False)
    runs = result.runs
    finals = final_values(result)
    diverged = np.asarray(runs.diverged_epoch) >= 0
    lr_arr = np.asarray(runs.lr)
    wv_arr, bv_arr = np.asarray(runs.weight_var), np.asarray(runs.bias_var)

    run_rows = []
    for i in range(len(runs)):
        row: dict[str, Any] = {
            "seed": int(runs.seed[i]),
            "depth": int(runs.depth[i]),
            "width": int(runs.width[i]),
            "lr": _jfloat(lr_arr[i]),
            "weight_var": _jfloat(wv_arr[i]),
            "bias_var": _jfloat(bv_arr[i]),
            "diverged": bool(diverged[i]),
            "diverged_epoch": int(runs.diverged_epoch[i]) if diverged[i] else None,
        }
        for name in CURVES:
            row["final_" + name] = _jfloat(finals[name][i])
        run_rows.append(row)

    # One pass over the runs (not one mask per group): sort runs by their group's index.
    key = _group_keys("result:", result)
    (_, lrs), (_, wvs), (_, bvs) = _float_axes(result)
    order = np.argsort(key, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=_n_groups(result)))])
    test_all = finals["test_accuracy"]
    # The threshold is compared in the data's dtype, so an accuracy of exactly float32(0.7)
    # counts as reaching 0.7.
    thr = np.asarray(learn_threshold, dtype=test_all.dtype)
    learned_all = (~diverged) & np.isfinite(test_all) & (np.nan_to_num(test_all, nan=-1.0) >= thr)
    groups = []
    g = 0
    for depth in result.depths:
        for width in result.widths:
            for lr, wv, bv in itertools.product(lrs, wvs, bvs):
                sel = order[bounds[g]:bounds[g + 1]]
                g += 1
                n = int(sel.size)
                n_learn = int(learned_all[sel].sum())
                groups.append({
                    "depth": int(depth),
                    "width": int(width),
                    "lr": float(lr),
                    "weight_var": float(wv),
                    "bias_var": float(bv),
                    "n_seeds": n,
                    "n_diverged": int(diverged[sel].sum()),
                    "n_learn": n_learn,
                    "share_learn": n_learn / n if n else None,
                    "final_train_accuracy": _stats(finals["train_accuracy"][sel]),
                    "final_test_accuracy": _stats(test_all[sel]),
                })

    extra = dict(extra or {})
    versions: dict[str, Any] = dict(package_versions())
    clash = sorted(set(extra) & set(versions))
    if clash:
        raise ValueError(f"extra: key(s) {clash} clash with package versions; use other names")
    versions.update(extra)
    return _jsonable({
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "config": result.config.to_dict(),
        "grid": {"seeds": [int(s) for s in result.seeds], "depths": [int(d) for d in result.depths],
                 "widths": [int(w) for w in result.widths], "lrs": [float(x) for x in result.lrs],
                 "weight_vars": [float(x) for x in result.weight_vars],
                 "bias_vars": [float(x) for x in result.bias_vars]},
        "versions": versions,
        "learn_threshold": float(learn_threshold),
        "n_runs": len(runs),
        "runs": run_rows,
        "groups": groups,
        "timing": dict(timing),
    })


def write_summary(path: str | os.PathLike[str], result: SweepResult, *,
                  timing: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                  learn_threshold: float = 0.7) -> dict[str, Any]:
    """Write ``summary.json`` atomically; return what was written.

    Top-level fields: ``format`` ("vgjax.sweep"), ``version`` (1), ``config``
    (``Config.to_dict()``), ``grid`` (seeds/depths/widths/lrs lists), ``versions`` (jax,
    jaxlib, flax, optax, numpy from package metadata, plus the entries of ``extra`` such as
    ``{"device": "NVIDIA H200"}``), ``learn_threshold``, ``n_runs``, ``runs`` (one dict per
    run in run-axis order: seed, depth, width, lr, final_train_loss, final_test_loss,
    final_train_accuracy, final_test_accuracy, diverged, diverged_epoch (int or null); finals
    as in :func:`final_values`), ``groups`` (one per depth x width x lr in grid order:
    n_seeds, n_diverged, n_learn, share_learn = n_learn / n_seeds where a run learns if it did
    not diverge and its final test accuracy >= ``learn_threshold``, and mean/std/min/max of
    the final train and test accuracy over the seeds whose final value exists; std is the
    population std, ddof=0), and ``timing``.

    Everything but ``timing`` (and ``extra``) is a function of ``result`` only: keys are
    sorted, float32 values are written by their shortest repr, statistics are rounded to
    float32, NaN/Inf become ``null``. The JSON is strict (no NaN tokens).

    Args:
        path: destination, normally ``OUT/summary.json``.
        result: the finished sweep.
        timing: wall times and the like, e.g. ``{"compile_s": 3.1, "run_s": 40.2}``.
        extra: environment facts merged into ``versions`` (must not reuse package names).
        learn_threshold: test-accuracy threshold in [0, 1] for "learned".
    """
    summary = build_summary(result, timing=timing, extra=extra, learn_threshold=learn_threshold)
    atomic_write_text(path, _dumps(summary))
    return summary


# --------------------------------------------------------------------------------------------
# History


def _run_arrays(runs: RunTable) -> dict[str, np.ndarray]:
    return {
        "run_seed": np.asarray(runs.seed),
        "run_depth": np.asarray(runs.depth),
        "run_width": np.asarray(runs.width),
        "run_lr": np.asarray(runs.lr),
        "run_diverged_epoch": np.asarray(runs.diverged_epoch),
        "run_weight_var": np.asarray(runs.weight_var),
        "run_bias_var": np.asarray(runs.bias_var),
    }


def write_history(path: str | os.PathLike[str], result: SweepResult) -> None:
    """Write ``history.npz`` atomically: every array of ``result.history`` plus the run table.

    Members: the history arrays under their own names (shapes as in :mod:`vgjax.result`) and
    ``run_seed``, ``run_depth``, ``run_width``, ``run_lr``, ``run_diverged_epoch`` ([R] each).
    Deflate-compressed (mostly-NaN and mostly-zero arrays shrink a lot), no pickle, identical
    bytes to :func:`write_history_from_chunks` for the same data.
    """
    _check_shapes("result:", result)
    arrays = {**result.history, **_run_arrays(result.runs)}
    if len(arrays) != len(result.history) + len(RUN_ARRAYS):
        raise ValueError(f"result: history must not use the names {list(RUN_ARRAYS)}")
    checked = {k: _check_array(k, v) for k, v in arrays.items()}
    with _atomic_open(path) as f:
        _write_npz(f, {k: (lambda v=v: [v]) for k, v in checked.items()},
                   dict.fromkeys(checked), compress=True)


def write_history_from_chunks(path: str | os.PathLike[str], names: Sequence[str],
                              chunks_of: Callable[[str], Iterable[np.ndarray]], *,
                              runs: RunTable,
                              shared: Mapping[str, np.ndarray] | None = None) -> None:
    """Write ``history.npz`` from per-chunk arrays with peak memory of one chunk of one array.

    For each name, ``chunks_of(name)`` is called once and must yield that array's chunks in
    run order; the chunks are concatenated along axis 0 (runs) straight into the zip member
    (npy header for the full shape first, then each chunk's bytes). E.g. with a
    :class:`ChunkStore`: ``chunks_of = lambda n: store.iter_array(n, range(n_chunks))``.

    Args:
        path: destination, normally ``OUT/history.npz``.
        names: the per-run history arrays to write (leading axis R split over chunks).
        chunks_of: name -> iterable of [R_i, ...] arrays with equal dtype and trailing shape,
            sum of R_i = ``len(runs)``.
        runs: the full run table (written as ``run_*`` arrays).
        shared: arrays without a run axis, written whole (``hist_epochs``, ``hist_edges``).

    The file is byte-identical to :func:`write_history` of the concatenated data. On a
    mismatch (dtype, trailing shape, total rows) a ``ValueError`` is raised and nothing is
    left at ``path``.
    """
    shared = dict(shared or {})
    run_arrays = _run_arrays(runs)
    all_names = list(names) + list(shared) + list(run_arrays)
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"history: array names repeat across names/shared/run table: {all_names}")
    members: dict[str, Callable[[], Iterable[np.ndarray]]] = {}
    leading: dict[str, int | None] = {}
    for n in names:
        members[n] = (lambda n=n: chunks_of(n))
        leading[n] = len(runs)
    for n, v in {**shared, **run_arrays}.items():
        members[n] = (lambda v=v: [v])
        leading[n] = None
    with _atomic_open(path) as f:
        _write_npz(f, members, leading, compress=True)


# --------------------------------------------------------------------------------------------
# Loading


def _read_summary(p: Path) -> dict[str, Any]:
    label = str(p)
    if not p.is_file():
        raise ValueError(f"results: {label!r} is missing; run the sweep to completion first")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"results: {label!r} is not UTF-8 text") from None
    except OSError as e:
        raise ValueError(f"results: {label!r} cannot be read ({e.strerror})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise ValueError(f"results: {label!r} is not valid JSON (truncated?)") from None
    if not isinstance(data, dict):
        raise ValueError(f"results: {label!r} is not a JSON object")
    if data.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"results: {label!r} is not a vgjax sweep summary "
                         f"(format {data.get('format')!r}; expected {SUMMARY_FORMAT!r})")
    if data.get("version") != SUMMARY_VERSION:
        raise ValueError(f"results: {label!r} has version {data.get('version')!r}; "
                         f"this vgjax reads version {SUMMARY_VERSION}")
    for key, kind in (("config", dict), ("grid", dict), ("runs", list)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"results: {label!r} lacks a valid {key!r} entry")
    return data


class _PickledArray(Exception):
    """An npz member that only loads with pickle (its name is ``args[0]``)."""


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    label = str(p)
    if not p.is_file():
        raise ValueError(f"results: {label!r} is missing; run the sweep to completion first")
    try:
        # Our own handle: np.load leaks the one it opens when the zip directory is bad.
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            out = {}
            for n in z.files:
                try:
                    out[n] = z[n]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise _PickledArray(n) from None
            return out
    except _PickledArray as e:
        raise ValueError(f"results: {label!r} holds array {e.args[0]!r} of dtype object, which "
                         "needs pickle and is never loaded; allowed: bool, int, uint, float "
                         "arrays") from None
    except PermissionError as e:
        raise ValueError(f"results: {label!r} cannot be read ({e.strerror})") from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError, zlib.error) as e:
        raise ValueError(f"results: {label!r} is not a readable npz file (truncated or "
                         f"corrupt: {type(e).__name__})") from None


def load_result(out_dir: str | os.PathLike[str]) -> SweepResult:
    """Read ``summary.json`` and ``history.npz`` of a finished sweep and check them.

    Args:
        out_dir: the sweep's output directory.

    Returns:
        The :class:`SweepResult` (history arrays as stored; run table from ``run_*``).

    Raises:
        ValueError: one line naming the file and the problem: missing file, invalid or
            truncated JSON/npz, wrong ``format``, unsupported ``version``, invalid config or
            grid, missing arrays, shapes that do not match the run table/grid, or a run table
            that disagrees with the summary's runs.
    """
    out = Path(out_dir)
    sp, hp = out / SUMMARY_NAME, out / HISTORY_NAME
    summary = _read_summary(sp)
    where_s = f"results: {str(sp)!r}"
    try:
        config = Config.from_dict(summary["config"])
        g = summary["grid"]
        seeds = tuple(int(v) for v in g["seeds"])
        depths = tuple(int(v) for v in g["depths"])
        widths = tuple(int(v) for v in g["widths"])
        lrs = tuple(float(v) for v in g["lrs"])
        wvs = tuple(float(v) for v in g.get("weight_vars", ()))
        bvs = tuple(float(v) for v in g.get("bias_vars", ()))
        if not (seeds and depths and widths):
            raise ValueError("empty seeds/depths/widths")
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where_s} has an invalid config or grid ({e})") from None

    arrays = _read_npz(hp)
    where_h = f"results: {str(hp)!r}"
    missing = [n for n in RUN_ARRAYS if n not in arrays and n not in OPTIONAL_RUN_ARRAYS]
    if missing:
        raise ValueError(f"{where_h} lacks array(s) {', '.join(missing)}")
    runs = RunTable(seed=arrays["run_seed"], depth=arrays["run_depth"],
                    width=arrays["run_width"], lr=arrays["run_lr"],
                    diverged_epoch=arrays["run_diverged_epoch"],
                    weight_var=arrays.get("run_weight_var"), bias_var=arrays.get("run_bias_var"))
    history = {k: v for k, v in arrays.items() if k not in RUN_ARRAYS}
    result = SweepResult(config=config, seeds=seeds, depths=depths, widths=widths, lrs=lrs,
                         runs=runs, history=history, weight_vars=wvs, bias_vars=bvs)
    _check_shapes(where_h, result)

    rows = summary["runs"]
    if len(rows) != len(runs):
        raise ValueError(f"{where_s} lists {len(rows)} runs; {str(hp)!r} has {len(runs)}")
    for i, row in enumerate(rows):
        try:
            d_epoch = row["diverged_epoch"]
            same = (row["seed"] == int(runs.seed[i]) and row["depth"] == int(runs.depth[i])
                    and row["width"] == int(runs.width[i])
                    and (-1 if d_epoch is None else d_epoch) == int(runs.diverged_epoch[i]))
        except (KeyError, TypeError):
            same = False
        if not same:
            raise ValueError(f"{where_s} run {i} does not match the run table in {str(hp)!r} "
                             "(files from different sweeps?)")
    return result
