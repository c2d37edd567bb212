"""Tests for vgjax.io.tensorboard: event files read back with TensorBoard's own reader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX.record_writer import masked_crc32c

from vgjax.io import tensorboard as tb
from vgjax.io import tfevents
from vgjax.config import Config
from vgjax.result import CURVES, RunTable, SweepResult

NAN = np.nan
E, K = 6, 4
DIVERGED_RUN, DIVERGED_EPOCH = 3, 4


def make_result(lrs=()) -> SweepResult:
    """2 seeds x depths (1, 3) x width 4 (x lrs), 6 epochs, L = 4, histograms at 3 and 6.

    Runs (seed outermost): 0 = s0 d1, 1 = s0 d3, 2 = s1 d1, 3 = s1 d3. Depth-1 runs have NaN
    for layer indices 1, 2. Run 3 diverged in epoch 4: its loss is NaN from epoch 4 on and
    (nearly) everything is NaN after epoch 4. Run 1 has one NaN gradient in epoch 2 (not
    diverged).
    """
    seeds, depths, widths = (0, 1), (1, 3), (4,)
    lr_axis = lrs or (0.01,)
    rows = [(s, d, w, lr) for s in seeds for d in depths for w in widths for lr in lr_axis]
    R, L = len(rows), max(depths) + 1
    rng = np.random.default_rng(0)
    curves = {c: rng.uniform(0.1, 1.0, (R, E)).astype(np.float32) for c in CURVES}
    stats = {s: rng.uniform(0.01, 2.0, (R, E, L)).astype(np.float32)
             for s in ("grad_mean_abs", "grad_norm", "weight_l1", "test_grad_mean_abs",
                       "test_grad_norm")}
    hist_epochs = np.array([3, 6], np.int32)
    hists = {}
    for name in ("grad_hist", "weight_hist"):
        counts = rng.integers(0, 9, (R, 2, L, K)).astype(np.int32)
        counts[..., 0] = 0  # an empty leading bucket: dropped, counts still add up
        mn = rng.uniform(-1.0, -0.5, (R, 2, L))
        st = np.stack([mn, -mn, mn * 0.1, -mn * 3], axis=-1).astype(np.float32)
        hists[name], hists[name + "_stats"] = counts, st
    depth = np.array([d for _, d, _, _ in rows])
    for r in range(R):
        for arr in [*stats.values(), *(hists[n] for n in ("grad_hist", "weight_hist"))]:
            arr[r, :, depth[r]:L - 1] = 0 if arr.dtype.kind == "i" else NAN
        for n in ("grad_hist_stats", "weight_hist_stats"):
            hists[n][r, :, depth[r]:L - 1] = NAN
    diverged = np.full(R, -1, np.int32)
    if not lrs:
        # weight_l1 and the weight histogram stay finite after the divergence: the writer
        # must cut at diverged_epoch by itself, not only by the NaNs.
        diverged[DIVERGED_RUN] = DIVERGED_EPOCH
        for name, arr in [*curves.items(), *stats.items()]:
            if name != "weight_l1":
                arr[DIVERGED_RUN, DIVERGED_EPOCH:] = NAN
        curves["train_loss"][DIVERGED_RUN, DIVERGED_EPOCH - 1] = NAN
        hists["grad_hist_stats"][DIVERGED_RUN, 1] = NAN
        stats["grad_norm"][1, 1, 0] = NAN
    history = {**curves, **stats, **hists, "hist_epochs": hist_epochs,
               "hist_edges": np.linspace(-1, 1, K + 1, dtype=np.float32)}
    table = RunTable(seed=np.array([s for s, *_ in rows]), depth=depth,
                     width=np.array([w for _, _, w, _ in rows]),
                     lr=np.array([lr for *_, lr in rows]), diverged_epoch=diverged)
    config = Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                    epochs=E, hist_every=3, test_gradients=True)
    return SweepResult(config=config, seeds=seeds, depths=depths, widths=widths, lrs=tuple(lrs),
                       runs=table, history=history)


def load(path: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(path), size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The sweep written once, with every directory's accumulator."""
    result = make_result()
    logdir = tmp_path_factory.mktemp("tb")
    done = []
    dirs = tb.write_sweep(result, logdir, "relu_he", progress=done.append)
    assert sum(done) == len(dirs) == 4 + 2
    return result, logdir, dirs, {d.relative_to(logdir).as_posix(): load(d) for d in dirs}


def run_tags(result, r):
    """Expected scalar tag -> (history array name, layer index or None) of run r."""
    depth, L = int(result.runs.depth[r]), result.n_layers
    tags = {f"epoch/{c}": (c, None) for c in CURVES}
    for i in [*range(depth), L - 1]:
        name = tb.layer_name(i, depth, L)
        for stat, suffix in tb.LAYER_TAGS.items():
            tags[f"{name}/{suffix}"] = (stat, i)
    return tags


