"""The experiment runner end to end at a tiny size (2 seeds, 3 epochs), and the CLI around it.

``run_experiments(["dataset", "gradients", "weight-norms"])`` trains only deep-tanh and
deep-relu (the two figure-only experiments read them). Checked: figures, OUT/README.md,
per-experiment results, and the TensorBoard logs read back with TensorBoard's own reader.
``vgjax run deep-relu`` runs as a subprocess at the same time.
"""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from tensorboard.backend.event_processing import event_accumulator as ea

from vgjax import cli
from vgjax.io import history
from vgjax.experiments import EXPERIMENTS
from vgjax.reproduce import run_experiments

pytestmark = pytest.mark.slow

SEEDS, EPOCHS, STEPS = (0, 1), 3, 16  # 16 minibatch steps per epoch (500 points, batch 32)
CURVE_TAGS = ["epoch/train_loss", "epoch/test_loss", "epoch/train_accuracy",
              "epoch/test_accuracy"]
LAYER_SUFFIXES = {"kernel_0_grad/mean_abs": "grad_mean_abs", "kernel_0_grad/norm": "grad_norm",
                  "kernel_0/l1": "weight_l1",
                  "kernel_0_grad_test/mean_abs": "test_grad_mean_abs",
                  "kernel_0_grad_test/norm": "test_grad_norm"}
# 5 hidden layers of 5 units on 2 inputs, then the output: real kernel entries per layer
ENTRIES = [2 * 5, 25, 25, 25, 25, 5]
CONFIG_DIRS = {"deep-tanh": "tanh_uniform_d05_w05", "deep-relu": "relu_he_d05_w05"}


def vgjax_cmd() -> list[str]:
    script = Path(sys.executable).with_name("vgjax")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vgjax.cli"]


