"""The theory and jacobian-spectra studies end to end at tiny sizes, and their pieces."""

import json

import jax
import numpy as np
import pytest

from vgjax.cli import main
from vgjax.experiments.signal import theory_studies as ft


def test_init_stack_variances_and_orthogonality():
    k, b = ft.init_stack(jax.random.PRNGKey(0), 3, 64, 1.7, 0.2, "gaussian")
    assert k.shape == (3, 64, 64) and b.shape == (3, 64)
    assert float(np.var(np.asarray(k))) * 64 == pytest.approx(1.7, rel=0.05)
    assert float(np.var(np.asarray(b))) == pytest.approx(0.2, rel=0.2)
    k, _ = ft.init_stack(jax.random.PRNGKey(1), 2, 32, 1.7, 0.0, "orthogonal")
    for m in np.asarray(k, np.float64):
        np.testing.assert_allclose(m @ m.T, 1.7 * np.eye(32), atol=1e-5)
    with pytest.raises(ValueError, match="scheme: 'haar'"):
        ft.init_stack(jax.random.PRNGKey(0), 1, 4, 1.0, 0.0, "haar")


def test_predicted_mean_sq_closed_forms():
    assert float(ft.predicted_mean_sq(1.0, 6, 1.3, 0.0, "linear")) == pytest.approx(1.3 ** 6,
                                                                                   rel=1e-5)
    assert float(ft.predicted_mean_sq(0.5, 9, 2.0, 0.0, "relu")) == pytest.approx(2.0, rel=1e-5)


def test_write_all_at_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setattr(ft, "WEIGHT_VARS", np.array([0.8, 1.5, 3.0]))
    monkeypatch.setattr(ft, "PLANE_W", np.array([0.8, 2.0, 4.0]))
    monkeypatch.setattr(ft, "PLANE_B", np.array([0.0, 0.1]))
    monkeypatch.setattr(ft, "SPECTRA_WIDTH", 12)
    monkeypatch.setattr(ft, "SPECTRA_DEPTHS", (2, 3))
    monkeypatch.setattr(ft.compute_spectra, "__kwdefaults__",
                        {"seed": 0, "n_nets": 1, "n_points": 2, "depths": (2, 3)})
    monkeypatch.setattr(ft.make_spectra, "__defaults__", ((2, 3),))
    paths = ft.write_all(tmp_path, spectra_nets=1)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    theory = json.loads((tmp_path / "theory" / "data.json").read_text())
    assert theory["curves"]["ReLU, σ_b² = 0.05"]["chi1"] == pytest.approx([0.4, 0.75, 1.5],
                                                                         rel=1e-5)
    spectra = json.loads((tmp_path / "jacobian-spectra" / "data.json").read_text())
    ortho_linear = [c for c in spectra["cases"]
                    if c["activation"] == "linear" and c["scheme"] == "orthogonal"]
    assert len(ortho_linear) == 2
    for c in ortho_linear:      # an orthogonal linear net is an exact isometry
        assert c["mean_sq"] == pytest.approx(1.0, rel=1e-5) and c["share_near_1"] == 1.0
        assert c["max"] == pytest.approx(1.0, rel=1e-5)
    assert (tmp_path / "jacobian-spectra" / "table.md").read_text().count("\n") == 2 + 16


def test_cli_figures_calls_write_all(tmp_path, monkeypatch, capsys):
    import vgjax.experiments.signal.theory_studies as mod
    monkeypatch.setattr(mod, "write_all", lambda out: [out / "x.png"])
    assert main(["theory", "--figures", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / 'x.png'}" in capsys.readouterr().out