def expected(result, r, stat, i):
    """[E] values of run r the writer should write (NaN = nothing): nothing from the epoch in
    which the run diverged on (diverged_epoch is 1-based, so that is index d - 1)."""
    v = result.history[stat][r] if i is None else result.history[stat][r, :, i]
    v = v.astype(np.float64).copy()
    if result.runs.diverged_epoch[r] >= 0:
        v[result.runs.diverged_epoch[r] - 1:] = NAN
    return v


def check_series(acc, tag, values):
    events = acc.Scalars(tag) if np.isfinite(values).any() else []
    steps = [ev.step for ev in events]
    assert steps == [e + 1 for e in np.flatnonzero(np.isfinite(values))], tag
    np.testing.assert_allclose([ev.value for ev in events], values[np.isfinite(values)],
                               rtol=1e-6, err_msg=tag)


def test_names():
    result = make_result()
    assert tb.run_dir_names(result, "relu_he") == [
        "relu_he_d01_w04/seed00", "relu_he_d03_w04/seed00",
        "relu_he_d01_w04/seed01", "relu_he_d03_w04/seed01"]
    assert tb.run_dir_names(make_result(lrs=(1.0, 0.05)), "x")[:2] == [
        "x_d01_w04_lr1/seed00", "x_d01_w04_lr0.05/seed00"]
    for bad in ("../x", "a/../../b", "..", "/etc/passwd", "a b\\c\x00", "-rf"):
        for name in tb.run_dir_names(result, bad):
            config, seed = name.split("/")
            assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", config), config
            assert ".." not in config


def test_malicious_prefix_stays_inside(tmp_path):
    logdir = tmp_path / "logs"
    dirs = tb.write_sweep(make_result(), logdir, "../../escape", runs=[0])
    assert [p.parent.parent for p in dirs] == [logdir, logdir, logdir]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_layer_name():
    assert [tb.layer_name(i, 3, 4) for i in range(4)] == [
        "dense_1", "dense_2", "dense_3", "dense_4"]
    assert tb.layer_name(0, 1, 4) == "dense_1" and tb.layer_name(3, 1, 4) == "dense_2"
    with pytest.raises(ValueError):
        tb.layer_name(1, 1, 4)


def test_run_scalars_match_history(written):
    result, _, _, accs = written
    for r, name in enumerate(tb.run_dir_names(result, "relu_he")):
        acc = accs[name]
        tags = run_tags(result, r)
        metric_tags = {t for t in acc.Tags()["scalars"] if t.startswith("hparams/")}
        assert set(acc.Tags()["scalars"]) - metric_tags == set(tags)
        for tag, (stat, i) in tags.items():
            check_series(acc, tag, expected(result, r, stat, i))


def test_absent_layers_and_divergence(written):
    result, _, _, accs = written
    shallow = accs["relu_he_d01_w04/seed00"].Tags()
    layers = {t.split("/")[0] for t in shallow["scalars"] + shallow["histograms"]}
    assert layers == {"epoch", "hparams", "dense_1", "dense_2"}
    diverged = accs["relu_he_d03_w04/seed01"]
    steps = [ev.step for t in diverged.Tags()["scalars"] for ev in diverged.Scalars(t)]
    steps += [ev.step for t in diverged.Tags()["histograms"] for ev in diverged.Histograms(t)]
    # The epoch in which it diverged is not written (weight_l1 is finite there on purpose).
    assert max(steps) == DIVERGED_EPOCH - 1
    assert diverged.Scalars("hparams/diverged_epoch")[0].value == DIVERGED_EPOCH
    # Its final values are the last finite ones before that epoch, as in summary.json:
    # train_loss is NaN in epoch 4 too, so epoch 3's value.
    for c in CURVES:
        (ev,) = diverged.Scalars(f"hparams/final_{c}")
        assert ev.step == DIVERGED_EPOCH - 1
        assert ev.value == pytest.approx(result.history[c][DIVERGED_RUN, DIVERGED_EPOCH - 2])
    for acc in accs.values():
        for t in acc.Tags()["scalars"]:
            assert np.isfinite([ev.value for ev in acc.Scalars(t)]).all(), t
        for t in acc.Tags()["histograms"]:
            for ev in acc.Histograms(t):
                h = ev.histogram_value
                assert np.isfinite([h.min, h.max, h.num, h.sum, h.sum_squares,
                                    *h.bucket, *h.bucket_limit]).all(), t


