"""Gradient flow through time: the log-norm backward pass against jax.grad with respect to zero
perturbations of h_t (of every layer of stacked nets), its per-layer parameter gradients
against jax.grad, past float32's underflow, and the tanh RNN's per-step decay against the
mean-field theory by Monte Carlo on wide random nets with isotropic Gaussian inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax import theory as th
from vgjax.recurrent import cells as rc
from vgjax.recurrent import flow as rf
from vgjax.recurrent import tasks as rt


def _params(cell, width, n_inputs, n_outputs, init="normal", scale=1.0, seed=0, layers=1):
    spec = rc.InitSpec(jnp.int32(rc.INITS.index(init)), jnp.float32(scale), jnp.float32(1.0),
                       jnp.float32(0.0))
    return rc.init_cell(jax.random.PRNGKey(seed), cell, n_inputs=n_inputs, width=width,
                        n_outputs=n_outputs, spec=spec, layers=layers)


@pytest.mark.parametrize("cell,task_name,layers", [
    ("rnn", "copy", 1), ("lstm", "adding", 1), ("gru", "copy", 1),
    ("rnn", "copy", 3), ("lstm", "adding", 2), ("gru", "copy", 3)])
def test_log_norms_are_the_logs_of_the_perturbation_gradients(cell, task_name, layers):
    # stacked nets: every layer's h_t perturbed, so jax.grad gives the total derivative
    # (recurrent + upward + readout terms) that the log-domain pass assembles top down
    task = rt.make_task(task_name, copy_len=3)
    length, t_max = 6, 16                       # copy: 12 steps; adding: 6, inside 16
    p = _params(cell, 8, task.n_inputs, task.n_outputs, scale=1.2, layers=layers)
    batch = rt.sample(task, jax.random.PRNGKey(2), length, t_max, 5)
    n = rt.task_steps(task, length)
    loss = lambda out: rt.example_losses(task, out, batch)

    @jax.jit
    def both():
        g = rf.grad_wrt_states(cell, "tanh", p, batch.x, n, loss)
        return g, rf.state_log_norms(cell, "tanh", p, batch.x, n, loss).log_h
    g, log_h = both()
    with np.errstate(divide="ignore"):   # zero gradient past the run's steps
        expected = np.log(np.linalg.norm(np.asarray(g, np.float64), axis=-1))
    assert g.shape == (layers, t_max, 5, 8) and log_h.shape == (layers, t_max, 5)
    np.testing.assert_allclose(np.asarray(log_h)[:, :n], expected[:, :n], rtol=1e-4, atol=1e-4)
    # the per-layer parameter gradients the same pass sums: jax.grad of the mean loss
    want = jax.jit(jax.grad(lambda q: jnp.mean(loss(rc.readout(q, rc.run(
        cell, "tanh", q, batch.x, n).h)))))(p)
    got = jax.jit(lambda: rf.gradient_flow(cell, "tanh", p, batch.x, n, loss).param_grads)()
    for field, layer_field in (("input_kernel", "wx"), ("recurrent_kernel", "wh")):
        np.testing.assert_allclose(getattr(got, field), [
            np.linalg.norm(np.asarray(getattr(rc.layer(want, i), layer_field), np.float64))
            for i in range(layers)], rtol=1e-4, err_msg=field)
    np.testing.assert_allclose(got.bias, [np.linalg.norm(np.concatenate([
        rc.layer(want, i).b, rc.layer(want, i).bh])) for i in range(layers)], rtol=1e-4)


def test_log_norms_stay_finite_where_float32_gradients_underflow():
    t_max, width = 400, 16
    p = _params("rnn", width, 2, 1, scale=0.25, seed=1)
    xs = jax.random.normal(jax.random.PRNGKey(3), (t_max, 2, 2))
    loss = lambda out: 0.5 * jnp.sum(out[-1] ** 2, axis=-1)
    g = jax.jit(lambda: rf.grad_wrt_states("rnn", "tanh", p, xs, t_max, loss))()
    flow = jax.jit(lambda: rf.gradient_flow("rnn", "tanh", p, xs, t_max, loss))()
    assert (np.asarray(g[0, 0]) == 0).all()             # plain autodiff: exactly zero
    log_norm = np.asarray(flow.log_norm[0])
    assert np.isfinite(log_norm).all() and log_norm[0] < np.log(1e-38) - 50
    # it keeps decaying at a steady rate all the way back
    early, late = rf.fit_slope(log_norm, 0, 150), rf.fit_slope(log_norm, 200, 390)
    assert early > 0.3 and abs(early / late - 1) < 0.15
    assert float(flow.lambda1[0]) == pytest.approx(np.linalg.norm(np.asarray(p.wh), 2), rel=1e-5)


def test_tanh_rnn_decay_per_step_matches_mean_field_theory():
    # Wide random tanh RNNs, isotropic Gaussian inputs x_t ~ N(0, I_D): the theory's setting.
    width, n_inputs, t_max = 128, 32, 50
    weight_vars = (0.8, 1.0, 1.5)
    log_rms = rf.isotropic_log_rms(weight_vars, width=width, n_inputs=n_inputs, length=t_max,
                                   nets=2, batch=8)
    bias = rf.effective_bias_var(0.0, float(n_inputs), n_inputs, width)  # E‖x‖² = D
    for i, wv in enumerate(weight_vars):
        measured = rf.fit_slope(log_rms[i].mean(axis=0), 10, t_max - 2)   # q ~ q* from t ~ 5
        predicted = -rf.theory_slope(float(wv), bias)
        assert abs(measured / predicted - 1) < 0.05, (wv, measured, predicted)


def test_theory_profile_is_the_q_trajectory_sum_and_reaches_the_fixed_point_slope():
    prof = rf.theory_log_profile(60, 1.0, 0.3)
    assert prof[-1] == 0.0 and prof.shape == (60,)
    mf = th.mean_field(jnp.float32(1.0), jnp.float32(0.3), "tanh")
    # late in the sequence q_t = q*, so the profile steps by ½ ln χ₁ at q* there
    np.testing.assert_allclose(prof[-1] - prof[-2], -0.5 * np.log(float(mf.chi1)), rtol=1e-3)
    # early on q_t < q*: tanh is nearer linear there, so the gradient decays less per step
    assert prof[1] - prof[0] < 0.95 * (prof[-1] - prof[-2])
    assert rf.gamma("tanh") == pytest.approx(1.0) and rf.gamma("sigmoid") == pytest.approx(0.25)
