"""Gradient flow through time: ln‖∂ℓ/∂h_t‖ for every step, gate saturation, λ₁γ, and the
mean-field theory's per-step decay for the tanh RNN.

**Log-norms.** ‖∂ℓ/∂h_t‖ of a net with χ₁ < 1 falls below float32's range (1e-38) within a
few hundred steps, where ``jax.grad`` with respect to zero perturbations of h_t (what
:func:`grad_wrt_states` computes, the oracle of the tests) returns exact zeros. So
:func:`gradient_flow` runs the backward pass through time itself: a reverse ``lax.scan`` that
pulls each example's cotangent back one step with ``jax.vjp`` of the masked cell step, keeps
it at unit norm and carries the log of its scale, adding each step's direct readout term in
the log domain. The vjp is linear in the cotangent and examples do not mix, so this is the
exact gradient, only never materialised at its true scale.

**Theory** (Chen, Pennington & Schoenholz 2018: a random RNN at initialisation is a deep
feed-forward net with time as depth). For h_t = φ(u_t), u_t = W h_{t−1} + U x_t + b with
W_ij ~ N(0, σ_w²/N), the pre-activation's second moment follows the length map with an
effective bias variance ``σ_b² + Var(U) E‖x‖²`` (:func:`effective_bias_var`; Glorot's
Var(U) = 2/(D + N)), and ‖∂ℓ/∂h_{t−1}‖² = χ(q_t) ‖∂ℓ/∂h_t‖² with χ(q) = σ_w² E[φ′(√q z)²]:
per step back in time, ln‖∂ℓ/∂h_t‖ falls by ½ ln χ₁ at q* (:func:`theory_slope`) or, before
q has converged, by ½ ln χ(q_t) along the q-trajectory (:func:`theory_log_profile`). The
theory assumes isotropic inputs; the tasks' inputs are two (adding) or ten (copy) channels.

**Pascanu et al. 2013**: gradients vanish when λ₁ γ < 1, λ₁ the recurrent matrix's largest
singular value and γ = max |φ′| (:func:`lambda1`, :func:`gamma`); a vanilla-RNN bound, so
reports use it for ``rnn`` cells only.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vgjax import theory as th
from vgjax.probes import jacobi_singular_values
from vgjax.recurrent import cells as rc
from vgjax.recurrent import tasks as rt

SATURATED_LOW, SATURATED_HIGH = 0.05, 0.95

OutputLoss = Callable[[jax.Array], jax.Array]   # readouts [t_max, B, C] -> losses [B]


class Flow(NamedTuple):
    """One run's gradient flow on one batch; [t_max] arrays are NaN past the run's steps.

    log_norm: [t_max] mean over examples of ln‖∂ℓ_b/∂h_t‖; log_rms: [t_max]
    ½ ln mean_b ‖∂ℓ_b/∂h_t‖² (the theory's quantity); saturation: [] share of forget (LSTM)
    or update (GRU) gate values outside [0.05, 0.95] (NaN for rnn); lambda1: [] largest
    singular value of the recurrent kernel [N, G N].
    """

    log_norm: jax.Array
    log_rms: jax.Array
    saturation: jax.Array
    lambda1: jax.Array


def grad_wrt_states(cell: str, activation: str, params: rc.CellParams, xs: jax.Array,
                    n_steps, output_loss: OutputLoss) -> jax.Array:
    """∂(Σ_b ℓ_b)/∂h_t [t_max, B, N] by ``jax.grad`` with respect to zero perturbations added
    to h_t (row b is example b's ∂ℓ_b/∂h_t). Underflows to 0 where the gradient is < 1e-38."""
    def total(eps):
        traj = rc.run(cell, activation, params, xs, n_steps, perturb=eps)
        return jnp.sum(output_loss(rc.readout(params, traj.h)))
    t_max, batch = xs.shape[:2]
    return jax.grad(total)(jnp.zeros((t_max, batch, params.wh.shape[0]), jnp.float32))


def _log_norm(v: jax.Array) -> jax.Array:
    # ln of the row norms of v [B, ...]; -inf for zero rows.
    sq = jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=1)
    return 0.5 * jnp.log(sq)


def _unit(v: jax.Array, log_norm: jax.Array) -> jax.Array:
    # v's rows divided by their norms (zero rows stay zero).
    scale = jnp.where(jnp.isfinite(log_norm), jnp.exp(-log_norm), 0.0)
    return v * scale.reshape((-1,) + (1,) * (v.ndim - 1))


def state_log_norms(cell: str, activation: str, params: rc.CellParams, xs: jax.Array,
                    n_steps, output_loss: OutputLoss) -> tuple[jax.Array, rc.Trajectory]:
    """ln‖∂ℓ_b/∂h_t‖ [t_max, B] for every step and example without underflow (module
    docstring), and the forward trajectory. Entries past the run's steps are meaningless
    (the caller masks them)."""
    traj = rc.run(cell, activation, params, xs, n_steps)
    direct = jax.grad(lambda hs: jnp.sum(output_loss(rc.readout(params, hs))))(traj.h)
    t_max, batch = xs.shape[:2]

    def back(state, inp):
        unit, log_scale = state                        # Carry of [B, N] unit rows, [B]
        t, x, before, r = inp
        # total derivative at h_t: the later steps' cotangent plus the direct readout term
        log_r = _log_norm(r)
        m = jnp.maximum(log_scale, log_r)
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        a = jnp.exp(log_scale - m)[:, None]
        gh = a * unit.h + jnp.exp(log_r - m)[:, None] * _unit(r, log_r)
        gc = a * unit.c
        log_h = m + _log_norm(gh)
        step = lambda carry: rc.masked_step(cell, activation, params, carry, x, t < n_steps)[0]
        _, pull = jax.vjp(step, before)
        (prev,) = pull(rc.Carry(gh, gc))
        log_prev = _log_norm(jnp.concatenate([prev.h, prev.c], axis=1))
        unit_prev = rc.Carry(_unit(prev.h, log_prev), _unit(prev.c, log_prev))
        return (unit_prev, m + log_prev), log_h

    zero = jnp.zeros((batch, params.wh.shape[0]), jnp.float32)
    init = (rc.Carry(zero, zero), jnp.full((batch,), -jnp.inf, jnp.float32))
    _, log_h = jax.lax.scan(back, init, (jnp.arange(t_max), xs, traj.before, direct),
                            reverse=True)
    return log_h, traj


def lambda1(params: rc.CellParams) -> jax.Array:
    """The recurrent kernel's largest singular value (spectral norm of wh [N, G N]), by
    :func:`vgjax.probes.jacobi_singular_values` on whᵀ: lax ops only, since a LAPACK call
    inside the grid's program can deadlock XLA:CPU's thread pool
    (:func:`vgjax.recurrent.cells.orthogonal`)."""
    return jacobi_singular_values(params.wh.T)[0]


def gamma(activation: str) -> float:
    """γ = max |φ′| over a fine grid of [-20, 20] (1 for tanh and ReLU), host-side."""
    z = jnp.linspace(-20.0, 20.0, 40001, dtype=jnp.float32)
    return float(jnp.max(jnp.abs(th.derivative_fn(activation)(z))))


def gradient_flow(cell: str, activation: str, params: rc.CellParams, xs: jax.Array, n_steps,
                  output_loss: OutputLoss) -> Flow:
    """One run's :class:`Flow` on inputs xs [t_max, B, D] of ``n_steps`` steps (traced ok)."""
    log_h, traj = state_log_norms(cell, activation, params, xs, n_steps, output_loss)
    inside = jnp.arange(xs.shape[0]) < n_steps
    nan = jnp.float32(jnp.nan)
    log_norm = jnp.where(inside, jnp.mean(log_h, axis=1), nan)
    log_rms = jnp.where(inside, 0.5 * (jax.nn.logsumexp(2.0 * log_h, axis=1)
                                       - jnp.log(log_h.shape[1])), nan)
    if cell == "rnn":
        saturation = nan
    else:
        sat = (traj.gate > SATURATED_HIGH) | (traj.gate < SATURATED_LOW)
        w = jnp.broadcast_to(inside[:, None, None], sat.shape)
        saturation = jnp.sum(sat & w) / jnp.maximum(jnp.sum(w), 1)
    return Flow(log_norm, log_rms, saturation, lambda1(params))


def task_flow(task: rt.Task, cell: str, activation: str, params: rc.CellParams,
              batch: rt.SeqBatch, length) -> Flow:
    """:func:`gradient_flow` of a task's per-example loss on one of its batches."""
    return gradient_flow(cell, activation, params, batch.x, rt.task_steps(task, length),
                         lambda out: rt.example_losses(task, out, batch))


# ------------------------------------------------------------------------------------------
# Theory (tanh RNN with Gaussian recurrent kernel)


def effective_bias_var(bias_var: float, input_sq: float, n_inputs: int, width: int) -> float:
    """σ_b² + Var(U) E‖x‖²: the input's share of the pre-activation variance, with Glorot's
    Var(U) = 2/(D + N) for the input kernel and ``input_sq`` = E‖x_t‖²."""
    return bias_var + 2.0 / (n_inputs + width) * input_sq


def theory_slope(weight_var: float, bias_var: float, activation: str = "tanh") -> float:
    """½ ln χ₁ at q*: the predicted change of ln‖∂ℓ/∂h_t‖ per step back in time."""
    mf = th.mean_field(jnp.float32(weight_var), jnp.float32(bias_var), activation)
    return 0.5 * float(np.log(float(mf.chi1)))


def theory_log_profile(length: int, weight_var: float, bias_var: float,
                       activation: str = "tanh") -> np.ndarray:
    """[length] predicted ln‖∂ℓ/∂h_t‖ − ln‖∂ℓ/∂h_T‖ for t = 1..T along the q-trajectory from
    h_0 = 0 (q_1 = σ_b²): the sum of ½ ln χ(q_s) over s = t+1..T."""
    qs = th.q_trajectory(0.0, length, weight_var, bias_var, activation)          # q_1..q_T
    chi = jax.vmap(lambda q: th.chi1(q, weight_var, activation))(qs)
    half = 0.5 * np.log(np.asarray(chi, np.float64))
    return np.concatenate([np.cumsum(half[1:][::-1])[::-1], [0.0]])


def fit_slope(log_norms: np.ndarray, lo: int, hi: int) -> float:
    """Least-squares slope of ``log_norms`` [t_max] (per unit t) over steps lo..hi−1; the
    decay per step back in time is its negative."""
    t = np.arange(lo, hi, dtype=np.float64)
    return float(np.polyfit(t, np.asarray(log_norms[lo:hi], np.float64), 1)[0])


def isotropic_log_rms(weight_vars, *, width: int, n_inputs: int, length: int, nets: int,
                      batch: int, seed: int = 0, activation: str = "tanh") -> np.ndarray:
    """The theory's setting measured: ½ ln Σ_b ‖∂ℓ_b/∂h_t‖² [W, nets, length] of fresh rnn
    nets (Gaussian recurrent kernel N(0, σ_w²/N) for each σ_w² of ``weight_vars``, Glorot
    input kernel, zero bias) driven by isotropic inputs x_t ~ N(0, I_D), ℓ = ½ y_T² of the
    readout after the last step. Effective bias variance: :func:`effective_bias_var` with
    E‖x‖² = D. One jit-compiled program (nets x σ_w² vmapped)."""
    def loss(out):
        return 0.5 * jnp.sum(jnp.square(out[-1]), axis=-1)

    def one(key, wv):
        kp, kx = jax.random.split(key)
        spec = rc.InitSpec(jnp.int32(rc.INITS.index("normal")), wv, jnp.float32(0.0),
                           jnp.float32(0.0))
        p = rc.init_cell(kp, "rnn", n_inputs=n_inputs, width=width, n_outputs=1, spec=spec)
        xs = jax.random.normal(kx, (length, batch, n_inputs))
        log_h, _ = state_log_norms("rnn", activation, p, xs, length, loss)
        return 0.5 * jax.nn.logsumexp(2.0 * log_h, axis=1)
    keys = jax.random.split(jax.random.PRNGKey(seed), nets)
    f = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
    return np.asarray(f(keys, jnp.asarray(weight_vars, jnp.float32)))
