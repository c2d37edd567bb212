"""Files on disk: the one atomic writer, the one name sanitiser, npz files and strict JSON.

Every file vgjax writes goes through :func:`atomic_file` (summary, history, chunks, manifest,
figures, reports, TensorBoard event files):

* the data goes to a temporary file in the target's directory whose name is unique per
  process and writer (``.vgjax-<pid>-<random>.tmp``: hidden, and without the target's name
  so that TensorBoard never mistakes a half-written event file for a real one), is flushed
  and ``fsync``-ed, ``os.replace``-d over the final name, and the directory is ``fsync``-ed
  so the rename itself is durable; on any error the temporary file is removed and an
  existing file under the final name is left as it was.
* No pickle: arrays must have plain bool/int/uint/float dtypes and are always read with
  ``np.load(..., allow_pickle=False)``.
* JSON is strict (NaN/Inf are written as ``null``) and deterministic (``sort_keys``, fixed
  float formatting), so identical results give byte-identical files.
* npz files are written by one zip writer with fixed member order (sorted names) and fixed
  timestamps, so a history streamed chunk by chunk and one written whole have equal bytes.

This module never imports jax.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

import numpy as np

# bool, signed int, unsigned int, float, and fixed-width unicode text (the run table's
# architecture names): nothing that needs pickle
_ALLOWED_KINDS = "biufU"
# Temporary files of this writer, and (second pattern) of vgjax versions before it.
_TMP_RE = re.compile(r"^\.vgjax-\d+-[0-9a-f]+\.tmp$|^\..+\.tmp-\d+-[0-9a-f]+$")
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")
_DOTS_RE = re.compile(r"\.{2,}")
_WRITE_BLOCK = 1 << 22  # bytes per write into a zip member
_MAX_NAME = 200  # leaves room under the usual 255-byte limit for suffixes such as ".npz"


# --------------------------------------------------------------------------------------------
# Atomic writes


def _tmp_path(path: Path) -> Path:
    # Same directory as the target so os.replace never crosses file systems; pid + random
    # make it unique per writer, the leading dot hides it.
    return path.with_name(f".vgjax-{os.getpid()}-{secrets.token_hex(6)}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_file` (a killed writer's leftover)."""
    return bool(_TMP_RE.match(name))


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
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the ``with`` body succeeds.

    The file is a temporary one in ``path``'s directory (which must exist); on success it is
    flushed, fsynced, renamed over ``path`` and the directory is fsynced. On any error it is
    removed, ``path`` is left as it was, and the error propagates.
    """
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
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------------------------
# npz files


def check_array(name: str, arr: Any) -> np.ndarray:
    """``arr`` as an ndarray; ``ValueError`` unless its dtype is bool, int, uint, float or
    fixed-width unicode text."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
        raise ValueError(
            f"array {name!r}: dtype {arr.dtype} is not allowed; allowed: bool, int, uint, "
            f"float, text"
        )
    return arr


def _check_member_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"array name {name!r} is not allowed; allowed: a plain non-empty name")


def write_npz(f: BinaryIO, members: Mapping[str, Callable[[], Iterable[np.ndarray]]],
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
                first = check_array(name, next(pieces))
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
                    piece = check_array(name, piece)
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
    checked = {k: check_array(k, v) for k, v in arrays.items()}
    for k in checked:
        _check_member_name(k)
    with atomic_file(path) as f:
        write_npz(f, {k: (lambda v=v: [v]) for k, v in checked.items()},
                  dict.fromkeys(checked), compress=compress)


# --------------------------------------------------------------------------------------------
# Names and paths


def sanitize_name(text: str) -> str:
    """Turn a run or experiment name into one safe path component.

    The one sanitiser of every name that becomes a path (experiment names, TensorBoard run
    directories, host names in event-file names). Keeps ``[A-Za-z0-9_.-]`` and replaces
    every other character with ``_``; so does it with every dot of a run of two or more
    (no ``..`` anywhere) and with leading dots and dashes (no hidden names, nothing a shell
    reads as an option). An empty result becomes ``_``, and names longer than 200
    characters are cut and given a short hash of the full text so distinct long names stay
    distinct. Different inputs can map to the same output (``a/b`` and ``a_b``).

    Args:
        text: any string.

    Returns:
        A non-empty string of at most 209 characters matching
        ``[A-Za-z0-9_][A-Za-z0-9_.-]*`` without ``..``.
    """
    if not isinstance(text, str):
        raise ValueError(f"name: {text!r} is not a string")
    out = _NAME_RE.sub("_", text)
    out = _DOTS_RE.sub(lambda m: "_" * len(m.group()), out)
    stripped = out.lstrip(".-")
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


class _PickledArray(Exception):
    """An npz member that only loads with pickle (its name is ``args[0]``)."""


def read_npz(p: Path) -> dict[str, np.ndarray]:
    """Every array of the npz file ``p``, loaded without pickle.

    Raises ``ValueError`` (one line naming the file) when it is missing, unreadable, not an
    npz file, truncated or corrupt, or holds an object array (which would need pickle).
    """
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


# --------------------------------------------------------------------------------------------
# Strict, deterministic JSON


def reject_constant(token: str) -> Any:
    """``parse_constant`` for ``json.loads``: refuse the non-standard NaN/Infinity tokens."""
    raise ValueError(f"non-standard JSON constant {token}")


def json_float(x: Any) -> float | None:
    """A JSON float: None for NaN/Inf; float32 values by their shortest float32 repr (0.1, not
    0.10000000149011612), so the text is short and fixed for a given bit pattern."""
    if x is None:
        return None
    if isinstance(x, np.floating) and x.dtype == np.float32:
        return float(str(x)) if np.isfinite(x) else None
    v = float(x)
    return v if math.isfinite(v) else None


def json_f32(x: float) -> float | None:
    """A float64 statistic rounded to float32, as :func:`json_float` writes it."""
    # Statistics are computed in float64 from float32 data; float32 precision is all they have.
    return json_float(np.float32(x)) if math.isfinite(x) else None


def jsonable(obj: Any) -> Any:
    """Plain JSON types, with NaN/Inf -> None and NumPy scalars/arrays converted."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()] if obj.ndim else jsonable(obj[()])
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    return obj


def dumps_json(obj: Any) -> str:
    """``obj`` as indented JSON text with sorted keys and a final newline (strict: no NaN)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"

