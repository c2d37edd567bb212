"""vgjax.io.outdir: claiming an output directory (new, resume, overwrite, refuse) and the chunk store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vgjax.io import outdir
from vgjax.io import store
from vgjax.io.chunk_store import ChunkStore
from vgjax.config import Config, Grid
from tests.results_data import strict_loads, listing


# --- output directory ---------------------------------------------------------------------


def manifest(**changes):
    grid = changes.pop("grid", Grid(seeds=(0, 1), depths=(1, 2), widths=(5,)))
    return outdir.make_manifest(Config(**changes), grid)


def test_prepare_new_dir_writes_manifest(tmp_path):
    out = tmp_path / "a" / "b"
    assert outdir.prepare_out_dir(out, manifest(), overwrite=False) == out
    m = strict_loads((out / "manifest.json").read_text())
    assert m["format"] == "vgjax.manifest" and m["version"] == 1
    assert m["config"] == Config().to_dict() and m["grid"]["depths"] == [1, 2]
    assert listing(out) == ["manifest.json"]


def test_prepare_refuses_file_and_path_below_file(tmp_path):
    f = tmp_path / "x"
    f.write_text("")
    with pytest.raises(ValueError, match=r"^out: '.*x' is a file; allowed: a directory path$"):
        outdir.prepare_out_dir(f, manifest(), overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        outdir.prepare_out_dir(f / "sub", manifest(), overwrite=True)
    assert listing(tmp_path) == ["x"]


def test_prepare_bad_manifest_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="manifest"):
        outdir.prepare_out_dir(tmp_path / "new", {"config": {}}, overwrite=False)
    assert listing(tmp_path) == []


def _deny_probes(monkeypatch, directory: Path):
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        p = Path(path)
        if p.parent == directory and p.name.startswith(".vgjax-probe"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(store.os, "open", fake_open)


def test_prepare_unwritable_simulated(tmp_path, monkeypatch):
    _deny_probes(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"^out: '.*new' is not writable \(Permission denied"):
        outdir.prepare_out_dir(tmp_path / "new", manifest(), overwrite=False)
    assert listing(tmp_path) == []  # nothing created
    existing = tmp_path / "existing"
    existing.mkdir()
    _deny_probes(monkeypatch, existing)
    with pytest.raises(ValueError, match="is not writable"):
        outdir.prepare_out_dir(existing, manifest(), overwrite=False)
    assert listing(existing) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_prepare_unwritable_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            outdir.prepare_out_dir(ro / "new", manifest(), overwrite=False)
    finally:
        ro.chmod(0o700)


def _fill(out: Path):
    (out / "chunks").mkdir()
    (out / "chunks" / "chunk_00000.npz").write_bytes(b"x")
    (out / "summary.json").write_text("{}")
    (out / "history.npz").write_bytes(b"x")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")


def test_prepare_different_config_refused_then_overwritten(tmp_path):
    out = tmp_path / "out"
    outdir.prepare_out_dir(out, manifest(lr=0.01), overwrite=False)
    _fill(out)
    with pytest.raises(ValueError) as e:
        outdir.prepare_out_dir(out, manifest(lr=0.1), overwrite=False)
    assert str(e.value) == (f"out: '{out}' holds a sweep with a different config "
                            "(field lr: 0.01 != 0.1); pass --overwrite to replace it")
    with pytest.raises(ValueError, match=r"different grid \(field depths: \[1, 2\] != \[3\]\)"):
        outdir.prepare_out_dir(out, manifest(grid=Grid(seeds=(0, 1), depths=(3,), widths=(5,))),
                           overwrite=False)
    assert (out / "summary.json").exists()  # refusal touches nothing
    outdir.prepare_out_dir(out, manifest(lr=0.1), overwrite=True)
    assert listing(out) == ["manifest.json", "notes.txt"]  # foreign file kept
    assert strict_loads((out / "manifest.json").read_text())["config"]["lr"] == 0.1


def test_a_manifest_older_than_a_field_resumes_at_its_default(tmp_path):
    # results/ written before Config.bias_var and Grid.weight_vars existed (as committed
    # results once were): the same sweep at the defaults, another one otherwise
    import json
    out = tmp_path / "out"
    outdir.prepare_out_dir(out, manifest(), overwrite=False)
    _fill(out)
    old = json.loads((out / "manifest.json").read_text())
    del old["config"]["bias_var"], old["config"]["weight_var"], old["grid"]["weight_vars"]
    (out / "manifest.json").write_text(json.dumps(old))
    assert outdir.prepare_out_dir(out, manifest(), overwrite=False) == out
    assert (out / "summary.json").exists()  # resumed: nothing removed
    with pytest.raises(ValueError, match=r"different config \(field bias_var: 0.0 != 0.05\)"):
        outdir.prepare_out_dir(out, manifest(bias_var=0.05), overwrite=False)


def test_prepare_same_config_resumes(tmp_path):
    out = tmp_path / "out"
    outdir.prepare_out_dir(out, manifest(), overwrite=False)
    _fill(out)
    stale = out / "chunks" / ".chunk_00001.npz.tmp-123-abcd1234"
    stale.write_bytes(b"partial")
    outdir.prepare_out_dir(str(out), manifest(), overwrite=False)
    assert (out / "chunks" / "chunk_00000.npz").exists() and not stale.exists()
    # overwrite with the same config starts afresh
    outdir.prepare_out_dir(out, manifest(), overwrite=True)
    assert listing(out) == ["manifest.json", "notes.txt"]


def test_prepare_unreadable_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"config": ')
    with pytest.raises(ValueError, match="unreadable manifest.json; pass --overwrite"):
        outdir.prepare_out_dir(out, manifest(), overwrite=False)
    outdir.prepare_out_dir(out, manifest(), overwrite=True)
    assert strict_loads((out / "manifest.json").read_text())["version"] == 1


def test_prepare_foreign_dir_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds no vgjax sweep.*'thesis.tex'"):
            outdir.prepare_out_dir(out, manifest(), overwrite=overwrite)
    assert listing(out) == ["thesis.tex"]


def test_prepare_leftovers_without_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "chunks").mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="leftovers.*--overwrite"):
        outdir.prepare_out_dir(out, manifest(), overwrite=False)
    outdir.prepare_out_dir(out, manifest(), overwrite=True)
    assert listing(out) == ["manifest.json"]


def test_prepare_empty_existing_dir(tmp_path):
    outdir.prepare_out_dir(tmp_path, manifest(), overwrite=False)
    assert listing(tmp_path) == ["manifest.json"]


# --- chunks -------------------------------------------------------------------------------


def test_chunk_store_roundtrip(tmp_path):
    store = ChunkStore(tmp_path, keys=["a", "b"])
    assert store.done() == set()
    assert store.path(12) == tmp_path / "chunks" / "chunk_00012.npz"
    with pytest.raises(ValueError):
        store.path(-1)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    store.save(0, {"a": a, "b": np.array([1, 2], np.int32)})
    store.save(12, {"a": a + 1, "b": np.array([3, 4], np.int32)})
    with pytest.raises(ValueError, match="missing array"):
        store.save(3, {"a": a})
    assert store.done() == {0, 12}
    got = store.load(12)
    np.testing.assert_array_equal(got["a"], a + 1)
    assert set(store.load(0, ["b"])) == {"b"}
    assert [c.tolist() for c in store.iter_array("b", [0, 12])] == [[1, 2], [3, 4]]
    assert listing(tmp_path / "chunks") == ["chunk_00000.npz", "chunk_00012.npz"]


def test_chunk_store_damaged_chunks(tmp_path):
    store = ChunkStore(tmp_path, keys=["a"])
    big = np.arange(4096, dtype=np.float32)
    for i in range(3):
        store.save(i, {"a": big + i})
    # 1: truncated (no zip directory) -> done() removes it with a warning
    p1 = store.path(1)
    p1.write_bytes(p1.read_bytes()[:100])
    # 2: a flipped data byte (zip directory intact) -> only load() notices, via the CRC
    p2 = store.path(2)
    data = bytearray(p2.read_bytes())
    data[1000] ^= 0xFF
    p2.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert store.done() == {0, 2}
    assert not p1.exists()
    with pytest.raises(ValueError, match=r"chunk '.*chunk_00002.npz' is damaged.*removed"):
        store.load(2)
    assert not p2.exists()
    assert store.done() == {0}
    with pytest.raises(ValueError, match="missing"):
        store.load(1)
    # a chunk without an expected key
    ChunkStore(tmp_path).save(5, {"other": big})
    with pytest.warns(RuntimeWarning, match="missing array"):
        assert store.done() == {0}
