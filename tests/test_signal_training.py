"""The signal probe recorded during training (Config.probes=("signal",), --probe signal).

Oracles: a float64 NumPy forward pass and analytic Jacobian on the run's own parameters (the
final ones from keep_params, the initial ones from model.init_params with the run's key),
TensorBoard's own event reader, and the probe-off program for the arrays both record.
Grids are tiny (2 seeds x depths 1, 3 x width 3, 4 epochs): each program compiles once per
module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea

from vgjax.io import tensorboard as tb
from vgjax.config import Config, Grid
from vgjax.data import make_data
from vgjax.io.history import load_result
from vgjax.model import init_params
from vgjax.run.pipeline import run_sweep
from vgjax.result import SIGNAL_ARRAYS, final_metric, seed_stats
from vgjax.engines import choose_engine
from vgjax.grid.plan import default_mesh, make_plan
from vgjax.run.chunks import sweep

GRID = dict(seeds=(0, 1), depths=(1, 3), widths=(3,))
TANH = Config(activation="tanh", init="uniform", epochs=4, hist_every=2, probes=("signal",))
RELU = Config(activation="relu", init="he_uniform", output_init="glorot_uniform", epochs=4,
              hist_every=2, probes=("signal",))


@pytest.fixture(scope="module")
def tanh_run():
    return sweep(TANH, keep_params=True, **GRID)


@pytest.fixture(scope="module")
def relu_run():
    return sweep(RELU, keep_params=True, **GRID)


# ----------------------------------------------------------------------- NumPy oracle

def _phi(name, z):
    return np.tanh(z) if name == "tanh" else np.maximum(z, 0.0)


def _dphi(name, z):
    return 1.0 - np.tanh(z) ** 2 if name == "tanh" else (z > 0).astype(np.float64)


def _layers(kernels, biases, depth, width, n_features):
    """The run's real layers in float64: [(W [n_in, w], b [w])] * depth."""
    out = []
    for i in range(depth):
        n_in = n_features if i == 0 else width
        out.append((np.asarray(kernels[i], np.float64)[:n_in, :width],
                    np.asarray(biases[i], np.float64)[:width]))
    return out


def _numpy_probes(act, layers, x):
    """q, saturated share, dead share per layer [depth], and per point Jacobians [B, w, F]."""
    h, q, sat, dead = np.asarray(x, np.float64), [], [], []
    jac = np.broadcast_to(np.eye(x.shape[1]), (x.shape[0], x.shape[1], x.shape[1]))
    for i, (w, b) in enumerate(layers):
        z = h @ w + b
        q.append(np.mean(z * z))
        sat.append(np.mean(np.abs(_dphi(act, z)) < 0.05))
        dead.append(np.mean(np.all(_phi(act, z) == 0, axis=0)))
        jac = np.einsum("io,bif->bof", w, jac)  # d z_l / dx
        if i < len(layers) - 1:
            jac = jac * _dphi(act, z)[:, :, None]
        h = _phi(act, z)
    return np.array(q), np.array(sat), np.array(dead), jac


def _share_close(got, want, n):
    # Threshold tests (|φ′| < 0.05, φ = 0) may flip for a point sitting on the threshold
    # between float32 and float64: allow one (unit, point) pair per layer.
    np.testing.assert_allclose(got, want, rtol=0, atol=1.0 / n + 1e-6)


def _check_layers(res, config, hist, params_of, name_suffix=""):
    x = make_data(config)[0]
    for r in range(len(res.runs)):
        depth, width = int(res.runs.depth[r]), int(res.runs.width[r])
        layers = _layers(*params_of(r), depth, width, x.shape[1])
        q, sat, dead, _ = _numpy_probes(config.activation, layers, x)
        got = {k: hist(r, "signal_" + k + name_suffix) for k in ("q", "saturation", "dead")}
        np.testing.assert_allclose(got["q"][:depth], q, rtol=2e-5)
        _share_close(got["saturation"][:depth], sat, x.shape[0] * width)
        _share_close(got["dead"][:depth], dead, width)
        for k in got:  # layers the run lacks
            assert np.isnan(got[k][depth:]).all()