def test_histograms(written):
    result, _, _, accs = written
    h = result.history
    edges = h["hist_edges"].astype(np.float64)
    for r, name in enumerate(tb.run_dir_names(result, "relu_he")):
        acc = accs[name]
        depth, last = int(result.runs.depth[r]), result.runs.diverged_epoch[r]
        seen = 0
        for arr, suffix in (("grad_hist", "kernel_0_grad"), ("weight_hist", "kernel_0")):
            for i in [*range(depth), result.n_layers - 1]:
                tag = f"{tb.layer_name(i, depth, result.n_layers)}/{suffix}"
                events = {ev.step: ev.histogram_value for ev in acc.Histograms(tag)}
                for k, epoch in enumerate(h["hist_epochs"]):
                    stats, counts = h[arr + "_stats"][r, k, i], h[arr][r, k, i]
                    if (last >= 0 and epoch >= last) or not np.isfinite(stats).all():
                        assert epoch not in events
                        continue
                    got = events[epoch]
                    nz = np.flatnonzero(counts)
                    assert got.num == counts.sum() == sum(got.bucket)
                    assert list(got.bucket) == counts[nz[0]:nz[-1] + 1].tolist()
                    np.testing.assert_array_equal(got.bucket_limit, edges[nz[0] + 1:nz[-1] + 2])
                    np.testing.assert_allclose([got.min, got.max, got.sum, got.sum_squares],
                                               stats, rtol=1e-6)
                    seen += 1
        assert seen == (4 * (depth + 1) if last < 0 else 2 * (depth + 1))


