"""The chunk store that makes a sweep resumable: ``OUT/chunks/chunk_NNNNN.npz``, one file per
chunk of runs, written atomically; damaged files are found and removed so the sweep
recomputes them. The output directory around it is :mod:`vgjax.io.outdir`'s.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from vgjax.io.outdir import CHUNKS_DIR
from vgjax.io.store import atomic_save_npz

_CHUNK_RE = re.compile(r"^chunk_(\d+)\.npz$")


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
