"""vgjax.io.history: history.npz written whole or streamed from chunks, and load_result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vgjax import result
from vgjax.io import history
from vgjax.io import store
from vgjax.io import summary
from vgjax.io.chunk_store import ChunkStore
from vgjax.config import Config
from vgjax.result import SweepResult
from tests.results_data import make_result, strict_loads, listing


# --- history ------------------------------------------------------------------------------


def test_history_roundtrip(tmp_path):
    res = make_result()
    history.write_history(tmp_path / "history.npz", res)
    with np.load(tmp_path / "history.npz", allow_pickle=False) as z:
        for k, v in res.history.items():
            np.testing.assert_array_equal(z[k], v)
            assert z[k].dtype == v.dtype
        np.testing.assert_array_equal(z["run_seed"], res.runs.seed)
        np.testing.assert_array_equal(z["run_lr"], res.runs.lr)
        np.testing.assert_array_equal(z["run_diverged_epoch"], res.runs.diverged_epoch)
        assert set(z.files) == set(res.history) | set(history.run_arrays(res.runs))


def test_history_streamed_equals_in_memory(tmp_path):
    res = make_result()
    history.write_history(tmp_path / "a.npz", res)
    store = ChunkStore(tmp_path)
    per_run = [k for k in res.history if k not in result.SHARED_ARRAYS]
    bounds = [(0, 2), (2, 5), (5, 6)]
    for i, (lo, hi) in enumerate(bounds):
        store.save(i, {k: res.history[k][lo:hi] for k in per_run})
    calls = []

    def chunks_of(name):
        calls.append(name)
        return store.iter_array(name, range(len(bounds)))
    shared = {k: res.history[k] for k in result.SHARED_ARRAYS}
    history.write_history_from_chunks(tmp_path / "b.npz", per_run, chunks_of, runs=res.runs,
                                 shared=shared)
    assert sorted(calls) == sorted(per_run)  # one pass per array
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_history_streamed_mismatch(tmp_path):
    res = make_result()
    with pytest.raises(ValueError, match="expected 6"):
        history.write_history_from_chunks(tmp_path / "h.npz", ["train_loss"],
                                     lambda n: [res.history[n][:4]], runs=res.runs)
    with pytest.raises(ValueError, match="does not match"):
        history.write_history_from_chunks(
            tmp_path / "h.npz", ["train_loss"],
            lambda n: [res.history[n][:3], res.history[n][3:].astype(np.float64)], runs=res.runs)
    assert listing(tmp_path) == []


# --- load_result --------------------------------------------------------------------------


def write_all(out: Path, res: SweepResult) -> None:
    out.mkdir(exist_ok=True)
    summary.write_summary(out / "summary.json", res, timing={"run_s": 1.0})
    history.write_history(out / "history.npz", res)


def test_load_result_roundtrip(tmp_path):
    res = make_result()
    write_all(tmp_path, res)
    got = history.load_result(tmp_path)
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
        history.load_result(out)
    write_all(out, res)
    sp, hp = out / "summary.json", out / "history.npz"
    text, blob = sp.read_text(), hp.read_bytes()

    sp.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"^results: '.*summary.json' is not valid JSON \(truncated\?\)$"):
        history.load_result(out)
    sp.write_text(text.replace('"version": 1', '"version": 7'))
    with pytest.raises(ValueError, match=r"has version 7; this vgjax reads version 1$"):
        history.load_result(out)
    sp.write_text(text.replace('"vgjax.sweep"', '"other"'))
    with pytest.raises(ValueError, match="not a vgjax sweep summary"):
        history.load_result(out)
    sp.write_text(text)

    hp.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"^results: '.*history.npz' is not a readable npz"):
        history.load_result(out)
    hp.unlink()
    with pytest.raises(ValueError, match=r"history.npz' is missing"):
        history.load_result(out)

    # a missing history array
    hist = dict(res.history)
    del hist["grad_norm"]
    arrays = {**hist, "run_seed": res.runs.seed, "run_depth": res.runs.depth,
              "run_width": res.runs.width, "run_lr": res.runs.lr,
              "run_diverged_epoch": res.runs.diverged_epoch}
    store.atomic_save_npz(hp, arrays)
    with pytest.raises(ValueError, match=r"history.npz' lacks array\(s\) grad_norm$"):
        history.load_result(out)
    # a shape that disagrees with the run table
    arrays["grad_norm"] = res.history["grad_norm"][:, :, :2]
    store.atomic_save_npz(hp, arrays)
    with pytest.raises(ValueError, match=r"array grad_norm has shape \(6, 3, 2\); expected \(6, 3, 3\)"):
        history.load_result(out)
    # a history from a different sweep (fewer runs than the summary's grid)
    history.write_history(hp, make_result(seeds=(0, 1)))
    with pytest.raises(ValueError, match="has 4 runs; the grid has 6"):
        history.load_result(out)


def test_no_lr_axis_no_histograms_roundtrip(tmp_path):
    res = make_result()
    hist = {k: v for k, v in res.history.items()
            if k not in result.SHARED_ARRAYS and "hist" not in k}
    res = SweepResult(config=Config(epochs=3, hist_every=0, lr=0.1), seeds=res.seeds,
                      depths=res.depths, widths=res.widths, lrs=(), runs=res.runs,
                      history=hist)
    write_all(tmp_path, res)
    s = strict_loads((tmp_path / "summary.json").read_text())
    assert s["grid"]["lrs"] == []
    assert [(g["lr"], g["n_seeds"]) for g in s["groups"]] == [(0.1, 3), (0.1, 3)]
    got = history.load_result(tmp_path)
    assert got.lrs == () and set(got.history) == set(hist)
