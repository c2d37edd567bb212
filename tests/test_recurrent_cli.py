"""``vgjax rnn``: a grid written into a directory, its TensorBoard files read back with
TensorBoard's own reader, ``vgjax show``'s table, and bad values refused in one line with
nothing written.

Training itself is tested in test_recurrent_grid.py; here ``run_grid`` returns a made-up
result of the right shapes (NaN past each run's steps, as a real one), so the command's
plumbing is tested without compiling a program."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea

from vgjax import cli
from vgjax.recurrent import grid as rg

ARGS = ["rnn", "--cells", "rnn", "--lengths", "3,5", "--seeds", "0", "--clip-norm",
        "none,0.5", "--width", "4", "--steps", "4", "--eval-every", "2", "--batch-size", "4",
        "--test-size", "4", "--flow-examples", "2", "--lr", "0.05"]


def fake_run_grid(runs, spec):
    """A GridResult of ``runs`` with distinct finite values inside each run's steps and
    layers (NaN elsewhere; saturation NaN for rnn runs), as a real one."""
    runs = tuple(runs)
    r, n_eval, t_max = len(runs), spec.steps // spec.eval_every + 1, max(x.length for x in runs)
    depth = max(x.layers for x in runs)
    rng = np.random.default_rng(0)
    has = np.arange(depth)[None, None, :] < np.array([x.layers for x in runs])[:, None, None]
    inside = (np.arange(t_max) < np.array([x.length for x in runs])[:, None, None, None]) \
        & has[..., None]
    log_norm = np.where(inside, rng.normal(-3.0, 2.0, (r, n_eval, depth, t_max)), np.nan)
    f32 = lambda a: np.asarray(a, np.float32)
    per_layer = lambda lo, hi: f32(np.where(has, rng.uniform(lo, hi, (r, n_eval, depth)),
                                            np.nan))
    gated = np.array([x.cell != "rnn" for x in runs])[:, None, None]
    return rg.GridResult(
        runs=runs, train_loss=f32(rng.uniform(0.1, 1, (r, spec.steps))),
        grad_norm=f32(rng.uniform(0.1, 9, (r, spec.steps))),
        eval_steps=np.arange(n_eval) * spec.eval_every,
        test_loss=f32(rng.uniform(0.01, 0.3, (r, n_eval))), log_norm=f32(log_norm),
        log_rms=f32(log_norm + 0.1),
        saturation=np.where(gated, per_layer(0, 1), np.nan).astype(np.float32),
        lambda1=per_layer(0.5, 2), grad_input_kernel=per_layer(0.01, 1),
        grad_recurrent_kernel=per_layer(0.01, 1), grad_bias=per_layer(0.01, 1),
        compile_s=1.0, train_s=2.0)


def _train(tmp_path_factory, args):
    out = tmp_path_factory.mktemp("rnn") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rg, "run_grid", fake_run_grid)
        assert cli.main(args + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory, ARGS)


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """LSTMs of 1 and 3 layers (later flags override ARGS's)."""
    return _train(tmp_path_factory, ARGS + ["--cells", "lstm", "--layers", "1,3", "--lengths",
                                            "4", "--clip-norm", "none"])


def _acc(path):
    acc = ea.EventAccumulator(str(path), size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def test_files_and_tensorboard_read_back(trained):
    summary = json.loads((trained / "summary.json").read_text())
    hist = rg.read_history(trained)
    runs = [(r["length"], r["clip_norm"]) for r in summary["runs"]]
    assert runs == [(3, None), (3, 0.5), (5, None), (5, 0.5)]
    assert summary["settings"] == {"optimizer": "adam", "lr": 0.05}
    run_dirs = sorted(p.relative_to(trained / "tensorboard").as_posix()
                      for p in (trained / "tensorboard").glob("*/seed*"))
    assert run_dirs == ["rnn_tanh_orthogonal1_T3/seed00", "rnn_tanh_orthogonal1_T3_clip0.5/seed00",
                        "rnn_tanh_orthogonal1_T5/seed00", "rnn_tanh_orthogonal1_T5_clip0.5/seed00"]
    acc = _acc(trained / "tensorboard" / "rnn_tanh_orthogonal1_T5_clip0.5" / "seed00")
    tags = acc.Tags()
    assert {"train/loss", "train/grad_norm", "eval/test_loss", "eval/lambda1",
            "flow/log_norm_first", "flow/log_norm_last"} <= set(tags["scalars"])
    assert "eval/gate_saturation" not in tags["scalars"]          # NaN for rnn: not written
    assert not any("/layer" in t for t in tags["scalars"])        # one layer: no layer tags
    for name, kind in rg.LAYER_GRADS.items():
        np.testing.assert_allclose([e.value for e in acc.Scalars(f"grad/{kind}")],
                                   hist[name][3, :, 0], rtol=1e-6)
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in loss], hist["train_loss"][3], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("eval/test_loss")],
                               hist["test_loss"][3], rtol=1e-6)
    first = acc.Scalars("flow/log_norm_first")
    assert [e.step for e in first] == [0, 2, 4]
    np.testing.assert_allclose([e.value for e in first], hist["log_norm"][3, :, 0, 0],
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("flow/log_norm_last")],
                               hist["log_norm"][3, :, 0, 4], rtol=1e-6)
    # the per-step histogram holds one value per step t of the run (T = 5), at every evaluation
    h = acc.Histograms("flow/log_norm")
    assert [e.step for e in h] == [0, 2, 4]
    assert all(e.histogram_value.num == 5 for e in h)
    assert h[0].histogram_value.min == pytest.approx(np.nanmin(hist["log_norm"][3, 0, 0]),
                                                     rel=1e-5)
    # the image: one band per evaluation, one column per step of the longest run
    img = acc.Images("flow/log_norm_image")[-1]
    assert img.step == 4 and (img.width, img.height) == (5, 3 * 8)
    pixels = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
    short = _acc(trained / "tensorboard" / "rnn_tanh_orthogonal1_T3" / "seed00")
    px3 = np.asarray(Image.open(io.BytesIO(short.Images("flow/log_norm_image")[-1]
                                           .encoded_image_string)))
    assert (px3[:, 3:, :3] == 128).all() and not (px3[:, :3, :3] == 128).all(axis=-1).any()
    assert not (pixels[..., :3] == 128).all(axis=-1).any()