@pytest.mark.parametrize("which", ["tanh", "relu"])
def test_final_probes_equal_numpy_on_final_params(which, tanh_run, relu_run):
    res, config = (tanh_run, TANH) if which == "tanh" else (relu_run, RELU)
    assert not res.runs.diverged.any()
    p = res.params
    _check_layers(res, config, lambda r, n: res.history[n][r, -1],
                  lambda r: (p["kernels"][r], p["biases"][r]))


def _init(config, res, r):
    key = jax.random.fold_in(jax.random.PRNGKey(int(res.runs.seed[r])), 0)
    d, pp = max(res.depths), max(max(res.widths), 2)
    params = init_params(key, int(res.runs.depth[r]), int(res.runs.width[r]), max_depth=d,
                         p=pp, init=config.init, output_init=config.resolved_output_init)
    return np.asarray(params["kernels"]), np.asarray(params["biases"])


@pytest.mark.parametrize("which", ["tanh", "relu"])
def test_init_probes_equal_numpy_on_init_params(which, tanh_run, relu_run):
    res, config = (tanh_run, TANH) if which == "tanh" else (relu_run, RELU)
    _check_layers(res, config, lambda r, n: res.history[n][r], lambda r: _init(config, res, r),
                  name_suffix="_init")


def test_relu_grid_has_dead_units(relu_run):
    # Otherwise the dead-share comparison above could not fail: He-initialised width-3 ReLU
    # nets lose units, on these seeds at least one.
    assert np.nanmax(relu_run.history["signal_dead_init"]) > 0


def test_jacobian_at_init_equals_numpy_svd(tanh_run):
    res, x = tanh_run, make_data(TANH)[0]
    h = res.history
    for r in range(len(res.runs)):
        depth, width = int(res.runs.depth[r]), int(res.runs.width[r])
        layers = _layers(*_init(TANH, res, r), depth, width, x.shape[1])
        jac = _numpy_probes("tanh", layers, x)[3]                   # [B, w, F]
        k = min(width, x.shape[1])
        s = np.linalg.svd(jac, compute_uv=False)[:, :k] * np.sqrt(k / width)
        np.testing.assert_allclose(h["signal_jac_mean_sq_init"][r], np.mean(s ** 2), rtol=1e-4)
        np.testing.assert_allclose(h["signal_jac_max_init"][r], s.max(), rtol=1e-4)
        counts, _ = np.histogram(np.log10(s), bins=np.asarray(h["signal_jac_edges"], np.float64))
        assert h["signal_jac_log_hist_init"][r].sum() == s.size
        assert np.abs(h["signal_jac_log_hist_init"][r] - counts).sum() <= 2  # edge rounding


def test_jacobian_at_histogram_epochs_equals_numpy_on_final_params(tanh_run):
    res, x = tanh_run, make_data(TANH)[0]
    assert list(res.history["hist_epochs"]) == [2, 4]
    for r in range(len(res.runs)):
        depth, width = int(res.runs.depth[r]), int(res.runs.width[r])
        layers = _layers(res.params["kernels"][r], res.params["biases"][r], depth, width,
                         x.shape[1])
        jac = _numpy_probes("tanh", layers, x)[3]
        want = np.mean(np.sum(jac ** 2, axis=(1, 2))) / width      # ‖J‖_F² / n_out
        np.testing.assert_allclose(res.history["signal_jac_mean_sq"][r, -1], want, rtol=1e-4)


def test_shapes_and_probe_does_not_change_training(tanh_run):
    h, r, e, d = tanh_run.history, len(tanh_run.runs), TANH.epochs, max(GRID["depths"])
    assert h["signal_q"].shape == (r, e, d) and h["signal_q_init"].shape == (r, d)
    assert h["signal_jac_log_hist"].shape == (r, 2, 64)
    assert h["signal_jac_mean_sq_init"].shape == (r,)
    # Same engine and mesh (every device) as the probed sweep: the device count changes
    # XLA's float rounding, the probe must change nothing.
    off = sweep(replace(TANH, probes=()), **GRID)
    assert not any(k in off.history for k in SIGNAL_ARRAYS)
    for k, v in off.history.items():  # the probe only reads the parameters
        np.testing.assert_array_equal(h[k], v, err_msg=k)


