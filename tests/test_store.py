"""vgjax.io.store: the atomic writer, npz files, the name sanitiser, safe paths."""

from __future__ import annotations

import numpy as np
import pytest

from vgjax.io import history
from vgjax.io import store
from tests.results_data import make_result, listing, NAN


# --- atomic writes ------------------------------------------------------------------------


def test_atomic_write_roundtrip(tmp_path):
    store.atomic_write_text(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    store.atomic_write_bytes(tmp_path / "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"new"
    assert listing(tmp_path) == ["a.txt"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old")

    def boom(fd):
        raise OSError(5, "simulated I/O error")
    monkeypatch.setattr(store.os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        store.atomic_write_text(tmp_path / "a.txt", "new")
    with pytest.raises(OSError, match="simulated"):
        store.atomic_write_bytes(tmp_path / "b.bin", b"x" * 1000)
    assert listing(tmp_path) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_atomic_file_temp_names_and_directory_fsync(tmp_path, monkeypatch):
    """The temporary file is unique per process and writer, hidden, never named like the
    target (so no *tfevents* half-file for TensorBoard), and file and directory are fsynced."""
    import os
    import stat

    seen, synced = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: synced.append(
        stat.S_ISDIR(os.fstat(fd).st_mode)) or real_fsync(fd))
    for _ in range(2):
        with store.atomic_file(tmp_path / "events.out.tfevents.1.host") as f:
            seen += [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
            f.write(b"x")
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(store.is_temp_name(n) and str(os.getpid()) in n and "tfevents" not in n
               for n in seen)
    assert synced == [False, True, False, True]  # the file, then the directory, each time
    assert listing(tmp_path) == ["events.out.tfevents.1.host"]


def test_streamed_write_failing_midway_leaves_nothing(tmp_path):
    res = make_result()

    def chunks_of(name):
        yield res.history[name][:3]
        raise RuntimeError("killed mid-way")
    with pytest.raises(RuntimeError, match="mid-way"):
        history.write_history_from_chunks(tmp_path / "history.npz", ["train_loss"], chunks_of,
                                     runs=res.runs)
    assert listing(tmp_path) == []


def test_atomic_save_npz_roundtrip_deterministic_and_no_pickle(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.int64).reshape(2, 3), "a": np.array([True, False]),
              "f": np.array([1.5, NAN], np.float32), "s": np.float64(3.0),
              "t": np.array(["rezero", "1"])}  # fixed-width text loads without pickle
    store.atomic_save_npz(tmp_path / "x.npz", arrays)
    store.atomic_save_npz(tmp_path / "y.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "b", "f", "s", "t"]
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == np.asarray(v).dtype
    for bad in (np.array([{"x": 1}], dtype=object), np.zeros(2, dtype=[("a", "f4")])):
        with pytest.raises(ValueError, match="not allowed"):
            store.atomic_save_npz(tmp_path / "z.npz", {"a": bad})
    with pytest.raises(ValueError, match="not allowed"):
        store.atomic_save_npz(tmp_path / "z.npz", {"../evil": np.zeros(1)})
    assert not (tmp_path / "z.npz").exists()
    assert listing(tmp_path) == ["x.npz", "y.npz"]


# --- names and paths ----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("relu_he-uniform.v2", "relu_he-uniform.v2"),
    ("a/b", "a_b"),
    ("../../etc/passwd", "______etc_passwd"),
    ("a..b.c", "a__b.c"),
    ("-rf", "_rf"),
    ("1e-05", "1e-05"),
    ("/abs", "_abs"),
    ("", "_"),
    (".", "_"),
    ("..", "__"),
    (".hidden", "_hidden"),
    ("sp ace\\x\x00é", "sp_ace_x__"),
])
def test_sanitize_name(text, expected):
    assert store.sanitize_name(text) == expected


def test_sanitize_name_long_names_stay_distinct():
    a, b = store.sanitize_name("x" * 300 + "a"), store.sanitize_name("x" * 300 + "b")
    assert a != b and len(a) <= 209 and len(b) <= 209


def test_safe_join(tmp_path):
    assert store.safe_join(tmp_path, "runs", "a") == tmp_path / "runs" / "a"
    for parts in (("..",), ("a", "..", ".."), ("/etc",), ("",), (".",), ("a", ".."),
                  (str(tmp_path / "x"),)):
        with pytest.raises(ValueError, match="path:"):
            store.safe_join(tmp_path, *parts)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        store.safe_join(tmp_path / "root", "link", "x")
    # sanitized names are always safe
    assert store.safe_join(tmp_path, store.sanitize_name("..")).parent == tmp_path
