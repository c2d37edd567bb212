"""The research scripts in scripts/, each run as a subprocess at a tiny size.

The three scripts start together (each mostly compiles, single-threaded) and every test
waits for its own; each checks the files the script wrote and the numbers it printed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TINY = ["--seeds", "0-1", "--epochs", "3"]
ARGS = {
    "seed_average": TINY,
    "depth_width_sweep": TINY + ["--depths", "1-2", "--widths", "4,8"],
    "lr_explosion": TINY,
    "flax_cnn_digits": ["--seeds", "0-1", "--epochs", "1", "--blocks", "1"],
    "nnx_attention": TINY,
}
FLOAT = r"(nan|\d+\.\d+)"

pytestmark = pytest.mark.slow


def _env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """{script: (out dir, stdout)}; the scripts run concurrently, each must exit 0."""
    procs = {}
    for name, args in ARGS.items():
        out = tmp_path_factory.mktemp(name)
        cmd = [sys.executable, str(SCRIPTS / f"{name}.py"), *args, "--out", str(out / "o")]
        procs[name] = (out / "o", subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, text=True,
                                                   env=_env(), cwd=out))
    done = {}
    for name, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{stderr[-3000:]}"
        done[name] = (out, stdout)
    return done


def check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3].astype(np.float64)
    assert rgb.std() > 0.02, f"{path} looks blank"
    assert (rgb < 0.5).mean() > 0.001, f"{path} has almost no dark (drawn) pixels"


def test_every_script_is_short_documented_and_overridable():
    for name in ARGS:
        text = (SCRIPTS / f"{name}.py").read_text()
        assert text.startswith('"""') and f"python scripts/{name}.py" in text
        assert len(text.splitlines()) <= 50
        for flag in ("--seeds", "--epochs", "--out"):
            assert f'p.add_argument("{flag}"' in text


def test_seed_average(ran):
    out, stdout = ran["seed_average"]
    check_png(out / "learning_curves.png")
    check_png(out / "gradient_profile.png")
    m = re.search(rf"final test accuracy over (\d+) seeds: {FLOAT} ± {FLOAT}", stdout)
    assert m, stdout
    n, mean, std = int(m[1]), float(m[2]), float(m[3])
    assert n == 2 and 0.0 <= mean <= 1.0 and 0.0 <= std <= 0.5


def test_depth_width_sweep(ran):
    out, stdout = ran["depth_width_sweep"]
    check_png(out / "heatmap.png")
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| width \\ depth | 1 | 2 |"
    assert [row.split("|")[1].strip() for row in table[2:]] == ["4", "8"]
    cells = [float(c) for row in table[2:] for c in row.strip("|").split("|")[1:]]
    assert len(cells) == 4 and all(0.0 <= c <= 1.0 for c in cells)
    assert "mean over 2 seeds" in stdout and "\n".join(table) in stdout


def test_lr_explosion(ran):
    out, stdout = ran["lr_explosion"]
    check_png(out / "grad_norm_layer1.png")
    rows = re.findall(r"lr (\S+)\s+diverged_epoch \[(.*?)\]\s+final test accuracy (.*)", stdout)
    assert [float(r[0]) for r in rows] == [0.001, 0.01, 0.1, 1.0, 3.0], stdout
    for lr, div, acc in rows:
        epochs = [int(e) for e in div.split(",")]
        accs = [float(a) for a in acc.split()]
        assert len(epochs) == len(accs) == 2
        assert all(e == -1 or 1 <= e <= 3 for e in epochs)
        assert all(0.0 <= a <= 1.0 for a in accs if not np.isnan(a))
        # a run that diverged in epoch 1 has no finite epoch to report; others always do
        assert all(np.isnan(a) == (e == 1) for e, a in zip(epochs, accs))
    divs = {float(lr): [int(e) for e in div.split(",")] for lr, div, _ in rows}
    assert divs[0.001] == [-1, -1], "the smallest step must not blow up"
    assert max(divs[3.0]) >= 1, "lr 3 on 10 ReLU layers of 32 should overflow"


