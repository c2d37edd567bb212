"""The CLI's protocol flags: --data, --loss, --weight-var/--bias-var axes, --save-params,
and their bad values (one line, exit 2, nothing written)."""

import json

import numpy as np
import pytest

from vgjax import cli
from vgjax.config import Config
from vgjax.model import unpack_run
from vgjax.run.chunks import sweep

ARGS = ["sweep", "--activation", "tanh", "--init", "normal", "--depths", "1,2", "--widths", "3",
        "--seeds", "0", "--epochs", "2", "--hist-every", "0", "--weight-var", "0.5,2",
        "--bias-var", "0,0.1"]


def test_variance_axes_data_and_params_out(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(ARGS + ["--data", "moons", "--save-params", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "params.npz" in printed and " weight_var" in printed and " bias_var" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["data"] == "moons"
    assert summary["grid"]["weight_vars"] == [0.5, 2.0]
    assert [(r["depth"], r["weight_var"], r["bias_var"]) for r in summary["runs"]] == [
        (d, wv, bv) for d in (1, 2) for wv in (0.5, 2.0) for bv in (0.0, 0.1)]
    assert len(summary["groups"]) == 8
    assert {g["weight_var"] for g in summary["groups"]} == {0.5, 2.0}
    names = sorted(p.relative_to(out / "tensorboard").parts[0]
                   for p in (out / "tensorboard").glob("*/seed*"))
    assert "tanh_normal_d02_w03_wv0.5_bv0.1" in names and len(set(names)) == 8

    cfg = Config(activation="tanh", init="normal", epochs=2, hist_every=0, data="moons")
    ref = sweep(cfg, seeds=(0,), depths=(1, 2), widths=(3,), weight_vars=(0.5, 2.0),
                bias_vars=(0.0, 0.1), keep_params=True)
    with np.load(out / "params.npz", allow_pickle=False) as z:
        for k in ref.params:
            np.testing.assert_allclose(z[k], ref.params[k], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(z["run_depth"], ref.runs.depth)
        r = 7
        layers = unpack_run(z, int(z["run_depth"][r]), int(z["run_width"][r]), run=r)
    assert layers["dense_2"]["kernel"].shape == (3, 3) and layers["output"]["bias"].shape == (1,)
    np.testing.assert_array_equal(layers["dense_1"]["bias"], ref.params["biases"][r, 0, :3])


@pytest.mark.parametrize("flags, field", [
    (["--weight-var", "0"], "weight_var"),
    (["--weight-var", "1,-2"], "weight_vars"),
    (["--weight-var", "1,abc"], "weight_var"),
    (["--bias-var", "-1"], "bias_var"),
    (["--data", "mnist"], "data"),
    (["--loss", "hinge"], "loss"),
    (["--data", "digits", "--loss", "bce"], "loss"),
    (["--init", "gaussian"], "init"),
    (["--init", "random_walk", "--activation", "sigmoid"], "init"),
    (["--residual", "skip"], "residual"),
    (["--residual", "0"], "residual"),
    (["--norm", "group"], "norm"),
    (["--norm", "layer", "--probe", "signal"], "probes"),
])
def test_bad_protocol_flags(flags, field, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a for a in ARGS if a not in ("--weight-var", "0.5,2", "--bias-var", "0,0.1")]
    assert cli.main(argv + flags + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vgjax: error: {field}:") and "\n" not in err and "allowed" in err
    assert not out.exists()


def test_random_walk_flag(tmp_path):
    """--init random_walk trains, and its initial kernels are the ``normal`` draws of the
    run's init key (``run_keys``) times Sussillo & Abbott's ReLU gain per hidden layer
    (fan-in 2, then 3) and the linear gain at the output. lr = 1e-30 leaves the saved
    parameters at their initial values (updates far below float32 resolution)."""
    import jax
    from vgjax.engines.loop import run_keys
    from vgjax.model import init_params
    out = tmp_path / "out"
    argv = ["sweep", "--activation", "relu", "--init", "random_walk", "--depths", "2",
            "--widths", "3", "--seeds", "5", "--epochs", "1", "--hist-every", "0",
            "--lr", "1e-30", "--save-params", "--out", str(out)]
    assert cli.main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["init"] == "random_walk"
    init_key = run_keys(jax.random.PRNGKey(5))[0]
    ref = jax.jit(lambda k: init_params(k, 2, 3, max_depth=2, p=3, init="normal",
                                        output_init="normal"))(init_key)
    relu_gain = lambda n: np.sqrt(2.0) * np.exp(1.2 / (max(n, 6) - 2.4))
    with np.load(out / "params.npz", allow_pickle=False) as z:
        for layer, fan_in in ((0, 2), (1, 3)):
            np.testing.assert_allclose(z["kernels"][0, layer, :fan_in, :3],
                                       ref["kernels"][layer, :fan_in] * relu_gain(fan_in),
                                       rtol=1e-6, atol=0)
        np.testing.assert_allclose(z["out_kernel"][0, :3], ref["out_kernel"] * np.exp(1 / 6),
                                   rtol=1e-6, atol=0)
