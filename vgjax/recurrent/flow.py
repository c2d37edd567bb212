"""Gradient flow through time: ln‖∂ℓ/∂h_t‖ for every step and layer, gate saturation, λ₁γ,
per-layer parameter-gradient norms, and the mean-field theory's per-step decay for the tanh
RNN.

**Log-norms.** ‖∂ℓ/∂h_t‖ of a net with χ₁ < 1 falls below float32's range (1e-38) within a
few hundred steps, where ``jax.grad`` with respect to zero perturbations of h_t (what
:func:`grad_wrt_states` computes, the oracle of the tests) returns exact zeros. So
:func:`gradient_flow` runs the backward pass through time itself: a reverse ``lax.scan`` that
pulls each example's cotangent back one step with ``jax.vjp`` of the masked cell step, keeps
it at unit norm and carries the log of its scale, adding each step's direct readout term in
the log domain. The vjp is linear in the cotangent and examples do not mix, so this is the
exact gradient, only never materialised at its true scale. In a stacked net each layer's
h_t also feeds the layer above at step t, so inside each reverse step the layers are pulled
back top down and each hands its input's cotangent, in the same log form, to the layer
below (:func:`state_log_norms`); every quantity here is per layer.

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


class LayerGrads(NamedTuple):
    """Norms of a gradient per layer, each [L]: input_kernel ‖∂/∂wx‖, recurrent_kernel
    ‖∂/∂wh‖, bias ‖∂/∂(b, bh)‖ (bh is the GRU's candidate bias; zero for the other cells)."""

    input_kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: jax.Array


class Flow(NamedTuple):
    """One run's gradient flow on one batch, per layer (L layers, first layer first); [t_max]
    entries are NaN past the run's steps.

    log_norm: [L, t_max] mean over examples of ln‖∂ℓ_b/∂h_t^l‖; log_rms: [L, t_max]
    ½ ln mean_b ‖∂ℓ_b/∂h_t^l‖² (the theory's quantity); saturation: [L] share of forget (LSTM)
    or update (GRU) gate values outside [0.05, 0.95] in each layer (NaN for rnn); lambda1:
    [L] largest singular value of each layer's recurrent kernel [N, G N]; param_grads:
    :class:`LayerGrads` ([L] each) of the gradient of the batch's mean loss mean_b ℓ_b.
    """

    log_norm: jax.Array
    log_rms: jax.Array
    saturation: jax.Array
    lambda1: jax.Array
    param_grads: LayerGrads


def grad_wrt_states(cell: str, activation: str, params: rc.CellParams, xs: jax.Array,
                    n_steps, output_loss: OutputLoss) -> jax.Array:
    """∂(Σ_b ℓ_b)/∂h_t^l [L, t_max, B, N] by ``jax.grad`` with respect to zero perturbations
    added to every layer's h_t (row b is example b's ∂ℓ_b/∂h_t^l). Underflows to 0 where the
    gradient is < 1e-38."""
    def total(eps):
        top = rc.run_layers(cell, activation, params, xs, n_steps, perturb=eps)[-1]
        return jnp.sum(output_loss(rc.readout(params, top.h)))
    t_max, batch = xs.shape[:2]
    zero = jnp.zeros((t_max, batch, params.wh.shape[0]), jnp.float32)
    return jnp.stack(jax.grad(total)(tuple(zero for _ in range(rc.n_layers(params)))))


def _log_norm(v: jax.Array) -> jax.Array:
    # ln of the row norms of v [B, ...]; -inf for zero rows.
    sq = jnp.sum(jnp.square(v).reshape(v.shape[0], -1), axis=1)
    return 0.5 * jnp.log(sq)


def _unit(v: jax.Array, log_norm: jax.Array) -> jax.Array:
    # v's rows divided by their norms (zero rows stay zero).
    scale = jnp.where(jnp.isfinite(log_norm), jnp.exp(-log_norm), 0.0)
    return v * scale.reshape((-1,) + (1,) * (v.ndim - 1))


class StateFlow(NamedTuple):
    """What :func:`state_log_norms` returns: log_h [L, t_max, B] ln‖∂ℓ_b/∂h_t^l‖; trajs,
    every layer's forward :class:`~vgjax.recurrent.cells.Trajectory`; grads, per layer
    the gradient of Σ_b ℓ_b with respect to its :class:`~vgjax.recurrent.cells.LayerParams`
    (float32 at its true scale)."""

    log_h: jax.Array
    trajs: tuple[rc.Trajectory, ...]
    grads: tuple[rc.LayerParams, ...]


def state_log_norms(cell: str, activation: str, params: rc.CellParams, xs: jax.Array,
                    n_steps, output_loss: OutputLoss) -> StateFlow:
    """ln‖∂ℓ_b/∂h_t^l‖ for every layer, step and example without underflow (module
    docstring), every layer's forward trajectory and its parameters' gradient
    (:class:`StateFlow`). log_h entries past the run's steps are meaningless (the caller
    masks them).

    The total derivative at h_t^l is the recurrent term (from layer l's step t + 1), the
    upward term (from layer l + 1's step t, whose input h_t^l is) and, on the top layer, the
    direct readout term; so inside each reverse time step the layers are pulled back top
    down, each adding its input's cotangent to the layer below, every term a unit row and
    the log of its scale. The layer's parameters' gradient is summed over the steps from
    the same cotangents at their true scale (a vjp of the step in the same scan iteration,
    so it costs no pass of its own).
    """
    trajs = rc.run_layers(cell, activation, params, xs, n_steps)
    cells = [rc.layer(params, i) for i in range(len(trajs))]
    direct = jax.grad(lambda hs: jnp.sum(output_loss(rc.readout(params, hs))))(trajs[-1].h)
    inputs = (xs,) + tuple(tr.h for tr in trajs[:-1])     # each layer's input at step t
    batch = xs.shape[1]

    def back(carry, inp):
        states, sums = carry
        t, xs_t, befores, r = inp
        active = t < n_steps
        log_r = _log_norm(r)
        up = (_unit(r, log_r), log_r)   # the term from above: the readout's on the top layer
        new_states, log_hs, new_sums = [None] * len(cells), [None] * len(cells), list(sums)
        for i in reversed(range(len(cells))):
            (unit, log_scale), (v, log_v) = states[i], up
            # total derivative at h_t: the later steps' cotangent plus the term from above
            m = jnp.maximum(log_scale, log_v)
            m = jnp.where(jnp.isfinite(m), m, 0.0)
            a = jnp.exp(log_scale - m)[:, None]
            gh = a * unit.h + jnp.exp(log_v - m)[:, None] * v
            gc = a * unit.c
            log_hs[i] = m + _log_norm(gh)
            step = lambda carry, x, p=cells[i]: rc.masked_step(cell, activation, p, carry, x,
                                                                active)[0]
            # the parameters' share of step t: the cotangent at its true scale exp(m) gh
            _, pull_p = jax.vjp(lambda p: step(befores[i], xs_t[i], p), cells[i])
            scale = jnp.exp(m)[:, None]
            (dp,) = pull_p(rc.Carry(scale * gh, scale * gc))
            new_sums[i] = jax.tree.map(jnp.add, sums[i], dp)
            if i:   # the input h_t^{l-1}'s cotangent is the layer below's term from above
                _, pull = jax.vjp(step, befores[i], xs_t[i])
                prev, dx = pull(rc.Carry(gh, gc))
                log_dx = _log_norm(dx)
                up = (_unit(dx, log_dx), m + log_dx)
            else:   # the first layer's input is the data: its cotangent is not needed
                _, pull = jax.vjp(lambda carry: step(carry, xs_t[0]), befores[0])
                (prev,) = pull(rc.Carry(gh, gc))
            log_prev = _log_norm(jnp.concatenate([prev.h, prev.c], axis=1))
            unit_prev = rc.Carry(_unit(prev.h, log_prev), _unit(prev.c, log_prev))
            new_states[i] = (unit_prev, m + log_prev)
        return (tuple(new_states), tuple(new_sums)), tuple(log_hs)

    zero = jnp.zeros((batch, params.wh.shape[0]), jnp.float32)
    init = tuple((rc.Carry(zero, zero), jnp.full((batch,), -jnp.inf, jnp.float32))
                 for _ in cells)
    sums = tuple(jax.tree.map(jnp.zeros_like, p) for p in cells)
    (_, grads), log_h = jax.lax.scan(back, (init, sums),
                                     (jnp.arange(xs.shape[0]), inputs,
                                      tuple(tr.before for tr in trajs), direct), reverse=True)
    return StateFlow(jnp.stack(log_h), trajs, grads)


def lambda1(params: rc.CellParams | rc.LayerParams) -> jax.Array:
    """The recurrent kernel's largest singular value (spectral norm of wh [N, G N]) of one
    layer (a :class:`~vgjax.recurrent.cells.CellParams`: its first), by
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
    log_h, trajs, grads = state_log_norms(cell, activation, params, xs, n_steps, output_loss)
    inside = jnp.arange(xs.shape[0]) < n_steps
    nan = jnp.float32(jnp.nan)
    log_norm = jnp.where(inside, jnp.mean(log_h, axis=-1), nan)
    log_rms = jnp.where(inside, 0.5 * (jax.nn.logsumexp(2.0 * log_h, axis=-1)
                                       - jnp.log(log_h.shape[-1])), nan)
    if cell == "rnn":
        saturation = jnp.full((len(trajs),), nan)
    else:
        def share(gate):
            sat = (gate > SATURATED_HIGH) | (gate < SATURATED_LOW)
            w = jnp.broadcast_to(inside[:, None, None], sat.shape)
            return jnp.sum(sat & w) / jnp.maximum(jnp.sum(w), 1)
        saturation = jnp.stack([share(tr.gate) for tr in trajs])
    lam = jnp.stack([lambda1(rc.layer(params, i)) for i in range(len(trajs))])
    mean = [jax.tree.map(lambda g: g / xs.shape[1], g) for g in grads]   # of mean_b ℓ_b
    return Flow(log_norm, log_rms, saturation, lam, layer_grad_norms(mean))


def layer_grad_norms(layers) -> LayerGrads:
    """:class:`LayerGrads` of a sequence of per-layer
    :class:`~vgjax.recurrent.cells.LayerParams`-shaped gradients (Frobenius norms)."""
    norm = lambda *arrays: jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in arrays))
    return LayerGrads(jnp.stack([norm(g.wx) for g in layers]),
                      jnp.stack([norm(g.wh) for g in layers]),
                      jnp.stack([norm(g.b, g.bh) for g in layers]))


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
        log_h = state_log_norms("rnn", activation, p, xs, length, loss).log_h
        return 0.5 * jax.nn.logsumexp(2.0 * log_h[0], axis=1)
    keys = jax.random.split(jax.random.PRNGKey(seed), nets)
    f = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
    return np.asarray(f(keys, jnp.asarray(weight_vars, jnp.float32)))
