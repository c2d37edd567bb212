"""Tests for vgjax.io: atomic writes, paths, output directories, chunks, summary, history."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vgjax import io
from vgjax.config import Config, Grid
from vgjax.result import RunTable, SweepResult

NAN = np.nan


def _strict_loads(text: str):
    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=bad)


def make_result(seeds=(0, 1, 2)) -> SweepResult:
    """6 runs: depths (1, 2) x seeds (0, 1, 2), width 3, lr 0.1, 3 epochs, L = 3.

    Depth-1 runs have NaN for layer index 1 (hidden layer 2 does not exist). Run 3 diverged
    in epoch 3 (final = epoch 2), run 4 in epoch 1 (no final value).
    """
    config = Config(epochs=3, hist_every=2)
    depths, widths, lrs = (1, 2), (3,), (0.1,)
    rows = [(s, d) for d in depths for s in seeds]
    r = len(rows)
    test_acc = np.array([
        [0.5, 0.6, 0.9],
        [0.5, 0.7, 0.8],
        [0.5, 0.5, 0.6],
        [0.5, 0.75, NAN],
        [NAN, NAN, NAN],
        [0.5, 0.6, 0.7],
    ], np.float32)[:r]
    train_acc = (test_acc + np.float32(0.05)).astype(np.float32)
    train_loss = np.linspace(1.0, 0.1, r * 3, dtype=np.float32).reshape(r, 3)
    train_loss[3, 2] = NAN
    train_loss[4:5, :] = NAN
    test_loss = (train_loss * 2).astype(np.float32)
    layer = np.arange(r * 3 * 3, dtype=np.float32).reshape(r, 3, 3)
    layer[:3, :, 1] = NAN  # depth-1 runs have no second hidden layer
    k = 4
    hist = np.arange(r * 1 * 3 * k, dtype=np.int32).reshape(r, 1, 3, k)
    stats = np.ones((r, 1, 3, 4), np.float32)
    history = {
        "train_loss": train_loss, "test_loss": test_loss,
        "train_accuracy": train_acc, "test_accuracy": test_acc,
        "grad_mean_abs": layer, "grad_norm": layer * 2, "weight_l1": layer + 1,
        "hist_epochs": np.array([2], np.int32),
        "hist_edges": np.linspace(-1, 1, k + 1, dtype=np.float32),
        "grad_hist": hist, "grad_hist_stats": stats,
        "weight_hist": hist + 1, "weight_hist_stats": stats * 2,
    }
    runs = RunTable(
        seed=np.array([s for s, _ in rows], np.int32),
        depth=np.array([d for _, d in rows], np.int32),
        width=np.full(r, 3, np.int32),
        lr=np.full(r, 0.1, np.float32),
        diverged_epoch=np.array([-1, -1, -1, 3, 1, -1], np.int32)[:r],
    )
    return SweepResult(config=config, seeds=tuple(seeds), depths=depths, widths=widths,
                       lrs=lrs, runs=runs, history=history)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --- atomic writes ------------------------------------------------------------------------


def test_atomic_write_roundtrip(tmp_path):
    io.atomic_write_text(tmp_path / "a.txt", "héllo")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    io.atomic_write_bytes(tmp_path / "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"new"
    assert listing(tmp_path) == ["a.txt"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old")

    def boom(fd):
        raise OSError(5, "simulated I/O error")
    monkeypatch.setattr(io.os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        io.atomic_write_text(tmp_path / "a.txt", "new")
    with pytest.raises(OSError, match="simulated"):
        io.atomic_write_bytes(tmp_path / "b.bin", b"x" * 1000)
    assert listing(tmp_path) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_streamed_write_failing_midway_leaves_nothing(tmp_path):
    res = make_result()

    def chunks_of(name):
        yield res.history[name][:3]
        raise RuntimeError("killed mid-way")
    with pytest.raises(RuntimeError, match="mid-way"):
        io.write_history_from_chunks(tmp_path / "history.npz", ["train_loss"], chunks_of,
                                     runs=res.runs)
    assert listing(tmp_path) == []


def test_atomic_save_npz_roundtrip_deterministic_and_no_pickle(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.int64).reshape(2, 3), "a": np.array([True, False]),
              "f": np.array([1.5, NAN], np.float32), "s": np.float64(3.0)}
    io.atomic_save_npz(tmp_path / "x.npz", arrays)
    io.atomic_save_npz(tmp_path / "y.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "x.npz").read_bytes() == (tmp_path / "y.npz").read_bytes()
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["a", "b", "f", "s"]
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == np.asarray(v).dtype
    for bad in (np.array([{"x": 1}], dtype=object), np.array(["text"]),
                np.zeros(2, dtype=[("a", "f4")])):
        with pytest.raises(ValueError, match="not allowed"):
            io.atomic_save_npz(tmp_path / "z.npz", {"a": bad})
    with pytest.raises(ValueError, match="not allowed"):
        io.atomic_save_npz(tmp_path / "z.npz", {"../evil": np.zeros(1)})
    assert not (tmp_path / "z.npz").exists()
    assert listing(tmp_path) == ["x.npz", "y.npz"]


# --- names and paths ----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("relu_he-uniform.v2", "relu_he-uniform.v2"),
    ("a/b", "a_b"),
    ("../../etc/passwd", "___.._etc_passwd"),
    ("/abs", "_abs"),
    ("", "_"),
    (".", "_"),
    ("..", "__"),
    (".hidden", "_hidden"),
    ("sp ace\\x\x00é", "sp_ace_x__"),
])
def test_sanitize_name(text, expected):
    assert io.sanitize_name(text) == expected


def test_sanitize_name_long_names_stay_distinct():
    a, b = io.sanitize_name("x" * 300 + "a"), io.sanitize_name("x" * 300 + "b")
    assert a != b and len(a) <= 209 and len(b) <= 209


def test_safe_join(tmp_path):
    assert io.safe_join(tmp_path, "runs", "a") == tmp_path / "runs" / "a"
    for parts in (("..",), ("a", "..", ".."), ("/etc",), ("",), (".",), ("a", ".."),
                  (str(tmp_path / "x"),)):
        with pytest.raises(ValueError, match="path:"):
            io.safe_join(tmp_path, *parts)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        io.safe_join(tmp_path / "root", "link", "x")
    # sanitized names are always safe
    assert io.safe_join(tmp_path, io.sanitize_name("..")).parent == tmp_path


# --- output directory ---------------------------------------------------------------------


def manifest(**changes):
    grid = changes.pop("grid", Grid(seeds=(0, 1), depths=(1, 2), widths=(5,)))
    return io.make_manifest(Config(**changes), grid)


def test_prepare_new_dir_writes_manifest(tmp_path):
    out = tmp_path / "a" / "b"
    assert io.prepare_out_dir(out, manifest(), overwrite=False) == out
    m = _strict_loads((out / "manifest.json").read_text())
    assert m["format"] == "vgjax.manifest" and m["version"] == 1
    assert m["config"] == Config().to_dict() and m["grid"]["depths"] == [1, 2]
    assert listing(out) == ["manifest.json"]


def test_prepare_refuses_file_and_path_below_file(tmp_path):
    f = tmp_path / "x"
    f.write_text("")
    with pytest.raises(ValueError, match=r"^out: '.*x' is a file; allowed: a directory path$"):
        io.prepare_out_dir(f, manifest(), overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        io.prepare_out_dir(f / "sub", manifest(), overwrite=True)
    assert listing(tmp_path) == ["x"]


def test_prepare_bad_manifest_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="manifest"):
        io.prepare_out_dir(tmp_path / "new", {"config": {}}, overwrite=False)
    assert listing(tmp_path) == []


def _deny_probes(monkeypatch, directory: Path):
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        p = Path(path)
        if p.parent == directory and p.name.startswith(".vgjax-probe"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(io.os, "open", fake_open)


def test_prepare_unwritable_simulated(tmp_path, monkeypatch):
    _deny_probes(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"^out: '.*new' is not writable \(Permission denied"):
        io.prepare_out_dir(tmp_path / "new", manifest(), overwrite=False)
    assert listing(tmp_path) == []  # nothing created
    existing = tmp_path / "existing"
    existing.mkdir()
    _deny_probes(monkeypatch, existing)
    with pytest.raises(ValueError, match="is not writable"):
        io.prepare_out_dir(existing, manifest(), overwrite=False)
    assert listing(existing) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_prepare_unwritable_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            io.prepare_out_dir(ro / "new", manifest(), overwrite=False)
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
    io.prepare_out_dir(out, manifest(lr=0.01), overwrite=False)
    _fill(out)
    with pytest.raises(ValueError) as e:
        io.prepare_out_dir(out, manifest(lr=0.1), overwrite=False)
    assert str(e.value) == (f"out: '{out}' holds a sweep with a different config "
                            "(field lr: 0.01 != 0.1); pass --overwrite to replace it")
    with pytest.raises(ValueError, match=r"different grid \(field depths: \[1, 2\] != \[3\]\)"):
        io.prepare_out_dir(out, manifest(grid=Grid(seeds=(0, 1), depths=(3,), widths=(5,))),
                           overwrite=False)
    assert (out / "summary.json").exists()  # refusal touches nothing
    io.prepare_out_dir(out, manifest(lr=0.1), overwrite=True)
    assert listing(out) == ["manifest.json", "notes.txt"]  # foreign file kept
    assert _strict_loads((out / "manifest.json").read_text())["config"]["lr"] == 0.1


def test_prepare_same_config_resumes(tmp_path):
    out = tmp_path / "out"
    io.prepare_out_dir(out, manifest(), overwrite=False)
    _fill(out)
    stale = out / "chunks" / ".chunk_00001.npz.tmp-123-abcd1234"
    stale.write_bytes(b"partial")
    io.prepare_out_dir(str(out), manifest(), overwrite=False)
    assert (out / "chunks" / "chunk_00000.npz").exists() and not stale.exists()
    # overwrite with the same config starts afresh
    io.prepare_out_dir(out, manifest(), overwrite=True)
    assert listing(out) == ["manifest.json", "notes.txt"]


def test_prepare_unreadable_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"config": ')
    with pytest.raises(ValueError, match="unreadable manifest.json; pass --overwrite"):
        io.prepare_out_dir(out, manifest(), overwrite=False)
    io.prepare_out_dir(out, manifest(), overwrite=True)
    assert _strict_loads((out / "manifest.json").read_text())["version"] == 1


def test_prepare_foreign_dir_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds no vgjax sweep.*'thesis.tex'"):
            io.prepare_out_dir(out, manifest(), overwrite=overwrite)
    assert listing(out) == ["thesis.tex"]


def test_prepare_leftovers_without_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "chunks").mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="leftovers.*--overwrite"):
        io.prepare_out_dir(out, manifest(), overwrite=False)
    io.prepare_out_dir(out, manifest(), overwrite=True)
    assert listing(out) == ["manifest.json"]


def test_prepare_empty_existing_dir(tmp_path):
    io.prepare_out_dir(tmp_path, manifest(), overwrite=False)
    assert listing(tmp_path) == ["manifest.json"]


# --- chunks -------------------------------------------------------------------------------


def test_chunk_store_roundtrip(tmp_path):
    store = io.ChunkStore(tmp_path, keys=["a", "b"])
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
    store = io.ChunkStore(tmp_path, keys=["a"])
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
    io.ChunkStore(tmp_path).save(5, {"other": big})
    with pytest.warns(RuntimeWarning, match="missing array"):
        assert store.done() == {0}


# --- summary ------------------------------------------------------------------------------


def f32(x):
    return float(np.float32(x))


def test_summary_content(tmp_path):
    res = make_result()
    s = io.write_summary(tmp_path / "summary.json", res, timing={"run_s": 1.5},
                         extra={"device": "cpu"})
    on_disk = _strict_loads((tmp_path / "summary.json").read_text())
    assert on_disk == s
    assert s["format"] == "vgjax.sweep" and s["version"] == 1
    assert s["config"] == res.config.to_dict()
    assert s["grid"] == {"seeds": [0, 1, 2], "depths": [1, 2], "widths": [3], "lrs": [0.1],
                         "weight_vars": [], "bias_vars": []}  # no variance axes
    assert s["versions"]["device"] == "cpu"
    assert set(s["versions"]) == {"jax", "jaxlib", "flax", "optax", "numpy", "device"}
    assert s["versions"]["numpy"] == np.__version__
    assert s["timing"] == {"run_s": 1.5} and s["learn_threshold"] == 0.7

    runs = s["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2, 0, 1, 2]
    assert [r["depth"] for r in runs] == [1, 1, 1, 2, 2, 2]
    assert runs[0]["lr"] == 0.1  # float32 written by its shortest repr
    assert [r["final_test_accuracy"] for r in runs] == [0.9, 0.8, 0.6, 0.75, None, 0.7]
    assert [r["diverged"] for r in runs] == [False] * 3 + [True, True, False]
    assert [r["diverged_epoch"] for r in runs] == [None] * 3 + [3, 1, None]
    # run 3 diverged in epoch 3: its finals are epoch 2's values
    assert runs[3]["final_train_loss"] == float(str(res.history["train_loss"][3, 1]))
    assert runs[3]["final_train_accuracy"] == 0.8
    assert runs[4]["final_train_loss"] is None and runs[4]["final_test_loss"] is None

    g1, g2 = s["groups"]
    assert (g1["depth"], g1["width"], g1["lr"]) == (1, 3, 0.1)
    assert (g1["n_seeds"], g1["n_diverged"], g1["n_learn"]) == (3, 0, 2)
    assert g1["share_learn"] == pytest.approx(2 / 3)
    v = np.array([f32(0.9), f32(0.8), f32(0.6)])
    t = g1["final_test_accuracy"]
    assert t["mean"] == pytest.approx(v.mean(), rel=1e-6)
    assert t["std"] == pytest.approx(np.sqrt(((v - v.mean()) ** 2).mean()), rel=1e-6)
    assert t["std"] == pytest.approx(0.1247219, rel=1e-5)
    assert (t["min"], t["max"]) == (0.6, 0.9)
    assert g1["final_train_accuracy"]["mean"] == pytest.approx(v.mean() + 0.05, rel=1e-6)
    # depth 2: run 3 diverged (0.75 before divergence) and run 4 diverged with no value;
    # only run 5 (0.7 >= 0.7) learns, the stats cover the two runs with a final value
    assert (g2["n_seeds"], g2["n_diverged"], g2["n_learn"]) == (3, 2, 1)
    assert g2["share_learn"] == pytest.approx(1 / 3)
    t = g2["final_test_accuracy"]
    assert t["mean"] == pytest.approx(0.725, rel=1e-6)
    assert t["std"] == pytest.approx(0.025, rel=1e-5)
    assert (t["min"], t["max"]) == (0.7, 0.75)


def test_summary_all_nan_group_and_threshold(tmp_path):
    res = make_result()
    s = io.build_summary(res, timing={}, learn_threshold=0.95)
    assert [g["n_learn"] for g in s["groups"]] == [0, 0]
    with pytest.raises(ValueError, match="learn_threshold"):
        io.build_summary(res, timing={}, learn_threshold=1.5)
    with pytest.raises(ValueError, match="clash"):
        io.build_summary(res, timing={}, extra={"jax": "x"})


def test_summary_is_strict_and_reproducible(tmp_path):
    res = make_result()
    io.write_summary(tmp_path / "a.json", res, timing={"run_s": 1.0, "bad": float("nan")})
    io.write_summary(tmp_path / "b.json", res, timing={"run_s": 99.25, "compile_s": 3.0})
    ta, tb = (tmp_path / "a.json").read_text(), (tmp_path / "b.json").read_text()
    assert "NaN" not in ta and "Infinity" not in ta
    a, b = _strict_loads(ta), _strict_loads(tb)
    assert a["timing"] == {"run_s": 1.0, "bad": None}
    a.pop("timing"), b.pop("timing")
    assert json.dumps(a, indent=2, sort_keys=True) == json.dumps(b, indent=2, sort_keys=True)
    # identical inputs give identical bytes
    io.write_summary(tmp_path / "c.json", res, timing={"run_s": 1.0, "bad": float("nan")})
    assert (tmp_path / "c.json").read_text() == ta
    # the timing block is the only place the texts differ
    strip = [line for line in ta.splitlines() if "_s\"" not in line and "\"bad\"" not in line]
    strip_b = [line for line in tb.splitlines() if "_s\"" not in line]
    assert strip == strip_b


# --- history ------------------------------------------------------------------------------


def test_history_roundtrip(tmp_path):
    res = make_result()
    io.write_history(tmp_path / "history.npz", res)
    with np.load(tmp_path / "history.npz", allow_pickle=False) as z:
        for k, v in res.history.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == v.dtype
        np.testing.assert_array_equal(z["run_seed"], res.runs.seed)
        np.testing.assert_array_equal(z["run_lr"], res.runs.lr)
        np.testing.assert_array_equal(z["run_diverged_epoch"], res.runs.diverged_epoch)
        assert set(z.files) == set(res.history) | set(io.RUN_ARRAYS)


def test_history_streamed_equals_in_memory(tmp_path):
    res = make_result()
    io.write_history(tmp_path / "a.npz", res)
    store = io.ChunkStore(tmp_path)
    per_run = [k for k in res.history if k not in io.SHARED_ARRAYS]
    bounds = [(0, 2), (2, 5), (5, 6)]
    for i, (lo, hi) in enumerate(bounds):
        store.save(i, {k: res.history[k][lo:hi] for k in per_run})
    calls = []

    def chunks_of(name):
        calls.append(name)
        return store.iter_array(name, range(len(bounds)))
    shared = {k: res.history[k] for k in io.SHARED_ARRAYS}
    io.write_history_from_chunks(tmp_path / "b.npz", per_run, chunks_of, runs=res.runs,
                                 shared=shared)
    assert sorted(calls) == sorted(per_run)  # one pass per array
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_history_streamed_mismatch(tmp_path):
    res = make_result()
    with pytest.raises(ValueError, match="expected 6"):
        io.write_history_from_chunks(tmp_path / "h.npz", ["train_loss"],
                                     lambda n: [res.history[n][:4]], runs=res.runs)
    with pytest.raises(ValueError, match="does not match"):
        io.write_history_from_chunks(
            tmp_path / "h.npz", ["train_loss"],
            lambda n: [res.history[n][:3], res.history[n][3:].astype(np.float64)], runs=res.runs)
    assert listing(tmp_path) == []


# --- load_result --------------------------------------------------------------------------


def write_all(out: Path, res: SweepResult) -> None:
    out.mkdir(exist_ok=True)
    io.write_summary(out / "summary.json", res, timing={"run_s": 1.0})
    io.write_history(out / "history.npz", res)


def test_load_result_roundtrip(tmp_path):
    res = make_result()
    write_all(tmp_path, res)
    got = io.load_result(tmp_path)
    assert got.config == res.config
    assert (got.seeds, got.depths, got.widths, got.lrs) == (res.seeds, res.depths, res.widths,
                                                            res.lrs)
    for f in ("seed", "depth", "width", "lr", "diverged_epoch"):
        np.testing.assert_array_equal(getattr(got.runs, f), getattr(res.runs, f))
    assert set(got.history) == set(res.history)
    for k in res.history:
        np.testing.assert_array_equal(got.history[k], res.history[k])


def test_load_result_errors(tmp_path):
    res = make_result()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^results: '.*summary.json' is missing"):
        io.load_result(out)
    write_all(out, res)
    sp, hp = out / "summary.json", out / "history.npz"
    text, blob = sp.read_text(), hp.read_bytes()

    sp.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"^results: '.*summary.json' is not valid JSON \(truncated\?\)$"):
        io.load_result(out)
    sp.write_text(text.replace('"version": 1', '"version": 7'))
    with pytest.raises(ValueError, match=r"has version 7; this vgjax reads version 1$"):
        io.load_result(out)
    sp.write_text(text.replace('"vgjax.sweep"', '"other"'))
    with pytest.raises(ValueError, match="not a vgjax sweep summary"):
        io.load_result(out)
    sp.write_text(text)

    hp.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"^results: '.*history.npz' is not a readable npz"):
        io.load_result(out)
    hp.unlink()
    with pytest.raises(ValueError, match=r"history.npz' is missing"):
        io.load_result(out)

    # a missing history array
    hist = dict(res.history)
    del hist["grad_norm"]
    arrays = {**hist, "run_seed": res.runs.seed, "run_depth": res.runs.depth,
              "run_width": res.runs.width, "run_lr": res.runs.lr,
              "run_diverged_epoch": res.runs.diverged_epoch}
    io.atomic_save_npz(hp, arrays)
    with pytest.raises(ValueError, match=r"history.npz' lacks array\(s\) grad_norm$"):
        io.load_result(out)
    # a shape that disagrees with the run table
    arrays["grad_norm"] = res.history["grad_norm"][:, :, :2]
    io.atomic_save_npz(hp, arrays)
    with pytest.raises(ValueError, match=r"array grad_norm has shape \(6, 3, 2\); expected \(6, 3, 3\)"):
        io.load_result(out)
    # a history from a different sweep (fewer runs than the summary's grid)
    io.write_history(hp, make_result(seeds=(0, 1)))
    with pytest.raises(ValueError, match="has 4 runs; the grid has 6"):
        io.load_result(out)


def test_no_lr_axis_no_histograms_roundtrip(tmp_path):
    res = make_result()
    hist = {k: v for k, v in res.history.items()
            if k not in io.SHARED_ARRAYS and "hist" not in k}
    res = SweepResult(config=Config(epochs=3, hist_every=0, lr=0.1), seeds=res.seeds,
                      depths=res.depths, widths=res.widths, lrs=(), runs=res.runs,
                      history=hist)
    write_all(tmp_path, res)
    s = _strict_loads((tmp_path / "summary.json").read_text())
    assert s["grid"]["lrs"] == []
    assert [(g["lr"], g["n_seeds"]) for g in s["groups"]] == [(0.1, 3), (0.1, 3)]
    got = io.load_result(tmp_path)
    assert got.lrs == () and set(got.history) == set(hist)


def test_run_outside_grid_is_rejected(tmp_path):
    res = make_result()
    runs = RunTable(seed=res.runs.seed, depth=res.runs.depth, width=res.runs.width,
                    lr=np.full(6, 0.2, np.float32), diverged_epoch=res.runs.diverged_epoch)
    bad = SweepResult(config=res.config, seeds=res.seeds, depths=res.depths,
                      widths=res.widths, lrs=res.lrs, runs=runs, history=res.history)
    with pytest.raises(ValueError, match="run 0 has lr .* not in the grid"):
        io.write_summary(tmp_path / "s.json", bad, timing={})
    assert listing(tmp_path) == []
