"""vgjax.theory against closed forms, NumPy Monte Carlo and wide random NumPy nets (float64)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax.model import activation_fn
from vgjax import theory as th
from vgjax.cli import main


def _mf(w, b, act):
    return [float(v) for v in jax.jit(lambda w, b: th.mean_field(w, b, act))(w, b)]


def test_quadrature_rules_integrate_half_line_moments():
    # ∫_0^∞ z^k ϕ(z) dz = 2^{k/2-1} Γ((k+1)/2) / √π; ∫_0^∞ r^k r e^{-r²/2} dr = 2^{k/2} Γ(k/2+1)
    z, w = th.half_hermite_rule()
    r, v = th.radial_rule()
    for k in range(0, 2 * th.N_RADIAL - 1, 5):
        exact = 2 ** (k / 2 - 1) * math.gamma((k + 1) / 2) / math.sqrt(math.pi)
        assert np.sum(w * z ** k) == pytest.approx(exact, rel=1e-7)
        assert np.sum(v * r ** k) == pytest.approx(2 ** (k / 2) * math.gamma(k / 2 + 1), rel=1e-7)


@pytest.mark.parametrize("w,b", [(0.5, 0.1), (1.0, 0.0), (1.5, 0.05), (1.9, 0.3)])
def test_relu_closed_forms(w, b):
    q, chi1, c, chi_c, xi = _mf(w, b, "relu")
    assert chi1 == pytest.approx(w / 2, rel=1e-6)
    # float32 rounding of the q-map (~1e-6) is amplified by 1/(1 - slope) at its fixed point.
    assert q == pytest.approx(b / (1 - w / 2), rel=3e-6 / (1 - w / 2), abs=1e-12)
    assert c == 1.0 and chi_c == pytest.approx(w / 2, rel=1e-6)
    assert xi == pytest.approx(-1 / math.log(w / 2), rel=1e-5)


def test_relu_diverges_in_the_chaotic_phase():
    q, chi1, c, _, _ = _mf(3.0, 0.1, "relu")
    assert math.isinf(q) and chi1 == pytest.approx(1.5, rel=1e-6) and math.isnan(c)


@pytest.mark.parametrize("slope", [0.3])
def test_leaky_relu_closed_form(slope):
    w, b = 1.2, 0.2
    q, chi1, *_ = _mf(w, b, "leaky_relu")
    gain = (1 + slope ** 2) / 2
    assert chi1 == pytest.approx(w * gain, rel=1e-6)
    assert q == pytest.approx(b / (1 - w * gain), rel=1e-5)


@pytest.mark.parametrize("w", [0.3, 0.8, 1.5])
def test_linear_closed_form(w):
    q, chi1, *_ = _mf(w, 0.2, "linear")
    assert chi1 == pytest.approx(w, rel=1e-6)
    if w < 1:
        assert q == pytest.approx(0.2 / (1 - w), rel=1e-5)
    else:
        assert math.isinf(q)


def test_tanh_ordered_without_bias_has_zero_length_and_chi1_equal_weight_var():
    q, chi1, c, chi_c, _ = _mf(0.7, 0.0, "tanh")
    assert q < 1e-30 and chi1 == pytest.approx(0.7, rel=1e-5) and c == 1.0 and chi_c == chi1


def test_erf_callable_closed_forms():
    # E[erf(√q z)²] = (2/π) arcsin(2q/(1+2q)); erf' = 2/√π e^{-u²}: E[erf'²] = 4/(π √(1+4q))
    erf = jax.scipy.special.erf
    for q in (0.1, 1.0, 7.0):
        m = float(th.qmap(q, 2.0, 0.1, erf))
        assert m == pytest.approx(2.0 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + 0.1, rel=1e-5)
        assert float(th.chi1(q, 2.0, erf)) == pytest.approx(
            2.0 * 4 / (math.pi * math.sqrt(1 + 4 * q)), rel=1e-5)


@pytest.mark.parametrize("c", [-0.95, -0.4, 0.0, 0.3, 0.8, 0.999])
def test_relu_correlation_integrals_are_arc_cosine_kernels(c):
    # Cho & Saul: E[relu u1 relu u2] = q (sin a + (π − a) c) / 2π; E[step step] = (π − a)/2π
    q, a = 1.7, math.acos(c)
    step = th.derivative_fn("relu")
    got = float(th.gauss_mean2(jax.nn.relu, jax.nn.relu, q, c))
    assert got == pytest.approx(q * (math.sin(a) + (math.pi - a) * c) / (2 * math.pi), abs=1e-6)
    assert float(th.gauss_mean2(step, step, q, c)) == pytest.approx((math.pi - a) / (2 * math.pi),
                                                                    abs=1e-6)


def test_tanh_correlation_integral_matches_monte_carlo():
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 2_000_000))
    q, c = 1.3, 0.6
    u1, u2 = np.sqrt(q) * z1, np.sqrt(q) * (c * z1 + np.sqrt(1 - c * c) * z2)
    mc = np.tanh(u1) * np.tanh(u2)
    got = float(th.gauss_mean2(jnp.tanh, jnp.tanh, q, c))
    assert abs(got - mc.mean()) < 4 * mc.std() / np.sqrt(mc.size)


@pytest.mark.parametrize("w,b", [(2.5, 0.05), (4.0, 0.0), (3.0, 0.3)])
def test_chaotic_tanh_fixed_point_and_chi_c_is_the_cmap_slope(w, b):
    q, chi1, c, chi_c, xi = _mf(w, b, "tanh")
    assert chi1 > 1 and c < 1
    cm = lambda x: float(th.cmap(x, q, w, b, "tanh"))
    assert cm(c) == pytest.approx(c, abs=2e-5)
    # Price's theorem: d c'/dc = σ_w² E[φ'(u1) φ'(u2)] at the fixed point.
    h = 1e-2
    assert (cm(c + h) - cm(c - h)) / (2 * h) == pytest.approx(chi_c, rel=2e-3)
    assert xi == pytest.approx(-1 / math.log(chi_c), rel=1e-6)
    assert chi_c < 1    # the fixed point is stable


def test_phase_grid_is_one_vmapped_program_matching_scalar_calls():
    ws, bs = [0.8, 1.7, 2.6], [0.0, 0.05]
    g = th.phase_grid(ws, bs, "tanh")
    assert g.chi1.shape == (3, 2)
    for i, w in enumerate(ws):
        for j, b in enumerate(bs):
            want = _mf(w, b, "tanh")
            got = [float(f[i, j]) for f in g]
            # float32 rounding differs between the batched and the scalar program (XLA:CPU
            # fuses them differently); c* and xi_c amplify it by 1/(1 - chi_c) (~33 here).
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_grad_scale_is_chi1_power():
    np.testing.assert_allclose(th.grad_scale(0.5, 4), [0.125, 0.25, 0.5, 1.0])


def _wide_net_q(act, w, b, q0, depth, width=1024, n_inputs=16, n_nets=6, seed=0):
    """Measured per-layer mean h² over units, inputs and independent random NumPy float64
    nets: [depth]. About 10^5 samples per layer keep the finite-size noise near 0.5 %."""
    rng = np.random.default_rng(seed)
    out = np.zeros(depth)
    for _ in range(n_nets):
        x = rng.standard_normal((n_inputs, width))
        x *= np.sqrt(q0 * width) / np.linalg.norm(x, axis=1, keepdims=True)  # ‖x‖²/N = q0
        h = x
        for layer in range(depth):
            inp = h if layer == 0 else act(h)
            h = inp @ (rng.standard_normal((width, width)) * np.sqrt(w / width)) \
                + rng.standard_normal(width) * np.sqrt(b)
            out[layer] += np.mean(h ** 2) / n_nets
    return out


@pytest.mark.parametrize("name,np_act,w,b", [
    ("tanh", np.tanh, 1.5, 0.05), ("tanh", np.tanh, 3.0, 0.1),
    ("relu", lambda h: np.maximum(h, 0), 2.0, 0.1), ("relu", lambda h: np.maximum(h, 0), 1.5, 0.2),
])
def test_q_map_matches_wide_random_nets(name, np_act, w, b):
    depth, q0 = 8, 0.7
    want = np.asarray(th.q_trajectory(q0, depth, w, b, name))
    got = _wide_net_q(np_act, w, b, q0, depth)
    np.testing.assert_allclose(got, want, rtol=0.04)


def test_bad_activation_and_variances():
    with pytest.raises(ValueError, match="no finite Gaussian expectation"):
        th.check_activation(lambda z: jnp.exp(z * z))
    with pytest.raises(ValueError, match="no finite Gaussian expectation"):
        th.check_activation(jnp.log)
    with pytest.raises(ValueError, match="not a JAX-traceable"):
        th.check_activation(lambda z: float(z) if z.ndim == 0 else math.tanh(z))
    with pytest.raises(ValueError, match="activation: 'foo' is not known"):
        activation_fn("foo")
    with pytest.raises(ValueError, match="weight_var: 0"):
        th.table([0], [0.1], "tanh")
    with pytest.raises(ValueError, match="bias_var: -1"):
        th.table([1.0], [-1], "tanh")


def test_cli_json_has_exactly_the_fields(capsys):
    assert main(["theory", "--activation", "relu", "--weight-var", "1.5", "--bias-var", "0.05",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"activation", "weight_var", "bias_var", *th.FIELDS}
    assert out["chi1"] == pytest.approx(0.75, rel=1e-6)
    assert out["q_star"] == pytest.approx(0.05 / 0.25, rel=1e-5)


def test_cli_table_over_lists(capsys):
    assert main(["theory", "--activation", "linear", "--weight-var", "0.5,2",
                 "--bias-var", "0,0.1,0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 6 and lines[0].split()[:2] == ["weight_var", "bias_var"]
    assert [float(l.split()[3]) for l in lines[1:]] == pytest.approx([0.5] * 3 + [2.0] * 3)


@pytest.mark.parametrize("argv,msg", [
    (["--weight-var", "0"], "weight-var: 0.0 is out of range"),
    (["--weight-var", "1,-2"], "weight-var: -2.0 is out of range"),
    (["--bias-var", "-0.1"], "bias-var: -0.1 is out of range"),
    (["--bias-var", "inf"], "bias-var: inf is out of range"),
    (["--weight-var", "a"], "weight-var: malformed list"),
    (["--activation", "tanhh"], "activation: unknown value 'tanhh'"),
])
def test_cli_bad_input_one_line_exit_2(argv, msg, capsys):
    assert main(["theory", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_critical_weight_var_closed_forms():
    # ReLU: χ₁ = σ_w²/2 whatever σ_b²; erf with σ_b² = 0: q* -> 0 and χ₁ -> σ_w² · 4/π.
    # Just above that critical point q_l -> q* ≈ 0 only algebraically (~1/l), so Q_ITERS
    # steps leave q* a little high and the line ~1 % to the right: the tolerance says so.
    assert float(th.critical_weight_var(0.1, "relu")) == pytest.approx(2.0, rel=1e-5)
    erf = jax.scipy.special.erf
    assert float(th.critical_weight_var(0.0, erf)) == pytest.approx(math.pi / 4, rel=0.02)
    for b in (0.05, 0.3):
        w = float(th.critical_weight_var(b, "tanh"))
        assert _mf(w, b, "tanh")[1] == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------- remedies (closed forms, MC)

from scipy.special import digamma as _digamma, polygamma as _polygamma  # noqa: E402


@pytest.mark.parametrize("n", [10, 30, 100])
def test_random_walk_step_linear_closed_form(n):
    """½ ln(g² χ²_N / N): mean ln g + ½(ψ(N/2) + ln(2/N)), variance ψ′(N/2)/4; at the
    random-walk gain exp(1/(2N)) the drift is −1/(6N²) to leading order."""
    g = np.exp(1 / (2 * n))
    step = th.random_walk_step(n, g)
    np.testing.assert_allclose(float(step.var), _polygamma(1, n / 2) / 4, rtol=1e-5)
    np.testing.assert_allclose(float(step.mean), np.log(g) + 0.5 * (_digamma(n / 2)
                                                                   + np.log(2 / n)), atol=1e-6)
    np.testing.assert_allclose(float(step.mean), -1 / (6 * n * n), rtol=0.05)
    # the gain matters: g = 1 drifts by about −1/(2N) per layer
    np.testing.assert_allclose(float(th.random_walk_step(n, 1.0).mean), -1 / (2 * n),
                               rtol=0.1)


def _walk_mc(n, steps, samples, activation, gain, rng):
    """ln||δ_0|| − ln||δ_steps|| of real nets (NumPy float64): a forward pass of a Gaussian
    input through ``steps + 1`` layers of N(0, g²/N) weights, then backprop from a random
    unit δ at the top. Dead ReLU nets (a zero δ) are dropped."""
    x = rng.standard_normal((samples, n))
    ws = [rng.standard_normal((samples, n, n)) * gain / np.sqrt(n) for _ in range(steps + 1)]
    masks = []
    for w in ws:
        z = np.einsum("si,sij->sj", x, w)
        masks.append(z > 0 if activation == "relu" else np.ones_like(z, bool))
        x = np.where(masks[-1], z, 0.0)
    d = rng.standard_normal((samples, n)) * masks[-1]
    top = np.linalg.norm(d, axis=1)
    for w, m in zip(ws[:0:-1], masks[-2::-1]):
        d = np.einsum("sij,sj->si", w, d) * m
    bottom = np.linalg.norm(d, axis=1)
    alive = (bottom > 0) & (top > 0)
    return np.log(bottom[alive]) - np.log(top[alive])


@pytest.mark.parametrize("activation, n", [("linear", 10), ("relu", 16)])
def test_random_walk_step_monte_carlo(activation, n):
    """Mean and variance of ln||δ|| over 12 layers of real nets against steps x the step's
    (ReLU: under gradient independence, which the real forward-dependent masks obey)."""
    rng = np.random.default_rng(0)
    steps, samples = 12, 6000
    g = np.exp(1 / (2 * n)) if activation == "linear" else np.sqrt(2) * np.exp(1.2 / (n - 2.4))
    walk = _walk_mc(n, steps, samples, activation, g, rng)
    step = th.random_walk_step(n, g, activation)
    mean, var = steps * float(step.mean), steps * float(step.var)
    assert abs(walk.mean() - mean) < 4 * np.sqrt(var / walk.size)
    assert abs(walk.var() - var) < 4 * var * np.sqrt(2 / walk.size)


def test_relu_dead_layer_probability():
    assert th.relu_dead_layer_probability(1, 1) == 0.5
    np.testing.assert_allclose(th.relu_dead_layer_probability(10, 200),
                               1 - (1 - 2.0 ** -10) ** 200, rtol=1e-12)


@pytest.mark.parametrize("activation, alpha, wv, vv", [("relu", 0.7, 2.0, 1.5),
                                                       ("relu", 1.0, 1.0, 0.5),
                                                       ("tanh", 0.5, 1.5, 2.0)])
def test_residual_block_growth(activation, alpha, wv, vv):
    """Forward and gradient growth of h' = h + α V φ(W h) against Monte Carlo (width 1000,
    NumPy float64) and, for ReLU, the closed form 1 + α² σ_v² σ_w² / 2."""
    rng = np.random.default_rng(1)
    n, b = 1000, 64
    fwd, bwd = (float(v) for v in th.residual_block_growth(alpha, wv, vv, activation))
    if activation == "relu":
        np.testing.assert_allclose([fwd, bwd], 1 + alpha ** 2 * vv * wv / 2, rtol=1e-5)
    phi = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0))
    dphi = (lambda z: 1 - np.tanh(z) ** 2) if activation == "tanh" else (lambda z: z > 0)
    f_mc, b_mc = [], []
    for _ in range(4):
        w = rng.standard_normal((n, n)) * np.sqrt(wv / n)
        v = rng.standard_normal((n, n)) * np.sqrt(vv / n)
        h = rng.standard_normal((b, n))
        z = h @ w
        f_mc.append(np.mean((h + alpha * phi(z) @ v) ** 2) / np.mean(h ** 2))
        d = rng.standard_normal((b, n))
        back = d + alpha * ((d @ v.T) * dphi(z)) @ w.T
        b_mc.append(np.mean(back ** 2) / np.mean(d ** 2))
    np.testing.assert_allclose(np.mean(f_mc), fwd, rtol=0.02)
    np.testing.assert_allclose(np.mean(b_mc), bwd, rtol=0.02)


def _bn_growth_mc(activation, batch, width, depth, rng):
    """Per-layer growth of ||∂L/∂W_l||² in h = φ(BN(h W)) nets (NumPy float64, manual
    BatchNorm backprop), the geometric mean over the layers away from the top and bottom."""
    phi = (lambda z: np.maximum(z, 0)) if activation == "relu" else (lambda z: z)
    dphi = (lambda z: (z > 0) * 1.0) if activation == "relu" else (lambda z: np.ones_like(z))
    h = rng.standard_normal((batch, width))
    cache = []
    for _ in range(depth):
        w = rng.standard_normal((width, width)) / np.sqrt(width)
        y = h @ w
        sd = y.std(axis=0)
        yhat = (y - y.mean(axis=0)) / sd
        cache.append((h, w, sd, yhat))
        h = phi(yhat)
    g = rng.standard_normal((batch, width))
    norms = []
    for h_in, w, sd, yhat in reversed(cache):
        g = g * dphi(yhat)
        gy = (g - g.mean(axis=0) - yhat * (g * yhat).mean(axis=0)) / sd
        norms.append(np.sum((h_in.T @ gy) ** 2))
        g = gy @ w.T
    logs = np.log(norms[5:-5])
    return np.exp(np.polyfit(np.arange(logs.size), logs, 1)[0])


@pytest.mark.parametrize("activation, batch", [("linear", 8), ("linear", 16), ("relu", 256)])
def test_batchnorm_growth_monte_carlo(activation, batch):
    """Yang et al.'s rates against BatchNorm nets backpropagated by hand in NumPy."""
    rng = np.random.default_rng(2)
    rate = (th.batchnorm_growth_linear(batch) if activation == "linear"
            else th.BATCHNORM_RELU_GROWTH)
    got = np.mean([_bn_growth_mc(activation, batch, 256, 40, rng) for _ in range(2)])
    np.testing.assert_allclose(got, rate, rtol=0.05)


def test_batchnorm_growth_closed_forms():
    np.testing.assert_allclose(float(th.batchnorm_growth("relu")), np.pi / (np.pi - 1),
                               rtol=1e-5)
    np.testing.assert_allclose(float(th.batchnorm_growth("linear")), 1.0, rtol=1e-5)
    assert th.batchnorm_growth_linear(8) == 6 / 5
    with pytest.raises(ValueError, match="^batch: 3 is out of range"):
        th.batchnorm_growth_linear(3)