def test_flax_cnn_digits(ran):
    out, stdout = ran["flax_cnn_digits"]
    rows = re.findall(rf"^(\w+) +(Conv_\d+/kernel) +gradient norm {FLOAT} ± {FLOAT} "
                      r"\((\d+) seeds\)$", stdout, flags=re.M)
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("plain", "Conv_0/kernel", "2"), ("plain", "Conv_1/kernel", "2"),
        ("residual", "Conv_0/kernel", "2"), ("residual", "Conv_1/kernel", "2")], stdout
    assert all(float(r[2]) > 0 for r in rows)
    for variant in ("plain", "residual"):
        summary = json.loads((out / variant / "summary.json").read_text())
        assert summary["format"] == "vgjax.watch" and summary["n_runs"] == 2
        assert (out / variant / "tensorboard" / "CNN" / "mean").is_dir()


def test_nnx_attention(ran):
    out, stdout = ran["nnx_attention"]
    assert re.findall(rf"^lr (\S+): final test accuracy {FLOAT} ± {FLOAT}$", stdout,
                      flags=re.M)[0][0] == "0.001"
    paths = re.findall(r"^  (\S+) +gradient norm", stdout, flags=re.M)
    assert paths[:4] == ["embed/kernel", "embed/bias", "attn/query/kernel", "attn/query/bias"]
    assert paths[-2:] == ["head/kernel", "head/bias"] and len(paths) == 2 * 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 4 and summary["act_paths"] == ["activations/attention"]


def test_bad_input_is_a_usage_error(tmp_path):
    script = str(SCRIPTS / "seed_average.py")
    r = subprocess.run([sys.executable, script, "--seeds", "3-1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 2
    assert "seeds: range '3-1' runs backwards" in r.stderr.splitlines()[-1]
    assert not (tmp_path / "o").exists()


def test_accelerator_check_compares_like_the_engine_tests():
    # the GPU-vs-CPU comparison of scripts/accelerator_check.py (run on a machine with an
    # accelerator; results/accelerator_check.json): it must flag what the tests would
    import dataclasses
    sys.path.insert(0, str(SCRIPTS))
    try:
        from accelerator_check import compare
    finally:
        sys.path.remove(str(SCRIPTS))
    from vgjax.config import Config
    from vgjax.run.chunks import sweep
    ref = sweep(Config(epochs=2, hist_every=1), seeds=(0, 1), depths=(1, 2), widths=(3,))
    edit = lambda **h: dataclasses.replace(ref, history={**ref.history, **h})
    assert compare(ref, ref)["ok"]
    loss = ref.history["train_loss"]
    assert compare(ref, edit(train_loss=loss * (1 + 1e-6)))["ok"]          # float32 rounding
    assert not compare(ref, edit(train_loss=loss * (1 + 1e-3)))["ok"]
    assert not compare(ref, edit(train_loss=np.where(np.arange(loss.shape[1]) == 1, np.nan,
                                                     loss)))["ok"]
    big = ref.history["grad_hist"].astype(np.int32) * 1000     # counts of 1000s of entries
    r, h, l, k = np.argwhere(big > 0)[0]
    k2 = k + 1 if k + 1 < big.shape[-1] else k - 1                 # the neighbouring bucket
    for n, ok in ((1, True), (big.sum() // 1000, False)):  # 2 counts moved vs 0.2 % of them
        moved = big.copy()
        moved[r, h, l, k] -= n
        moved[r, h, l, k2] += n
        assert compare(edit(grad_hist=big), edit(grad_hist=moved))["ok"] is ok, n
    lost = big.copy()
    lost[r, h, l, k] -= 1
    assert not compare(edit(grad_hist=big), edit(grad_hist=lost))["ok"]      # a total changed