def test_stacked_runs_have_per_layer_files_and_tensorboard_tags(stacked):
    summary = json.loads((stacked / "summary.json").read_text())
    hist = rg.read_history(stacked)
    assert [(r["layers"], r["label"]) for r in summary["runs"]] == [(1, "lstm"), (3, "lstm-x3")]
    assert hist["log_norm"].shape == (2, 3, 3, 4) and hist["grad_bias"].shape == (2, 3, 3)
    assert np.isnan(hist["log_norm"][0, :, 1:]).all() and np.isfinite(hist["log_norm"][1]).all()
    assert [len(v) for v in summary["runs"][1]["final_layer_grads"].values()] == [3, 3, 3]
    deep = _acc(stacked / "tensorboard" / "lstm_x3_orthogonal1_fb1_T4" / "seed00")
    one = _acc(stacked / "tensorboard" / "lstm_orthogonal1_fb1_T4" / "seed00")
    assert not any("/layer" in t for t in one.Tags()["scalars"])
    for layer, suffix in enumerate(("", "/layer2", "/layer3")):
        for tag, want in (("eval/lambda1", hist["lambda1"][1, :, layer]),
                          ("eval/gate_saturation", hist["saturation"][1, :, layer]),
                          ("flow/log_norm_first", hist["log_norm"][1, :, layer, 0]),
                          ("flow/log_norm_last", hist["log_norm"][1, :, layer, 3]),
                          *((f"grad/{kind}", hist[name][1, :, layer])
                            for name, kind in rg.LAYER_GRADS.items())):
            got = deep.Scalars(tag + suffix)
            assert [e.step for e in got] == [0, 2, 4]
            np.testing.assert_allclose([e.value for e in got], want, rtol=1e-6, err_msg=tag)
        assert [e.histogram_value.num for e in deep.Histograms("flow/log_norm" + suffix)] == \
            [4, 4, 4]
        img = deep.Images("flow/log_norm_image" + suffix)[-1]
        assert (img.width, img.height) == (4, 3 * 8)
    assert "flow/log_norm_first/layer4" not in deep.Tags()["scalars"]


def test_show_prints_the_recurrent_columns(trained, stacked, capsys):
    assert cli.main(["show", str(trained)]) == 0
    text = capsys.readouterr().out
    head, *rows = [line for line in text.splitlines() if line.startswith(("cell", "rnn "))]
    assert head.split()[:8] == ["cell", "φ", "layers", "T", "init", "scale", "clip", "seeds"]
    assert [r.split()[:7] for r in rows] == [
        ["rnn", "tanh", "1", t, "orthogonal", "1", clip] for t in ("3", "5")
        for clip in ("-", "0.5")]
    summary = json.loads((trained / "summary.json").read_text())
    assert f"{summary['runs'][2]['final_test_loss']:.4g}" in rows[2]
    assert "4 runs" in text
    assert cli.main(["show", str(stacked)]) == 0
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("lstm ")]
    assert rows == [["lstm", "-", "1", "4"], ["lstm", "-", "3", "4"]]


@pytest.mark.parametrize("flags, message", [
    (["--lengths", "0"], "lengths: 0 is out of range"),
    (["--lengths", "1,5"], "lengths: 1 is out of range"),
    (["--cells", "rnn,lstn"], "cell: 'lstn' is not known"),
    (["--clip-norm", "0"], "clip_norm: 0.0 is out of range"),
    (["--clip-norm", "none,-1"], "clip_norm: -1.0 is out of range"),
    (["--optimizer", "rmsprop"], "optimizer"),
    (["--seeds", "4294967296"], "seed: 4294967296 is out of range"),
    (["--layers", "0"], "layers: 0 is out of range; allowed: integers >= 1"),
    (["--layers", "1,0"], "layers: 0 is out of range"),
    (["--layers", "1.5"], "layers: malformed range '1.5'"),
    (["--layers", "two"], "layers: malformed range 'two'"),
])
def test_bad_values_exit_2_in_one_line_and_write_nothing(flags, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(ARGS + flags + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_an_earlier_grid_is_kept_without_overwrite(trained, capsys):
    before = (trained / "summary.json").read_bytes()
    assert cli.main(ARGS + ["--out", str(trained)]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (trained / "summary.json").read_bytes() == before
