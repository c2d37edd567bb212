"""Tests for vgjax.figures on small hand-built SweepResults (no jax, no training)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from vgjax import figures
from vgjax.figures import common
from vgjax.config import Config
from vgjax.result import RunTable, SweepResult, final_metric, group_indices

E = 6  # epochs in the synthetic results


def _build(seeds=(0, 1, 2), depths=(1, 3), widths=(2, 4), lrs=(0.01,), epochs=E, order=None,
           diverged=None, activation="relu", init="he_uniform") -> SweepResult:
    """A synthetic SweepResult with deterministic histories.

    Curves: ``train_accuracy[r, e] = 0.5 + 0.05 * e + 0.01 * r_seed`` style values (finite),
    layer stats positive and NaN for layers a run does not have. ``diverged`` maps a run's
    (seed, depth, width, lr) to its 1-based divergence epoch; from that epoch on every history
    entry is NaN.
    """
    rows = list(itertools.product(seeds, depths, widths, lrs))
    if order is not None:
        rows = [rows[i] for i in order]
    n_runs, d_max = len(rows), max(depths)
    n_layers = d_max + 1
    ep = np.arange(epochs, dtype=np.float32)
    hist: dict[str, np.ndarray] = {}
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        hist[name] = np.zeros((n_runs, epochs), np.float32)
    for name in ("grad_mean_abs", "grad_norm", "weight_l1"):
        hist[name] = np.full((n_runs, epochs, n_layers), np.nan, np.float32)
    div = np.full(n_runs, -1, np.int32)
    for r, (s, d, w, lr) in enumerate(rows):
        hist["train_accuracy"][r] = 0.5 + 0.05 * ep + 0.01 * s
        hist["test_accuracy"][r] = 0.5 + 0.04 * ep + 0.01 * s - 0.01 * d
        hist["train_loss"][r] = 0.7 - 0.05 * ep
        hist["test_loss"][r] = 0.7 - 0.04 * ep + 0.01 * d
        for i in list(range(d)) + [d_max]:
            g = 10.0 ** (-(d_max - i)) * (1.0 + 0.1 * s) / (1.0 + ep)
            hist["grad_mean_abs"][r, :, i] = g
            hist["grad_norm"][r, :, i] = g * w
            hist["weight_l1"][r, :, i] = (i + 1) * w * (1.0 + 0.01 * ep)
        k = (diverged or {}).get((s, d, w, lr))
        if k is not None:
            div[r] = k
            for arr in hist.values():
                arr[r, k - 1:] = np.nan
    runs = RunTable(
        seed=np.array([x[0] for x in rows], np.int32),
        depth=np.array([x[1] for x in rows], np.int32),
        width=np.array([x[2] for x in rows], np.int32),
        lr=np.array([x[3] for x in rows], np.float32),
        diverged_epoch=div,
    )
    cfg = Config(activation=activation, init=init, epochs=epochs)
    return SweepResult(cfg, tuple(seeds), tuple(depths), tuple(widths), tuple(lrs), runs, hist)


@pytest.fixture(scope="module")
def res() -> SweepResult:
    # Seed 1, depth 3, width 4 diverges in epoch 3; seed 2, depth 1, width 2 in epoch 1.
    return _build(diverged={(1, 3, 4, 0.01): 3, (2, 1, 2, 0.01): 1})


@pytest.fixture(scope="module")
def single() -> SweepResult:
    # One config (depth 3, width 4), 4 seeds, seed 3 diverged in epoch 4.
    return _build(seeds=(0, 1, 2, 3), depths=(3,), widths=(4,), diverged={(3, 3, 4, 0.01): 4})


def _check_png(path: Path, tmp_dir: Path) -> np.ndarray:
    assert path.exists() and path.suffix == ".png"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] >= 200 and img.shape[1] >= 200
    assert float(img[..., :3].std()) > 0.02, "image looks blank"
    assert path.stat().st_size < 300_000
    leftovers = [p.name for p in tmp_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    return img


def _labels(ax) -> list[str]:
    return [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def test_plot_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    y = (rng.random(60) > 0.5).astype(np.int32)
    p = figures.plot_dataset(x, y, tmp_path / "data.png", title="toy")
    assert p == tmp_path / "data.png"
    _check_png(p, tmp_path)
    fig = figures.make_dataset(x, y, title="toy")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0].startswith("class 0") and texts[1].startswith("class 1")
    assert ax.get_xlabel() and ax.get_ylabel() and "60 points" in fig.get_suptitle()
    with pytest.raises(ValueError):
        figures.plot_dataset(x[:, :1], y, tmp_path / "bad.png")


def test_learning_curves_single_config(tmp_path, single):
    fig = figures.make_learning_curves(single, title="deep-relu")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert _labels(ax)[:2] == ["train", "test"]
    assert "divergence (1)" in _labels(ax)
    t = fig.get_suptitle()
    assert "deep-relu" in t and "4 seeds" in t and "1 of 4 runs diverged" in t
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "accuracy"
    # The mean skips the diverged run's NaN epochs.
    test_line = ax.get_lines()[1]
    expect = np.nanmean(single.history["test_accuracy"].astype(np.float64), axis=0)
    np.testing.assert_allclose(test_line.get_ydata(), expect, rtol=1e-6)
    p = figures.plot_learning_curves(single, tmp_path / "lc.png", title="deep-relu")
    _check_png(p, tmp_path)


def test_learning_curves_many_configs_and_selection(tmp_path, res):
    fig = figures.make_learning_curves(res)
    assert len(fig.axes) == 2  # train | test, one line per config
    assert len(_labels(fig.axes[0])) == 4
    assert "depth 1, width 2" in _labels(fig.axes[1])
    assert "3 seeds" in fig.get_suptitle()
    # A selection within one config gives the single-panel layout.
    idx = group_indices(res)[(3, 4, float(np.float32(0.01)), 1.0, 0.0, "none", "none")]
    fig1 = figures.make_learning_curves(res, runs=idx)
    assert len(fig1.axes) == 1 and "3 seeds" in fig1.get_suptitle()
    # Boolean masks work too.
    fig2 = figures.make_learning_curves(res, runs=res.runs.depth == 3)
    assert len(_labels(fig2.axes[0])) == 2
    p = figures.plot_learning_curves(res, tmp_path / "lc.png", title="grid")
    _check_png(p, tmp_path)
    with pytest.raises(ValueError):
        figures.plot_learning_curves(res, tmp_path / "x.png", runs=np.array([], int))


def test_layer_gradients(tmp_path, res):
    g = group_indices(res)
    lr = float(np.float32(0.01))
    entries = {"tanh U(0,1)": (res, g[(3, 2, lr, 1.0, 0.0, "none", "none")]), "ReLU He": (res, g[(1, 4, lr, 1.0, 0.0, "none", "none")])}
    fig = figures.make_layer_stat(entries, stat="grad_mean_abs", title="cmp", log=True, what="t")
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(axes) == 2
    assert all(a.get_yscale() == "log" for a in axes)
    assert _labels(axes[0]) == ["layer 1", "layer 2", "layer 3", "output"]
    # Depth-1 runs: absent layers 2 and 3 are all NaN and not drawn.
    assert _labels(axes[1]) == ["layer 1", "output"]
    assert "tanh U(0,1)" in axes[0].get_title() and "3 seeds" in axes[0].get_title()
    assert axes[0].get_xlabel() == "epoch" and "∂L/∂W" in axes[0].get_ylabel()
    p = figures.plot_layer_gradients(entries, tmp_path / "lg.png", title="cmp")
    _check_png(p, tmp_path)
    # A bare SweepResult means all runs; other stats work; unknown stat is a clear error.
    p = figures.plot_layer_gradients({"all": res}, tmp_path / "lg2.png", stat="grad_norm")
    _check_png(p, tmp_path)
    with pytest.raises(ValueError, match="test_grad_mean_abs"):
        figures.plot_layer_gradients({"a": res}, tmp_path / "x.png", stat="test_grad_mean_abs")
    assert not (tmp_path / "x.png").exists()


def test_layer_gradients_many_layers_uses_colorbar(tmp_path):
    deep = _build(seeds=(0, 1), depths=(12,), widths=(3,), epochs=4)
    fig = figures.make_layer_stat({"deep": deep}, stat="grad_mean_abs", title=None, log=True,
                                 what="t")
    ax = fig.axes[0]
    assert len(_labels(ax)) == 13 and _labels(ax)[-1] == "output"
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    _check_png(figures.plot_layer_gradients({"deep": deep}, tmp_path / "d.png"), tmp_path)


def test_all_nan_panel_does_not_crash(tmp_path, res):
    # Run 8 (seed 2, depth 1, width 2) diverged in epoch 1: every entry is NaN.
    assert res.runs.diverged_epoch[8] == 1
    entries = {"dead": (res, np.array([8])), "ok": (res, np.array([0]))}
    fig = figures.make_layer_stat(entries, stat="grad_mean_abs", title=None, log=True, what="t")
    assert _labels(fig.axes[0]) == []
    assert any(t.get_text() == "no finite data" for t in fig.axes[0].texts)
    for fn in (figures.plot_layer_gradients, figures.plot_gradient_profile, figures.plot_weight_norms):
        _check_png(fn(entries, tmp_path / f"{fn.__name__}.png"), tmp_path)
    _check_png(figures.plot_learning_curves(res, tmp_path / "lc.png", runs=[8]), tmp_path)


def test_gradient_profile(tmp_path, res):
    lr = float(np.float32(0.01))
    idx = group_indices(res)[(3, 4, lr, 1.0, 0.0, "none", "none")]
    entries = {"a": (res, idx), "b": (res, group_indices(res)[(1, 2, lr, 1.0, 0.0, "none", "none")])}
    fig = figures.make_gradient_profile(entries, epochs=(1, 10, 100, 500), title="vanish")
    a0, a1 = fig.axes
    # Epochs clamp to 1..E and de-duplicate: 1 and 6.
    assert _labels(a0) == ["epoch 1", f"epoch {E}"]
    assert [t.get_text() for t in a0.get_xticklabels()] == ["1", "2", "3", "out"]
    assert [t.get_text() for t in a1.get_xticklabels()] == ["1", "out"]
    assert a0.get_yscale() == "log"
    # Values: seed mean at epoch 1 over layers 1..3 and output (run with divergence skipped
    # only after its epoch 3, so epoch 1 uses all three seeds; epoch 6 only two).
    arr = res.history["grad_mean_abs"][idx].astype(np.float64)
    np.testing.assert_allclose(a0.get_lines()[0].get_ydata(), arr[:, 0, :].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(a0.get_lines()[1].get_ydata(), np.nanmean(arr[:, -1, :], axis=0),
                               rtol=1e-6)
    assert "vanish" in fig.get_suptitle() and "3 seeds" in fig.get_suptitle()
    _check_png(figures.plot_gradient_profile(entries, tmp_path / "gp.png", epochs=(2,)), tmp_path)


def test_depth_study(tmp_path):
    relu = _build(seeds=(0, 1, 2, 3), depths=(1, 2, 3), widths=(5,),
                  diverged={(0, 3, 5, 0.01): 1, (1, 3, 5, 0.01): 4})
    tanh = _build(seeds=(0, 1), depths=(1, 2), widths=(5,), activation="tanh", init="uniform")
    # Final test accuracy = 0.5 + 0.04*(E-1) + 0.01*s - 0.01*d = 0.7 + 0.01 s - 0.01 d.
    fig = figures.make_depth_study({"ReLU": relu, "tanh": tanh}, learn_threshold=0.705,
                                  title="depth")
    ax_train, ax_test, ax_share = fig.axes
    share = [ln for ln in ax_share.get_lines() if ln.get_label() == "ReLU"][0]
    np.testing.assert_array_equal(share.get_xdata(), [1, 2, 3])
    # depth 1: seeds 2, 3 reach 0.71, 0.72 >= 0.705 -> 2/4. depth 2: seed 3 (0.71) -> 1/4.
    # depth 3: seed 0 diverged in epoch 1 (NaN: counts as not learning), seed 1 diverged in
    # epoch 4 -> its epoch-3 value 0.5 + 0.08 + 0.01 - 0.03 = 0.56; seeds 2, 3: 0.69, 0.70.
    np.testing.assert_allclose(share.get_ydata(), [0.5, 0.25, 0.0])
    final = final_metric(relu, "test_accuracy")
    np.testing.assert_allclose(final[relu.runs.depth == 3], [np.nan, 0.56, 0.69, 0.70], atol=1e-5)
    mean_line = [ln for ln in ax_test.get_lines() if ln.get_label() == "ReLU"][0]
    np.testing.assert_allclose(mean_line.get_ydata()[0], np.mean([0.69, 0.70, 0.71, 0.72]),
                               atol=1e-5)
    assert ax_share.get_ylim()[0] < 0 < 1 < ax_share.get_ylim()[1]
    assert "depth" in fig.get_suptitle() and "seeds" in fig.get_suptitle()
    assert all(a.get_xlabel().startswith("depth") for a in fig.axes)
    _check_png(figures.plot_depth_study({"ReLU": relu, "tanh": tanh}, tmp_path / "ds.png"), tmp_path)
    # A single result is accepted as is.
    _check_png(figures.plot_depth_study(relu, tmp_path / "ds1.png"), tmp_path)


def test_width_depth_heatmap(tmp_path, res):
    fig = figures.make_heatmap(res, metric="test_accuracy", title="hm")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 4  # 2 widths x 2 depths
    # Cell (width 2, depth 1): runs 0, 4, 8; run 8 diverged in epoch 1 -> NaN, skipped.
    # final test acc = 0.7 + 0.01 s - 0.01 d -> seeds 0, 1: 0.69, 0.70 -> mean 0.695.
    img = ax.get_images()[0].get_array()
    assert img.shape == (2, 2)
    np.testing.assert_allclose(img[0, 0], 0.695, atol=1e-5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3"]
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    _check_png(figures.plot_width_depth_heatmap(res, tmp_path / "hm.png", title="hm"), tmp_path)
    _check_png(figures.plot_width_depth_heatmap(res, tmp_path / "hm2.png", metric="test_loss"),
               tmp_path)
    multi = _build(seeds=(0,), depths=(1, 2), widths=(3,), lrs=(0.01, 0.1),
                   diverged={(0, 2, 3, 0.1): 1})
    fig = figures.make_heatmap(multi)
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(panels) == 2 and "–" in [t.get_text() for t in panels[1].texts]


def test_weight_norms(tmp_path, res):
    entries = {"tanh": (res, np.array([1, 5])), "relu": (res, np.array([3, 7, 11]))}
    p = figures.plot_weight_norms(entries, tmp_path / "w.png", title="norms")
    _check_png(p, tmp_path)
    fig = figures.make_layer_stat(entries, stat="weight_l1", title="norms", log="auto", what="t")
    assert "‖W‖₁" in fig.axes[0].get_ylabel() and "norms" in fig.get_suptitle()


def test_save_is_atomic(tmp_path, monkeypatch, single):
    target = tmp_path / "sub" / "fig.png"
    figures.plot_learning_curves(single, target)  # creates the directory
    before = target.read_bytes()

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        figures.plot_learning_curves(single, target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["fig.png"]


@pytest.mark.parametrize("module", sorted(Path(figures.__file__).parent.glob("*.py")),
                         ids=lambda p: p.name)
def test_module_never_imports_jax_or_pyplot(module):
    tree = ast.parse(module.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    assert not any(n == "jax" or n.startswith("jax.") for n in names)
    assert "matplotlib.pyplot" not in names


def test_many_configs_use_a_colorbar(tmp_path):
    r = _build(seeds=(0, 1), depths=tuple(range(1, 11)), widths=(3,), epochs=3)
    fig = figures.make_learning_curves(r, title="sweep")
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(_labels(panels[0])) == 10
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    assert fig.legends == []
    _check_png(figures.plot_learning_curves(r, tmp_path / "lc.png"), tmp_path)


def test_big_png_is_palette_encoded_and_file_mode(tmp_path, monkeypatch, single):
    import os
    import stat

    monkeypatch.setattr(common, "MAX_PNG_BYTES", 1000)
    p = figures.plot_learning_curves(single, tmp_path / "small.png")
    _check_png(p, tmp_path)
    from PIL import Image

    with Image.open(p) as im:
        assert im.mode == "P"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_long_titles_wrap(single):
    fig = figures.make_learning_curves(single, title="x" * 40 + " with many words " * 6)
    assert "\n" in fig.get_suptitle()