def test_engine_choice_and_refusals():
    mesh = default_mesh()
    plain = replace(TANH, probes=())
    assert choose_engine(plain, 5, mesh) == "fast"              # W600's engine unchanged
    assert choose_engine(TANH, 5, mesh) == "fast"               # every engine probes
    plan = make_plan(TANH, Grid(**GRID))
    assert plan.engine == "fast"
    # the spectrum calls no library in the program (two features: closed form; more:
    # Jacobi), so a probed grid shards over every device, on any data
    assert plan.mesh.devices.size == len(jax.devices())
    digits = make_plan(replace(TANH, data="digits", n_samples=100, n_train=80), Grid(**GRID))
    assert digits.mesh.devices.size == len(jax.devices()) and digits.engine == "wide"
    with pytest.raises(ValueError, match="probe: unknown value 'foo'.*allowed: signal"):
        make_plan(replace(TANH, probes=("foo",)), Grid(**GRID))
    with pytest.raises(ValueError, match="duplicates"):
        make_plan(replace(TANH, probes=("signal", "signal")), Grid(**GRID))


def test_config_records_probes_only_when_on():
    assert "probes" not in replace(TANH, probes=()).to_dict()   # old manifests compare equal
    d = TANH.to_dict()
    assert d["probes"] == ["signal"]
    assert Config.from_dict(json.loads(json.dumps(d))) == TANH


def test_history_summary_and_tensorboard_round_trip(tmp_path, tanh_run):
    # save_params: the fixture's compiled program (keep_params) serves this sweep too
    out = run_sweep(TANH, Grid(**GRID), tmp_path / "s", prefix="t", save_params=True)
    loaded = load_result(tmp_path / "s")
    for k in SIGNAL_ARRAYS + ("signal_jac_edges",):
        np.testing.assert_array_equal(loaded.history[k], tanh_run.history[k], err_msg=k)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["config"]["probes"] == ["signal"]
    assert summary == out.summary | {"timing": summary["timing"]}
    depth3 = [g for g in summary["signal"] if g["depth"] == 3][0]
    sel = np.flatnonzero(loaded.runs.depth == 3)
    for name in ("q", "saturation", "dead"):
        init = seed_stats(loaded.history[f"signal_{name}_init"][sel])["mean"]
        final = seed_stats(final_metric(loaded, f"signal_{name}")[sel])["mean"]
        np.testing.assert_allclose(depth3[name]["init"]["mean"], init, rtol=1e-6)
        np.testing.assert_allclose(depth3[name]["final"]["mean"], final, rtol=1e-6)
    # TensorBoard, read back with its own reader: init at step 0, then every epoch
    run = int(np.flatnonzero((loaded.runs.depth == 3) & (loaded.runs.seed == 1))[0])
    logdir = tmp_path / "s" / "tensorboard" / tb.run_dir_names(loaded, "t")[run]
    acc = ea.EventAccumulator(str(logdir), size_guidance=ea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    sat = acc.Scalars("dense_3/signal/saturation")
    want = [loaded.history["signal_saturation_init"][run, 2],
            *loaded.history["signal_saturation"][run, :, 2]]
    assert [e.step for e in sat] == list(range(TANH.epochs + 1))
    np.testing.assert_allclose([e.value for e in sat], want, rtol=1e-6)
    jac = acc.Scalars("signal/jacobian/mean_sq")
    assert [e.step for e in jac] == [0, 2, 4]
    hist = acc.Histograms("signal/jacobian/log10_sigma")
    assert [e.step for e in hist] == [0, 2, 4]
    assert hist[-1].histogram_value.num == loaded.history["signal_jac_log_hist"][run, -1].sum()
    assert "dense_4/signal/q" not in acc.Tags()["scalars"]      # the output layer: no probe


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "vgjax.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("probe, needle", [("signl", "probe: unknown value 'signl'"),
                                           ("signal,signal", "probes: ['signal', 'signal'] has "
                                                             "duplicates")])
def test_cli_bad_probe_exits_2_and_writes_nothing(tmp_path, probe, needle):
    out = tmp_path / "never"
    p = _cli("sweep", "--probe", probe, "--epochs", "2", "--out", str(out), cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "signal" in lines[0]
    assert not out.exists()
