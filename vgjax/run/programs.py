"""Traced grid programs kept on disk, so a second process skips tracing and lowering.

JAX's persistent compilation cache (:mod:`vgjax.runtime`) stores compiled executables keyed
by the *lowered* program, so every process still traces and lowers its programs before it
can look them up: for W600 that was most of a second process's compile time. This module
keeps the lowered program itself, as a serialized :class:`jax.export.Exported`, next to
JAX's cache entries (``<compilation cache>/vgjax-programs/``):

* :func:`program_key` names everything that determines the program: the static config
  fields, the chunk shape and engine, the mesh (device count, platform, kind), the jax,
  jaxlib and Python versions, the JAX options that change tracing, and a hash of vgjax's
  own source. A program that depends on user code (a callable activation, optimizer, loss)
  or that spans several processes gets no key and is always traced.
* :func:`load` returns the stored program only if its header repeats the key exactly and
  its payload hash matches; anything else (missing, truncated, corrupt, written by another
  version) is ``None`` and the caller traces as before. :func:`save` writes atomically and
  never fails the sweep.

Both the first and every later process compile the *deserialized* program (``jit`` of
``Exported.call``), so the persistent compilation cache sees one module either way and the
second process finds the executable the first one compiled.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from vgjax.io.store import atomic_write_bytes

SUBDIR = "vgjax-programs"
FORMAT = 1
_MAGIC = b"vgjax-exported\n"
# JAX options that change what a function traces to (the rest only change compilation,
# which the persistent compilation cache keys itself).
_TRACE_OPTIONS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl",
                  "jax_numpy_dtype_promotion", "jax_numpy_rank_promotion",
                  "jax_threefry_partitionable", "jax_use_shardy_partitioner")
# Config fields that may hold user code: a program built from them cannot be keyed.
_CODE_FIELDS = ("activation", "optimizer", "loss")


# The vgjax package's directory (this module is vgjax/run/programs.py): every file below it
# can change a traced program, so all of them key it.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def source_files() -> list[Path]:
    """Every ``.py`` file of the vgjax package, sorted: what :func:`source_hash` reads."""
    return sorted(PACKAGE_ROOT.rglob("*.py"))


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 of every ``.py`` file of the vgjax package (relative path and bytes)."""
    h = hashlib.sha256()
    for p in source_files():
        h.update(str(p.relative_to(PACKAGE_ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def program_dir() -> Path | None:
    """Where programs are kept: ``vgjax-programs`` inside JAX's compilation cache directory
    in effect, or None when that cache is off (a program that is not compiled from the
    cache afterwards would save nothing)."""
    import jax
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / SUBDIR if cache else None


def program_key(static_config, shape: dict, mesh) -> str | None:
    """The JSON text naming one grid program, or None if it cannot be keyed.

    ``static_config``: the :class:`vgjax.config.Config` with per-run values normalised;
    ``shape``: the plan's static numbers (max_depth, p, chunk_size, engine, ...); ``mesh``:
    the 1-D device mesh. None when there is no compilation cache to compile from (tracing
    is then cheaper than exporting), for user code in the config, or for a mesh over
    several processes.
    """
    import jax
    import jaxlib

    if program_dir() is None:
        return None
    if any(not (getattr(static_config, f) is None or isinstance(getattr(static_config, f), str))
           for f in _CODE_FIELDS):
        return None
    if jax.process_count() > 1:
        return None
    dev = mesh.devices.flat[0]
    try:
        config = static_config.to_dict()
        options = {name: str(getattr(jax.config, name, None)) for name in _TRACE_OPTIONS}
        key = {"format": FORMAT, "config": config, "shape": shape,
               "mesh": {"axes": list(mesh.axis_names), "devices": int(mesh.devices.size),
                        "platform": dev.platform, "kind": dev.device_kind},
               "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                            "python": list(sys.version_info[:3]), "vgjax": source_hash()},
               "options": options}
        return json.dumps(key, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # something in the config that JSON cannot name
        return None


def _path(directory: Path, key: str) -> Path:
    return directory / (hashlib.sha256(key.encode()).hexdigest() + ".exported")


def _header(key: str, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return _MAGIC + key.encode() + b"\n" + digest.encode() + b"\n"


def save(key: str, exported, directory: Path | None = None) -> bytes | None:
    """Serialize ``exported`` under ``key`` (atomically); returns the payload, or None if
    it could not be serialized. A cache that cannot be written is skipped silently."""
    try:
        payload = bytes(exported.serialize())
    except Exception:  # noqa: BLE001 - e.g. flatbuffers missing: keep tracing every time
        return None
    directory = directory or program_dir()
    if directory is not None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(_path(directory, key), _header(key, payload) + payload)
        except OSError:
            pass
    return payload


def load_payload(key: str, directory: Path | None = None) -> bytes | None:
    """The stored payload for ``key`` if its header and hash check out, else None (a bad
    file is removed so the next process writes a good one)."""
    directory = directory or program_dir()
    if directory is None:
        return None
    path = _path(directory, key)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    prefix = _MAGIC + key.encode() + b"\n"
    if blob.startswith(prefix):
        digest, sep, payload = blob[len(prefix):].partition(b"\n")
        if sep and hashlib.sha256(payload).hexdigest().encode() == digest:
            return payload
    discard(key, directory)
    return None


def discard(key: str, directory: Path | None = None) -> None:
    """Remove the stored program for ``key`` (if any)."""
    directory = directory or program_dir()
    if directory is not None:
        try:
            os.unlink(_path(directory, key))
        except OSError:
            pass


def deserialize(payload: bytes):
    """The :class:`jax.export.Exported` in ``payload``, or None if it does not parse."""
    import jax
    try:
        return jax.export.deserialize(bytearray(payload))
    except Exception:  # noqa: BLE001 - a corrupt or foreign payload: trace instead
        return None


def register_namedtuples(*types: type) -> None:
    """Let :func:`jax.export` serialize programs whose inputs are these NamedTuples (by
    module and class name); registering a type again is a no-op."""
    import jax
    for t in types:
        if t in _registered:
            continue
        try:
            jax.export.register_namedtuple_serialization(
                t, serialized_name=f"{t.__module__}.{t.__qualname__}")
        except ValueError:  # registered already (e.g. the module was reloaded)
            pass
        _registered.add(t)


_registered: set[type] = set()