def run_cli(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    return subprocess.run(vgjax_cmd() + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(OUT of run_experiments, its figures, CLI out dir, CLI result), trained concurrently."""
    cli_out = tmp_path_factory.mktemp("cli") / "out"
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.Popen(vgjax_cmd() + ["run", "deep-relu", "--seeds", "0-1", "--epochs",
                                           str(EPOCHS), "--out", str(cli_out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = tmp_path_factory.mktemp("rep") / "out"
        figures = run_experiments(["dataset", "gradients", "weight-norms"], out, seeds=SEEDS,
                                  epochs=EPOCHS)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return out, figures, cli_out, subprocess.CompletedProcess(proc.args, proc.returncode,
                                                               stdout, stderr)


@pytest.fixture(scope="module")
def out(both):
    return both[0]


def check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    assert img[..., :3].std() > 0.02, f"{path} looks blank"


def load(path: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(path), size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


# ----------------------------------------------------------------------------- outputs


def test_figures(both):
    out, figures = both[:2]
    assert list(figures) == ["dataset", "deep-tanh", "deep-relu", "gradients", "weight-norms"]
    names = {n: sorted(p.name for p in ps) for n, ps in figures.items()}
    assert names["gradients"] == ["gradient_profile.png", "layer_gradients.png",
                                  "layer_gradients_test.png"]
    assert names["weight-norms"] == ["weight_norms.png"]
    for name, paths in figures.items():
        assert paths
        for p in paths:
            assert p.parent == out / name
            check_png(p)


def _table_row(readme: str, name: str) -> list[str]:
    rows = [r for r in readme.splitlines() if r.startswith(f"| {name} |")]
    assert len(rows) == 1, rows
    return [c.strip() for c in rows[0].strip("|").split("|")]


def _cell(text: str) -> tuple[float, float, float, float]:
    m = re.fullmatch(r"(\d\.\d{3}) ± (\d\.\d{3}) \[(\d\.\d{3})–(\d\.\d{3})\]", text)
    assert m, text
    return tuple(float(g) for g in m.groups())


def test_readme_tables_and_links(both):
    out, figures = both[:2]
    readme = (out / "README.md").read_text()
    assert "over **2 seeds**" in readme and "3 epochs" in readme
    for name, ours in (("deep-tanh", ("0.530", "0.468")), ("deep-relu", ("0.836", "0.840"))):
        cells = _table_row(readme, name)
        assert cells[1] == "5 × 5"
        assert f"Train {ours[0]}, Test {ours[1]}" in cells[2]  # the tutorial's numbers
        for cell in cells[3:5]:  # ours beside them: mean ± std [min–max] of accuracies
            mean, std, lo, hi = _cell(cell)
            assert 0 <= lo <= mean <= hi <= 1 and std <= hi - lo + 1e-3
        assert 0 <= float(cells[5]) <= 1 and cells[6] == "0"
    for heading, cols in (("## gradients", 5), ("## weight-norms", 3)):
        assert heading in readme
        block = readme.split(heading, 1)[1].split("\n## ", 1)[0]
        rows = [r for r in block.splitlines() if r.startswith("| hidden") or
                r.startswith("| output")]
        assert [r.split("|")[1].strip() for r in rows] == [*(f"hidden {i}" for i in range(1, 6)),
                                                           "output"]
        for r in rows:
            cells = [c.strip() for c in r.strip("|").split("|")]
            assert len(cells) == cols and "n/a" not in cells and "nan" not in r
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert len(links) == sum(map(len, figures.values())) == 7
    for link in links:
        assert not Path(link).is_absolute()
        check_png(out / link)
    assert f"tensorboard --logdir {(out / 'tensorboard').as_posix()}" in readme


def test_results_load(out):
    for name in ("deep-tanh", "deep-relu"):
        assert (out / name / "summary.json").is_file() and (out / name / "history.npz").is_file()
        res = history.load_result(out / name)
        assert res.seeds == SEEDS and res.depths == (5,) and res.widths == (5,)
        assert res.config == replace(EXPERIMENTS[name].config, epochs=EPOCHS, hist_every=EPOCHS)
        assert res.history["test_accuracy"].shape == (2, EPOCHS)
        assert res.history["test_grad_mean_abs"].shape == (2, EPOCHS, 6)
        assert np.isfinite(res.history["grad_mean_abs"]).all()
        assert res.history["hist_epochs"].tolist() == [EPOCHS]
    assert not (out / "dataset" / "summary.json").exists()


# ------------------------------------------------------------------------- TensorBoard


def _expected_scalars() -> list[str]:
    return CURVE_TAGS + [f"dense_{k}/{s}" for k in range(1, 7) for s in LAYER_SUFFIXES]


@pytest.mark.parametrize("name", ["deep-tanh", "deep-relu"])
def test_tensorboard_runs(out, name):
    res = history.load_result(out / name)
    config_dir = out / "tensorboard" / name / CONFIG_DIRS[name]
    assert sorted(p.name for p in config_dir.iterdir()) == ["mean", "seed00", "seed01"]
    steps = list(range(1, EPOCHS + 1))
    for r, seed in enumerate(SEEDS):
        run_dir = config_dir / f"seed{seed:02d}"
        files = list(run_dir.iterdir())
        assert len(files) == 1 and files[0].name.startswith("events.out.tfevents."), files
        acc = load(run_dir)
        tags = acc.Tags()
        scalars = set(tags["scalars"])
        assert set(_expected_scalars()) <= scalars
        assert {t for t in scalars - set(_expected_scalars())} <= {
            f"hparams/final_{c.split('/')[1]}" for c in CURVE_TAGS}
        for tag in _expected_scalars():
            events = acc.Scalars(tag)
            assert [e.step for e in events] == steps, tag
            if tag.startswith("epoch/"):
                want = res.history[tag.split("/")[1]][r]
            else:
                layer, suffix = tag.split("/", 1)
                k = int(layer.split("_")[1])
                want = res.history[LAYER_SUFFIXES[suffix]][r, :, k - 1]
            np.testing.assert_allclose([e.value for e in events], want, rtol=1e-6, err_msg=tag)
        for k in range(1, 7):
            for tag, per_step in ((f"dense_{k}/kernel_0_grad", STEPS), (f"dense_{k}/kernel_0", 1)):
                assert tag in tags["histograms"]
                events = acc.Histograms(tag)
                assert [e.step for e in events] == [EPOCHS]  # hist_every clipped to epochs
                h = events[0].histogram_value
                assert sum(h.bucket) == h.num == ENTRIES[k - 1] * per_step, tag
                assert len(h.bucket) == len(h.bucket_limit) and h.min <= h.max


@pytest.mark.parametrize("name", ["deep-tanh", "deep-relu"])
def test_tensorboard_mean(out, name):
    mean_dir = out / "tensorboard" / name / CONFIG_DIRS[name] / "mean"
    assert len(list(mean_dir.iterdir())) == 1
    acc = load(mean_dir)
    scalars = set(acc.Tags()["scalars"])
    assert acc.Tags()["histograms"] == []
    for tag in _expected_scalars():
        lo, mid, hi = (acc.Scalars(tag + s) for s in ("/minus_std", "", "/plus_std"))
        assert [e.step for e in mid] == [e.step for e in lo] == [e.step for e in hi] == [1, 2, 3]
        for a, b, c in zip(lo, mid, hi):
            assert a.value <= b.value + 1e-6 and b.value <= c.value + 1e-6, tag
    assert {t for t in scalars if t.endswith("_std")} == {
        t + s for t in _expected_scalars() for s in ("/minus_std", "/plus_std")}


# --------------------------------------------------------------------------------- CLI


def test_cli_list():
    r = run_cli("list")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if not line.startswith("[")]
    assert len(lines) == len(EXPERIMENTS)
    assert [line.split()[0] for line in lines] == list(EXPERIMENTS)
    assert len([n for n, e in EXPERIMENTS.items() if e.group == "tutorial"]) == 11


@pytest.mark.parametrize("command", ["run", "reproduce", "sweep", "show"])
def test_cli_help(command):
    r = run_cli(command, "--help")
    assert r.returncode == 0 and r.stdout.startswith(f"usage: vgjax {command}"), r.stderr


def test_cli_unknown_experiment(capsys):
    r = run_cli("run", "nosuch")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vgjax: error: experiment: ")
    assert "'nosuch'" in r.stderr and all(n in r.stderr for n in EXPERIMENTS)
    assert cli.main(["run", "deep-tahn"]) == 2  # in-process: same code path, no jax start-up
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'deep-tanh'?" in err


def test_cli_run(both):
    cli_out, r = both[2:]
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"tensorboard --logdir {cli_out / 'tensorboard'}" in r.stdout
    readme = (cli_out / "README.md").read_text()
    assert _table_row(readme, "deep-relu")[2] == "Train 0.836, Test 0.840"
    assert "| deep-tanh |" not in readme
    check_png(cli_out / "deep-relu" / "learning_curves.png")
    assert len(list((cli_out / "tensorboard" / "deep-relu" / CONFIG_DIRS["deep-relu"]
                     / "seed01").iterdir())) == 1
    # the same seeds and protocol in one process or the other: the same numbers, bit for bit
    # on the same devices (the README's determinism promise), else to float32 rounding (the
    # chunk shape follows the device count; a run's numbers then agree only to rounding)
    a, b = history.load_result(cli_out / "deep-relu"), history.load_result(both[0] / "deep-relu")
    dev_a, dev_b = (_summary_device(d / "deep-relu") for d in (cli_out, both[0]))
    for name in ("test_accuracy", "test_loss", "grad_norm"):
        if dev_a == dev_b:
            np.testing.assert_array_equal(a.history[name], b.history[name], err_msg=name)
        else:
            np.testing.assert_allclose(a.history[name], b.history[name], rtol=1e-5, atol=1e-6,
                                       err_msg=name)


def _summary_device(out: Path) -> str:
    """The device string ("cpu:... xN") a sweep's summary.json recorded."""
    import json
    return json.loads((out / "summary.json").read_text())["versions"]["device"]
