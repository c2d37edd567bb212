"""vgjax.probes against NumPy float64, orthogonal/Gaussian linear nets and the padded layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax import probes


def _net(rng, sizes, w=1.0, b=0.1):
    """[(kernel [n_in, n_out], bias [n_out])] float64 Gaussian layers."""
    return [(rng.standard_normal((i, o)) * np.sqrt(w / i), rng.standard_normal(o) * np.sqrt(b))
            for i, o in zip(sizes[:-1], sizes[1:])]


def _f32(layers):
    return [(jnp.asarray(k, jnp.float32), jnp.asarray(b, jnp.float32)) for k, b in layers]


def _np_forward(layers, x, act):
    zs, h = [], x
    for i, (k, b) in enumerate(layers):
        z = h @ k + b
        zs.append(z)
        h = act(z)
    return zs


def _np_jacobian(layers, x, act, dact):
    """Float64 J = ∂h_L/∂x of one point by the chain rule: [n_L, n_0]."""
    zs = _np_forward(layers, x[None, :], act)
    jac = layers[0][0].T
    for (k, _), z in zip(layers[1:], zs[:-1]):
        jac = k.T @ (dact(z[0])[:, None] * jac)
    return jac


def test_probes_match_numpy_float64_on_a_small_tanh_net():
    rng = np.random.default_rng(1)
    layers = _net(rng, [3, 7, 6, 5], w=4.0, b=0.3)
    x = rng.standard_normal((11, 3)) * 1.5
    zs = _np_forward(layers, x, np.tanh)
    dtanh = lambda z: 1 - np.tanh(z) ** 2
    out = jax.jit(lambda L, x: probes.signal_probes(L, x, "tanh"))(_f32(layers),
                                                                    jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(out["q"], [np.mean(z ** 2) for z in zs], rtol=1e-5)
    np.testing.assert_allclose(out["saturation"],
                               [np.mean(np.abs(dtanh(z)) < 0.05) for z in zs], atol=1e-7)
    assert 0 < float(out["saturation"][1]) < 1          # the case is not trivial
    np.testing.assert_array_equal(out["dead"], [0.0, 0.0, 0.0])
    svals = np.stack([np.linalg.svd(_np_jacobian(layers, xi, np.tanh, dtanh), compute_uv=False)
                      for xi in x])                     # [B, 3]; J is [5, 3]
    svals *= np.sqrt(3 / 5)
    assert float(out["jac_mean_sq"]) == pytest.approx(np.mean(svals ** 2), rel=1e-5)
    assert float(out["jac_max"]) == pytest.approx(svals.max(), rel=1e-5)
    edges = np.asarray(probes.LOG_SIGMA_EDGES, np.float64)
    np.testing.assert_array_equal(out["jac_log_hist"],
                                  np.histogram(np.log10(svals), edges)[0])


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(2)
    layers = _net(rng, [4, 6, 6], w=2.0)
    x = rng.standard_normal(4)
    jac = np.asarray(probes.input_output_jacobian(_f32(layers), jnp.asarray(x[None], jnp.float32),
                                                  jax.nn.gelu))[0]
    gelu = lambda v: np.asarray(jax.nn.gelu(jnp.asarray(v, jnp.float32)), np.float64)
    eps = 1e-3
    # h_L(x) in float64 except the activation itself (float32 gelu).
    f = lambda v: _np_forward(layers, v[None], gelu)[-1][0]
    fd = np.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(jac, fd, rtol=2e-3, atol=2e-4)


def test_dead_relu_units_are_counted():
    rng = np.random.default_rng(3)
    layers = _net(rng, [2, 8, 8], b=0.0)
    k1, b1 = layers[0]
    b1 = b1.copy()
    b1[[1, 5]] = -100.0                                  # two units of layer 1 never fire
    layers[0] = (k1, b1)
    x = rng.uniform(-1, 1, (50, 2))
    zs = _np_forward(layers, x, lambda z: np.maximum(z, 0))
    want = [np.mean(np.all(z <= 0, axis=0)) for z in zs]
    got = probes.dead_units(_f32(layers), jnp.asarray(x, jnp.float32), "relu")
    np.testing.assert_allclose(got, want)
    assert float(got[0]) >= 2 / 8


def test_orthogonal_linear_net_is_an_isometry():
    rng = np.random.default_rng(4)
    n, depth = 64, 12
    layers = [(np.linalg.qr(rng.standard_normal((n, n)))[0], np.zeros(n)) for _ in range(depth)]
    x = jnp.asarray(rng.standard_normal((5, n)), jnp.float32)
    jac = probes.input_output_jacobian(_f32(layers), x, "linear")
    s, valid = probes.singular_values(jac)
    assert bool(valid.all())
    np.testing.assert_allclose(s, 1.0, atol=2e-5)


def test_gaussian_linear_net_mean_sq_singular_value_is_weight_var_power():
    rng = np.random.default_rng(5)
    n, depth, w = 256, 6, 1.3
    layers = _net(rng, [n] * (depth + 1), w=w, b=0.0)
    x = jnp.asarray(rng.standard_normal((2, n)), jnp.float32)
    out = probes.signal_probes(_f32(layers), x, "linear")
    # ‖J‖_F²/n concentrates: each of the n² entries is a sum over n^{L-1} paths.
    assert float(out["jac_mean_sq"]) == pytest.approx(w ** depth, rel=0.05)


def test_padded_layout_equals_exact_layers_and_is_vmappable():
    rng = np.random.default_rng(6)
    p, max_depth, n_in = 8, 5, 2
    runs = [(3, 5), (5, 8), (1, 4)]                       # (depth, width)
    stacks, want = [], []
    x = rng.uniform(-1, 1, (20, n_in))
    for depth, width in runs:
        layers = _net(rng, [n_in] + [width] * depth, w=1.8, b=0.05)
        padded = []
        for i in range(max_depth):
            k, b = np.zeros((p, p)), np.zeros(p)
            if i < depth:
                k[:layers[i][0].shape[0], :width] = layers[i][0]
                b[:width] = layers[i][1]
            padded.append((k, b))
        stacks.append(padded)
        want.append(probes.signal_probes(_f32(layers), jnp.asarray(x, jnp.float32), "tanh"))
    kernels = jnp.asarray(np.stack([[k for k, _ in s] for s in stacks]), jnp.float32)  # [R,D,P,P]
    biases = jnp.asarray(np.stack([[b for _, b in s] for s in stacks]), jnp.float32)   # [R,D,P]

    def run(ks, bs, depth, width):
        return probes.signal_probes(list(zip(ks, bs)), jnp.asarray(x, jnp.float32), "tanh",
                                    depth=depth, width=width)
    def run_stacked(ks, bs, depth, width):      # the same net as one scanned stack
        return probes.signal_probes((ks, bs), jnp.asarray(x, jnp.float32), "tanh",
                                    depth=depth, width=width)
    args = (kernels, biases, jnp.array([d for d, _ in runs]), jnp.array([w for _, w in runs]))
    got = jax.jit(jax.vmap(run))(*args)
    stacked = jax.jit(jax.vmap(run_stacked))(*args)
    for key in got:
        np.testing.assert_allclose(stacked[key], got[key], rtol=1e-5)
    for r, (depth, _) in enumerate(runs):
        for key in ("q", "saturation", "dead"):
            np.testing.assert_allclose(got[key][r, :depth], want[r][key], rtol=1e-5)
            assert np.isnan(np.asarray(got[key][r, depth:])).all()
        for key in ("jac_mean_sq", "jac_max"):
            assert float(got[key][r]) == pytest.approx(float(want[r][key]), rel=1e-4)
        np.testing.assert_array_equal(got["jac_log_hist"][r], want[r]["jac_log_hist"])


def test_two_column_singular_values_equal_numpy_svd_without_lapack():
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((200, 7, 2))
    jac[:50, :, 1] = jac[:50, :, 0] * 2.0 + 1e-6 * rng.standard_normal((50, 7))  # cond ~1e6
    jac[50:60, :, 0] = 0.0                                                       # rank one
    jac[60:70] = 0.0                                                             # all zero
    jac *= 10.0 ** rng.uniform(-3, 3, (200, 1, 1))
    ref = np.linalg.svd(jac, compute_uv=False) * np.sqrt(2 / 7)  # normalised per output unit
    s, valid = probes.singular_values(jnp.asarray(jac, jnp.float32))
    assert valid.all()
    # the larger to float32 rounding; the smaller to float32 rounding of the larger
    np.testing.assert_allclose(s[:, 0], ref[:, 0], rtol=1e-5)
    assert np.all(np.abs(np.asarray(s[:, 1]) - ref[:, 1]) <= 1e-3 * ref[:, 1] + 1e-6 * ref[:, 0])
    # no LAPACK call in the program: it can shard over every CPU device
    hlo = jax.jit(lambda j: probes.singular_values(j)[0]).lower(
        jnp.asarray(jac, jnp.float32)).as_text()
    assert "custom_call" not in hlo and "lapack" not in hlo.lower()


def _no_library_call(fn, *args):
    """The compiled program of ``fn`` calls no LAPACK (nor any other custom call)."""
    hlo = jax.jit(fn).lower(*args).as_text()
    assert "custom_call" not in hlo and "lapack" not in hlo.lower()


def test_jacobi_singular_values_equal_numpy_svd_without_lapack_on_every_device():
    rng = np.random.default_rng(1)
    n_dev = len(jax.devices())
    gauss = rng.standard_normal((2 * n_dev, 70, 64))
    # graded columns: singular values over 6 decades, each to high relative accuracy (eigh
    # of JᵀJ loses everything below √eps σ_max ~ 3e-4 σ_max)
    graded = rng.standard_normal((2 * n_dev, 70, 64)) * 10.0 ** np.linspace(-6, 0, 64)
    graded[0, :, 5] = 0.0                                                        # rank-deficient
    odd = rng.standard_normal((2 * n_dev, 9, 5)) * 10.0 ** rng.uniform(-3, 3, (2 * n_dev, 1, 1))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("b",))
    spec = jax.sharding.PartitionSpec("b")
    # inside a program sharded over every CPU device (as the engines shard a grid), where a
    # batched LAPACK gesdd was seen to deadlock
    sharded = jax.jit(jax.shard_map(lambda j: probes.singular_values(j)[0], mesh=mesh,
                                    in_specs=spec, out_specs=spec, check_vma=False))
    for a in (gauss, graded, odd):
        a = a.astype(np.float32)
        ref = np.linalg.svd(a.astype(np.float64), compute_uv=False) * np.sqrt(
            a.shape[-1] / a.shape[-2])
        s = np.asarray(sharded(jnp.asarray(a)))
        assert np.all(np.abs(s - ref) <= 1e-5 * ref[:, :1]), np.abs(s - ref).max()
        if a is not gauss:  # well-conditioned after column scaling: relative accuracy
            ok = ref > 1e-12 * ref[:, :1]
            np.testing.assert_allclose(s[ok], ref[ok], rtol=2e-3)
            assert np.all(s[~ok] <= 1e-6 * ref[:, :1].max())
    _no_library_call(lambda j: probes.singular_values(j)[0], jnp.asarray(odd, jnp.float32))