def test_mean_dirs(written):
    result, _, _, accs = written
    for depth, runs in ((1, [0, 2]), (3, [1, 3])):
        acc = accs[f"relu_he_d{depth:02d}_w04/mean"]
        tags = run_tags(result, runs[0])
        band = {t + s for t in tags for s in (tb.LOWER, tb.UPPER)}
        assert set(acc.Tags()["scalars"]) - {t for t in acc.Tags()["scalars"]
                                             if t.startswith("hparams/")} == set(tags) | band
        for tag, (stat, i) in tags.items():
            x = np.stack([expected(result, r, stat, i) for r in runs])
            with warnings.catch_warnings():  # all-NaN epochs: nothing may be written there
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
            check_series(acc, tag, mean)
            check_series(acc, tag + tb.LOWER, mean - std)
            check_series(acc, tag + tb.UPPER, mean + std)
        layout = layout_pb2.Layout.FromString(
            acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
        margins = {c.title: (c.margin.series[0].value, c.margin.series[0].lower,
                             c.margin.series[0].upper)
                   for cat in layout.category for c in cat.chart}
        for tag in ["epoch/test_accuracy", f"dense_{depth + 1}/kernel_0_grad/mean_abs"]:
            assert margins[tag] == (tag, tag + tb.LOWER, tag + tb.UPPER)
        # hparams finals: the seed mean of each run's last value before any divergence
        for c in CURVES:
            finals = []
            for r in runs:
                v = expected(result, r, c, None)
                finals.append(v[np.flatnonzero(np.isfinite(v))[-1]])
            (ev,) = acc.Scalars(f"hparams/final_{c}")
            assert ev.value == pytest.approx(np.mean(finals), rel=1e-6), c


def test_hparams(written):
    result, _, _, accs = written
    acc = accs["relu_he_d03_w04/seed01"]
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hp == {"activation": "relu", "init": "he_uniform", "output_init": "glorot_uniform",
                  "optimizer": "sgd", "lr": 0.01, "depth": 3, "width": 4, "seed": "1",
                  "batch_size": 32, "epochs": E, "data": "circles", "weight_var": 1.0,
                  "bias_var": 0.0}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {*tb.METRIC_TAGS.values(), tb.DIVERGED_TAG}
    # A healthy run has every final metric at its last epoch, equal to the curve's end.
    healthy = accs["relu_he_d03_w04/seed00"]
    for c in CURVES:
        (ev,) = healthy.Scalars(f"hparams/final_{c}")
        assert ev.step == E and ev.value == pytest.approx(result.history[c][1, -1])
    assert "hparams/diverged_epoch" not in healthy.Tags()["scalars"]
    mean = accs["relu_he_d01_w04/mean"].PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        mean["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["seed"].string_value == "mean"


def test_one_event_file_per_dir_and_rewrite(written, tmp_path):
    _, logdir, dirs, _ = written
    for d in dirs:
        assert len(list(d.glob("*tfevents*"))) == 1 and not list(d.glob(".*"))
    result = make_result()
    first = tb.write_sweep(result, tmp_path, "p", runs=[0], write_means=False)
    tb.write_sweep(result, tmp_path, "p", runs=[0], write_means=False)
    files = list(first[0].iterdir())
    assert len(files) == 1 and "tfevents" in files[0].name
    assert len(load(first[0]).Scalars("epoch/train_loss")) == E


def test_chunked_runs_and_means(tmp_path):
    result = make_result()
    done = []
    dirs = tb.write_sweep(result, tmp_path, "p", runs=[2, 1], write_means=False,
                          progress=done.append)
    assert [d.relative_to(tmp_path).as_posix() for d in dirs] == [
        "p_d01_w04/seed01", "p_d03_w04/seed00"]
    assert sum(done) == 2
    means = tb.write_means(result, tmp_path, "p")
    assert sorted(d.relative_to(tmp_path).as_posix() for d in means) == [
        "p_d01_w04/mean", "p_d03_w04/mean"]
    with pytest.raises(ValueError):
        tb.write_sweep(result, tmp_path, "p", runs=[4])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_error_midway_leaves_whole_files(tmp_path, monkeypatch):
    result = make_result()
    real = tb._run_events
    monkeypatch.setattr(tb, "_BATCH", 1)

    def flaky(res, r, *rest):
        if r == 2:
            raise RuntimeError("boom")
        return real(res, r, *rest)

    monkeypatch.setattr(tb, "_run_events", flaky)
    fds = _open_fds()
    with pytest.raises(RuntimeError, match="boom"):
        tb.write_sweep(result, tmp_path, "p")
    assert _open_fds() == fds

    # An error while the file is being put in place leaves no file and no partial file.
    monkeypatch.setattr(tb, "_run_events", real)
    monkeypatch.setattr(tb.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        tb.write_sweep(result, tmp_path, "p", runs=[3])
    assert _open_fds() == fds
    monkeypatch.undo()

    names = tb.run_dir_names(result, "p")
    for name in names[:2]:  # written before the error: one complete, readable file each
        (f,) = (tmp_path / name).iterdir()
        assert "tfevents" in f.name
        assert len(load(tmp_path / name).Scalars("epoch/test_loss")) == E
    assert not (tmp_path / names[2]).exists()
    assert list((tmp_path / names[3]).iterdir()) == []


def test_symlink_out_of_logdir_is_refused(tmp_path):
    outside, logdir = tmp_path / "outside", tmp_path / "logs"
    outside.mkdir()
    logdir.mkdir()
    (logdir / "p_d01_w04").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        tb.write_sweep(make_result(), logdir, "p", runs=[0])
    assert list(outside.iterdir()) == []


def test_tag_filters(written):
    """TensorBoard's tag filter is a regex search: one layer, or every gradient tag."""
    _, _, _, accs = written
    acc = accs["relu_he_d03_w04/seed00"]
    tags = acc.Tags()["scalars"] + acc.Tags()["histograms"]
    grads = {t for t in tags if re.search("kernel_0_grad", t)}
    assert grads == {f"dense_{k}/kernel_0_grad{s}" for k in range(1, 5)
                     for s in ("", "/mean_abs", "/norm", "_test/mean_abs", "_test/norm")}
    layer3 = {t for t in tags if re.search("dense_3/", t)}
    assert layer3 == {"dense_3/kernel_0_grad", "dense_3/kernel_0", "dense_3/kernel_0/l1",
                      *(f"dense_3/kernel_0_grad{s}" for s in
                        ("/mean_abs", "/norm", "_test/mean_abs", "_test/norm"))}


def test_crc_matches_tensorboardx():
    rng = np.random.default_rng(1)
    chunks = [rng.bytes(n) for n in (5, 8, 8, 9, 100, 101, 1500, 1499, 4000, 30)]
    assert tfevents.masked_crc32c(chunks) == [masked_crc32c(c) for c in chunks]


def test_module_does_not_import_jax():
    code = "import sys, vgjax.io.tensorboard; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_event_files_are_written_atomically_and_leftovers_cleaned(tmp_path, monkeypatch):
    """Every event file goes through vgjax.io.store's writer (fsync of file and directory); a
    killed writer's temporary file (never named *tfevents*, so TensorBoard skips it) is
    removed when the directory is written again."""
    from vgjax.io import store

    result = make_result()
    name = tb.run_dir_names(result, "p")[0]
    (tmp_path / name).mkdir(parents=True)
    stale = tmp_path / name / ".vgjax-123-abcdef012345.tmp"
    stale.write_bytes(b"half an event file")
    assert store.is_temp_name(stale.name) and "tfevents" not in stale.name
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    tb.write_sweep(result, tmp_path, "p", runs=[0], write_means=False)
    (f,) = (tmp_path / name).iterdir()
    assert "tfevents" in f.name and len(synced) >= 2  # the file, then its directory
    assert len(load(tmp_path / name).Scalars("epoch/test_loss")) == E
