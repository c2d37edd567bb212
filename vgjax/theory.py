"""Mean-field theory of signal propagation in deep random MLPs (Poole et al. 2016,
Schoenholz et al. 2017), as small pure JAX functions.

A layer ``h^{l+1} = W φ(h^l) + b`` with ``W_ij ~ N(0, σ_w²/N)`` and ``b_i ~ N(0, σ_b²)`` maps,
at infinite width, the pre-activation second moment ``q`` and the correlation ``c`` of two
inputs by

* the length map      ``q' = σ_w² E_z[φ(√q z)²] + σ_b²``,
* the correlation map ``c' = (σ_w² E[φ(u₁) φ(u₂)] + σ_b²) / q*``, ``u₁ = √q* z₁``,
  ``u₂ = √q* (c z₁ + √(1 − c²) z₂)``,

and a backward signal by ``χ₁ = σ_w² E[φ′(√q* z)²]`` per layer, so a layer ``l`` of an ``L``
layer net sees gradients ∝ ``χ₁^{L−l}``. The correlation map's slope at its stable fixed point
``c*`` is ``χ_c = σ_w² E[φ′(u₁) φ′(u₂)]``, and correlations approach ``c*`` over a depth scale
``ξ_c = −1 / ln χ_c`` (infinite at the order-to-chaos transition χ₁ = 1).

Every function takes the variances as (possibly traced) scalars and the activation as a static
name from :data:`vgjax.model.ACTIVATION_FNS` or a JAX-traceable elementwise callable, so a
(σ_w², σ_b²) grid is one ``jax.vmap``; see :func:`phase_grid`.

Gaussian expectations use Gauss quadrature split where the usual activations have their kink
(at a pre-activation of 0): a half-range Gauss–Hermite rule on each half-line for one
variable, and polar coordinates for two correlated variables (both kinks are then rays, so
the angle integral is split at them and the radial one uses a Gauss rule for the weight
``r e^{-r²/2}``). Piecewise-polynomial activations (ReLU, leaky ReLU, linear) and their step
derivatives are then integrated exactly up to rounding, smooth ones to float32 rounding.
Kinks away from 0 (e.g. a hard sigmoid) still converge, more slowly.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, polygamma

from vgjax.model import activation_fn

Activation = str | Callable[[jax.Array], jax.Array]

N_HALF = 40      # half-range Gauss–Hermite nodes per half-line (1-D expectations)
N_RADIAL = 32    # radial nodes for 2-D expectations
N_ARC = 24       # Gauss–Legendre nodes on each of the 4 angular arcs
Q_ITERS = 2000   # most q-map iterations for q*
Q_RTOL = 1e-7    # q* converged when |q' - q| <= Q_RTOL * q (relative, so q* -> 0 reaches 0)
Q_GROW = 1e-5    # q* diverges when the map still grows q by this fraction where it stopped
Q_STALL = 1e-6   # steps below Q_STALL * q that stop shrinking are float32 rounding: stop
C_BISECT = 40    # bisection steps for c* (bracket [-1, 1 - C_EPS] shrinks 2^40-fold)
C_EPS = 1e-6
XI_EPS = 1e-6    # chi_c within this of 1 is critical: float32 cannot resolve xi_c > ~1e6
Q_MIN = 1e-30    # chi1, chi_c at q* = 0 are their q -> 0+ limits (ReLU': 1/2, not relu'(0)²)


def _gauss_rule(weight: Callable[[np.ndarray], np.ndarray], n: int, *, upper: float = 20.0,
                panels: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule (nodes [n], weights [n]) for ``∫_0^∞ f(x) weight(x) dx``, float64 NumPy.

    Discretised Stieltjes procedure (Gautschi): the measure is replaced by a composite
    20-point Gauss–Legendre discretisation of [0, upper] (the weights used here are < e^{-190}
    beyond 20), the three-term recurrence of its orthonormal polynomials is built by
    Stieltjes' procedure and the rule is read off the Jacobi matrix's eigen-decomposition
    (Golub–Welsch).
    """
    x, w = np.polynomial.legendre.leggauss(20)
    h = upper / panels
    left = h * np.arange(panels)[:, None]
    t = (left + 0.5 * h * (x[None, :] + 1.0)).ravel()
    wt = np.tile(0.5 * h * w, panels) * weight(t)
    alpha, beta = np.zeros(n), np.zeros(n)
    p_prev, p = np.zeros_like(t), np.full_like(t, 1.0 / math.sqrt(wt.sum()))
    b_prev = 0.0
    for k in range(n):
        alpha[k] = np.sum(wt * t * p * p)
        r = (t - alpha[k]) * p - b_prev * p_prev
        beta[k] = math.sqrt(np.sum(wt * r * r))
        p_prev, p, b_prev = p, r / beta[k], beta[k]
    jacobi = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    nodes, vecs = np.linalg.eigh(jacobi)
    return nodes, wt.sum() * vecs[0] ** 2


@functools.lru_cache(maxsize=None)
def half_hermite_rule(n: int = N_HALF) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for ``∫_0^∞ f(z) ϕ(z) dz``, ϕ the standard normal density (Σw = ½)."""
    return _gauss_rule(lambda z: np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi), n)


@functools.lru_cache(maxsize=None)
def radial_rule(n: int = N_RADIAL) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for ``∫_0^∞ f(r) r e^{-r²/2} dr`` (the 2-D normal's radius; Σw = 1)."""
    return _gauss_rule(lambda r: r * np.exp(-0.5 * r * r), n)


def derivative_fn(activation: Activation) -> Callable[[jax.Array], jax.Array]:
    """φ′ elementwise, by ``jax.grad`` of the scalar φ (ReLU′(0) = 0, as JAX defines it)."""
    g = jax.grad(lambda z: activation_fn(activation)(z))

    def dphi(x: jax.Array) -> jax.Array:
        flat = jnp.ravel(x)
        return jax.vmap(g)(flat).reshape(jnp.shape(x))
    return dphi


def gauss_mean(f: Callable[[jax.Array], jax.Array], q) -> jax.Array:
    """``E_z[f(√q z)]``, z ~ N(0, 1), for an elementwise ``f``; ``q >= 0`` may be traced."""
    z, w = (jnp.asarray(a, jnp.float32) for a in half_hermite_rule())
    s = jnp.sqrt(q)
    return jnp.sum(w * (f(s * z) + f(-s * z)))


def gauss_mean2(f: Callable, g: Callable, q, c) -> jax.Array:
    """``E[f(u₁) g(u₂)]`` for (u₁, u₂) ~ N(0, q [[1, c], [c, 1]]), ``-1 <= c <= 1``.

    In polar coordinates (z₁, z₂) = r (cos θ, sin θ), u₁ = √q r cos θ and
    u₂ = √q r cos(θ − a) with a = arccos c; kinks at u = 0 are the angles θ = ±π/2 and
    a ± π/2, so [0, 2π) is cut there into 4 arcs, each with its own Gauss–Legendre rule.
    """
    r, wr = (jnp.asarray(a, jnp.float32) for a in radial_rule())
    x, wx = (jnp.asarray(a, jnp.float32) for a in np.polynomial.legendre.leggauss(N_ARC))
    a = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    half = 0.5 * jnp.pi
    cuts = jnp.sort(jnp.mod(jnp.stack([half, 3 * half, a + half, a + 3 * half]), 2 * jnp.pi))
    lo = cuts
    hi = jnp.concatenate([cuts[1:], cuts[:1] + 2 * jnp.pi])
    theta = (0.5 * (lo + hi))[:, None] + (0.5 * (hi - lo))[:, None] * x[None, :]   # [4, N]
    wtheta = (0.5 * (hi - lo))[:, None] * wx[None, :] / (2 * jnp.pi)              # [4, N]
    s = jnp.sqrt(q) * r                                                             # [R]
    u1 = s[None, None, :] * jnp.cos(theta)[:, :, None]
    u2 = s[None, None, :] * jnp.cos(theta - a)[:, :, None]
    return jnp.sum(wtheta[:, :, None] * wr[None, None, :] * f(u1) * g(u2))


def qmap(q, weight_var, bias_var, activation: Activation) -> jax.Array:
    """One layer of the length map: ``σ_w² E[φ(√q z)²] + σ_b²`` (scalars in, scalar out)."""
    phi = activation_fn(activation)
    return weight_var * gauss_mean(lambda u: phi(u) ** 2, q) + bias_var


def q_trajectory(q0, depth: int, weight_var, bias_var, activation: Activation) -> jax.Array:
    """``[depth]`` pre-activation second moments q¹..q^depth of the layers, from the input's q⁰.

    ``q⁰`` is the input's mean squared feature, so q¹ = σ_w² q⁰ + σ_b² (the first layer reads
    the raw input, not φ of it); later layers apply :func:`qmap`.
    """
    q1 = weight_var * q0 + bias_var

    def step(q, _):
        nxt = qmap(q, weight_var, bias_var, activation)
        return nxt, q
    _, qs = jax.lax.scan(step, jnp.asarray(q1, jnp.float32), None, length=depth)
    return qs


def q_star(weight_var, bias_var, activation: Activation, *, q0=1.0) -> jax.Array:
    """Fixed point q* of :func:`qmap` reached by iterating it from ``q0`` (``lax.while_loop``).

    Stops when ``|q' − q| <= Q_RTOL q``, when the steps have stalled at float32 rounding
    (growing again while below ``Q_STALL q``), or after ``Q_ITERS`` steps. ``inf`` when
    the length diverges, i.e. the map still grows q by more than ``Q_GROW`` where the loop
    stopped (e.g. ReLU with σ_w² >= 2 and σ_b² > 0, linear with σ_w² >= 1).
    """
    def cond(state):
        i, q, dq, dq_prev = state
        stalled = (dq > dq_prev) & (dq <= Q_STALL * q)
        return (i < Q_ITERS) & (dq > Q_RTOL * q) & ~stalled   # NaN/inf stops too

    def body(state):
        i, q, dq, _ = state
        nxt = qmap(q, weight_var, bias_var, activation)
        return i + 1, nxt, jnp.abs(nxt - q), dq

    q0 = jnp.asarray(q0, jnp.float32)
    _, q, _, _ = jax.lax.while_loop(cond, body, (0, q0, jnp.float32(3e38), jnp.float32(jnp.inf)))
    growing = qmap(q, weight_var, bias_var, activation) > q * (1.0 + Q_GROW)
    return jnp.where(jnp.isnan(q) | growing, jnp.inf, q)


def cmap(c, q, weight_var, bias_var, activation: Activation) -> jax.Array:
    """One layer of the correlation map at length ``q``: ``q₁₂' / q'``.

    Normalised by the next layer's length rather than by q*, so it stays a correlation
    (|c'| <= 1) when ``q`` is not exactly a fixed point.
    """
    phi = activation_fn(activation)
    q12 = weight_var * gauss_mean2(phi, phi, q, c) + bias_var
    return q12 / qmap(q, weight_var, bias_var, activation)


def c_star(q, weight_var, bias_var, activation: Activation) -> jax.Array:
    """The stable fixed point c* of :func:`cmap` at length ``q`` (a scalar in [-1, 1]).

    Bisection for the sign change of ``cmap(c) − c`` from + to − on [-1, 1 − C_EPS] (a
    stable fixed point), in a fixed ``C_BISECT`` steps under ``lax.fori_loop``: plain
    iteration would need ~1/(1 − χ_c) steps, unbounded near the critical line. When no such
    crossing lies below 1 (the ordered phase), it ends at 1 − C_EPS; 1 is returned there.
    """
    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        up = cmap(mid, q, weight_var, bias_var, activation) >= mid
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, C_BISECT, body, (jnp.float32(-1.0), jnp.float32(1.0 - C_EPS)))
    c = 0.5 * (lo + hi)
    return jnp.where(c >= 1.0 - 2 * C_EPS, 1.0, c)


def chi1(q, weight_var, activation: Activation) -> jax.Array:
    """``χ₁ = σ_w² E[φ′(√q z)²]``: the mean squared singular value of one layer's Jacobian."""
    dphi = derivative_fn(activation)
    return weight_var * gauss_mean(lambda u: dphi(u) ** 2, q)


def chi_c(c, q, weight_var, activation: Activation) -> jax.Array:
    """``χ_c = σ_w² E[φ′(u₁) φ′(u₂)]``: the slope of the correlation map at ``c`` (length q)."""
    dphi = derivative_fn(activation)
    return weight_var * gauss_mean2(dphi, dphi, q, c)


class MeanField(NamedTuple):
    """The mean-field summary of one (σ_w², σ_b², φ); every field has the inputs' shape."""

    q_star: jax.Array
    chi1: jax.Array
    c_star: jax.Array
    chi_c: jax.Array
    xi_c: jax.Array


def mean_field(weight_var, bias_var, activation: Activation, *, q0=1.0) -> MeanField:
    """q*, χ₁, c*, χ_c and ξ_c = −1/ln χ_c for scalar variances (vmap for grids).

    Where χ₁ <= 1 (the ordered phase, including q* = 0 where the signal dies out) the stable
    fixed point is c* = 1 and χ_c = χ₁ (Poole et al.: the c-map's slope at 1 is χ₁); setting
    it there avoids resolving a float32 bisection against rounding noise at c -> 1. Where q*
    is infinite (the length diverges) c*, χ_c and ξ_c are NaN. ξ_c is ``inf`` where
    χ_c >= 1 − XI_EPS (float32 resolves χ_c to ~1e-7, so larger ξ_c would be rounding).
    """
    q = q_star(weight_var, bias_var, activation, q0=q0)
    finite = jnp.isfinite(q)
    q_safe = jnp.where(finite, jnp.maximum(q, Q_MIN), 1.0)
    x1 = chi1(jnp.maximum(q, Q_MIN), weight_var, activation)
    c = jnp.where(x1 <= 1.0, 1.0, c_star(q_safe, weight_var, bias_var, activation))
    xc = jnp.where(c == 1.0, x1, chi_c(c, q_safe, weight_var, activation))
    xi = jnp.where(xc >= 1.0 - XI_EPS, jnp.inf, -1.0 / jnp.log(xc))
    nan = jnp.float32(jnp.nan)
    return MeanField(q, x1, jnp.where(finite, c, nan), jnp.where(finite, xc, nan),
                     jnp.where(finite, xi, nan))


def phase_grid(weight_vars, bias_vars, activation: Activation, *, q0=1.0) -> MeanField:
    """:func:`mean_field` over the outer product: fields ``[len(weight_vars), len(bias_vars)]``.

    One jit-compiled program (two nested ``vmap`` calls).
    """
    check_activation(activation)
    f = lambda w, b: mean_field(w, b, activation, q0=q0)
    grid = jax.jit(jax.vmap(jax.vmap(f, in_axes=(None, 0)), in_axes=(0, None)))
    return grid(jnp.asarray(weight_vars, jnp.float32), jnp.asarray(bias_vars, jnp.float32))


def critical_weight_var(bias_var, activation: Activation, *, lo=0.25, hi=16.0,
                        steps: int = 30) -> jax.Array:
    """σ_w² on the order-to-chaos line χ₁(σ_w², σ_b²) = 1 for a scalar σ_b² (vmap for a line).

    Bisection in log σ_w² over [lo, hi] for a fixed ``steps`` under ``lax.fori_loop`` (χ₁ at
    q* grows with σ_w² for the usual activations); ``hi`` or ``lo`` when no crossing lies
    between them.
    """
    def body(_, bracket):
        a, b = bracket
        mid = jnp.sqrt(a * b)
        x1 = chi1(jnp.maximum(q_star(mid, bias_var, activation), Q_MIN), mid, activation)
        return jnp.where(x1 < 1.0, mid, a), jnp.where(x1 < 1.0, b, mid)

    a, b = jax.lax.fori_loop(0, steps, body, (jnp.float32(lo), jnp.float32(hi)))
    return jnp.sqrt(a * b)


def grad_scale(chi1_value, depth: int) -> jax.Array:
    """``[depth]`` predicted gradient scale of layers 1..depth relative to the last: χ₁^{L−l}."""
    return chi1_value ** jnp.arange(depth - 1, -1, -1, dtype=jnp.float32)


def check_variances(weight_var: float, bias_var: float) -> None:
    """ValueError unless σ_w² > 0 and σ_b² >= 0 are finite numbers."""
    if not (isinstance(weight_var, (int, float)) and math.isfinite(weight_var)
            and weight_var > 0):
        raise ValueError(f"weight_var: {weight_var!r} is out of range; allowed: finite "
                         "numbers > 0")
    if not (isinstance(bias_var, (int, float)) and math.isfinite(bias_var) and bias_var >= 0):
        raise ValueError(f"bias_var: {bias_var!r} is out of range; allowed: finite numbers >= 0")


def check_activation(activation: Activation) -> None:
    """ValueError unless φ is traceable and E[φ(√q z)²], E[φ′(√q z)²] are finite for q in
    [0.01, 100] with an integrand that has decayed at the quadrature's outer nodes (an
    integrand still growing there, e.g. φ = exp(z²), has no finite expectation).
    """
    name = activation if isinstance(activation, str) else getattr(activation, "__name__",
                                                                  repr(activation))
    phi, dphi = activation_fn(activation), derivative_fn(activation)
    z, w = half_hermite_rule()
    try:
        for f in (lambda u: phi(u) ** 2, lambda u: dphi(u) ** 2):
            for q in (0.01, 1.0, 100.0):
                u = np.sqrt(q) * np.concatenate([z, -z]).astype(np.float32)
                vals = np.asarray(f(jnp.asarray(u)), np.float64)
                terms = np.concatenate([w, w]) * vals
                total = terms.sum()
                tail = np.abs(terms[[len(z) - 1, 2 * len(z) - 1]]).max()
                if not (np.all(np.isfinite(vals)) and tail <= 1e-6 * (1.0 + abs(total))):
                    raise ValueError(f"activation: {name} has no finite Gaussian "
                                     f"expectation E[φ(√q z)²] or E[φ′(√q z)²] at q = {q:g}")
    except (TypeError, jax.errors.JAXTypeError) as err:
        raise ValueError(f"activation: {name} is not a JAX-traceable elementwise function "
                         f"({type(err).__name__})") from None


FIELDS = ("q_star", "chi1", "c_star", "chi_c", "xi_c")
"""The mean-field quantities, in the order tables and ``vgjax theory --json`` give them."""


def table(weight_vars, bias_vars, activation: Activation) -> list[dict]:
    """Host-side rows ``{activation, weight_var, bias_var, q_star, chi1, c_star, chi_c, xi_c}``
    over the outer product of the two lists (σ_w² outermost), as Python floats.

    Checks every variance and the activation first (one-line ``ValueError``).
    """
    weight_vars, bias_vars = list(weight_vars), list(bias_vars)
    for w in weight_vars:
        check_variances(w, 0.0)
    for b in bias_vars:
        check_variances(1.0, b)
    grid = phase_grid(weight_vars, bias_vars, activation)
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "fn")
    vals = {k: np.asarray(v, np.float64) for k, v in grid._asdict().items()}
    return [{"activation": name, "weight_var": float(w), "bias_var": float(b),
             **{k: float(vals[k][i, j]) for k in FIELDS}}
            for i, w in enumerate(weight_vars) for j, b in enumerate(bias_vars)]


# ----------------------------------------------------------------------------------------
# Remedies: random-walk initialisation, residual blocks, BatchNorm (gradients at init)

class WalkStep(NamedTuple):
    """Mean and variance of one layer's increment of ``ln ||δ_l||`` going back one layer."""

    mean: jax.Array
    var: jax.Array


def random_walk_step(n: int, gain, activation: str = "linear") -> WalkStep:
    """One layer's increment of ``ln ||δ||`` backpropagated through ``N x N`` Gaussian weights
    ``N(0, g²/N)`` (Sussillo & Abbott 2014), at initialisation.

    ``linear``: exactly ``½ ln(g² χ²_N / N)``, so the mean is ``ln g + ½ (ψ(N/2) + ln(2/N))``
    and the variance ``ψ′(N/2) / 4`` (ψ the digamma function); ``g = exp(1/(2N))`` makes the
    mean ``−1/(6N²) + O(1/N³)``.

    ``relu``: ``½ ln(g² χ²_K / N)`` with ``K ~ Binomial(N, ½)`` active units, conditioned on
    ``K >= 1`` (a layer with no active unit kills the gradient: such nets are left out), and
    the weights taken independent of the forward pass (the gradient-independence
    assumption; exact for linear nets). Mean ``ln g + ½ E[ψ(K/2) + ln(2/N)]``, variance
    ``¼ E[ψ′(K/2)] + ¼ Var[ψ(K/2)]``.

    Args:
      n: the width N (static int; all layers N x N).
      gain: g (may be traced).
      activation: ``"linear"`` or ``"relu"``.
    Returns:
      :class:`WalkStep` of float32 scalars.
    """
    g = jnp.asarray(gain, jnp.float32)
    if activation == "linear":
        half = jnp.float32(n / 2)
        mean = jnp.log(g) + 0.5 * (digamma(half) + jnp.log(2.0 / n))
        return WalkStep(mean, 0.25 * polygamma(1, half))
    if activation != "relu":
        raise ValueError(f"activation: {activation!r} has no random-walk theory; allowed: "
                         "linear, relu")
    k = jnp.arange(1, n + 1, dtype=jnp.float32)
    # Binomial(N, 1/2) weights of k = 1..N, renormalised to condition on k >= 1
    logw = gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0) - n * jnp.log(2.0)
    w = jnp.exp(logw) / jnp.sum(jnp.exp(logw))
    psi = digamma(0.5 * k)
    e_psi = jnp.sum(w * psi)
    mean = jnp.log(g) + 0.5 * (e_psi + jnp.log(2.0 / n))
    var = 0.25 * jnp.sum(w * polygamma(1, 0.5 * k)) + 0.25 * jnp.sum(w * (psi - e_psi) ** 2)
    return WalkStep(mean, var)


def relu_dead_layer_probability(n: int, steps: int) -> float:
    """Chance that one of ``steps`` ReLU layers of width N has no active unit for a given
    input (each unit active with probability ½, independently): ``1 − (1 − 2^{−N})^steps``."""
    return float(-np.expm1(steps * np.log1p(-(0.5 ** n))))


def residual_block_growth(alpha, weight_var, branch_var, activation: Activation = "relu", *,
                          q=1.0) -> tuple[jax.Array, jax.Array]:
    """Per-block growth of the forward second moment and of the gradient's squared norm for
    the residual block ``h' = h + α V φ(W h)`` (two Dense layers, no biases), ``W ~ N(0,
    σ_w²/N)``, ``V ~ N(0, σ_v²/N)``, at infinite width and initialisation.

    Forward ``q' / q = 1 + α² σ_v² E[φ(√(σ_w² q) z)²] / q``; backward
    ``E||δ||² / E||δ'||² = 1 + α² σ_v² σ_w² E[φ′(√(σ_w² q) z)²]`` (the cross terms vanish in
    expectation; gradient independence). For ReLU both are ``1 + α² σ_v² σ_w² / 2``,
    whatever q: ``1 + α² σ_v²`` for a He-initialised inner layer (σ_w² = 2), so a depth-L
    stack grows by ``(1 + α² σ_v²)^L``: exponential at α = 1, bounded (→ e^{σ_v²}) at α =
    1/√L (Yang & Schoenholz 2017; Hayou et al. 2021).

    Args: scalars (may be traced); ``q`` the block input's second moment.
    Returns: (forward factor, gradient factor), float32 scalars.
    """
    phi, dphi = activation_fn(activation), derivative_fn(activation)
    inner = weight_var * q
    fwd = 1.0 + alpha ** 2 * branch_var * gauss_mean(lambda u: phi(u) ** 2, inner) / q
    bwd = 1.0 + alpha ** 2 * branch_var * weight_var * gauss_mean(lambda u: dphi(u) ** 2, inner)
    return fwd, bwd


BATCHNORM_RELU_GROWTH = math.pi / (math.pi - 1.0)
"""Yang et al. (2019): with BatchNorm (no learnt scale), ReLU units and a large batch, the
gradient's squared norm grows by π/(π−1) ≈ 1.467 per layer going back from the loss."""


def batchnorm_growth(activation: Activation = "relu") -> jax.Array:
    """Large-batch per-layer growth of the gradient's squared norm in ``h = φ(BN(W h))``
    nets at initialisation: ``E[φ′(z)²] / Var[φ(z)]``, z ~ N(0, 1), whatever σ_w² (BatchNorm
    divides it out).

    BatchNorm makes each pre-activation N(0, 1) over the batch; going back one layer the
    gradient is multiplied by σ_w² E[φ′²] through ``W`` and φ, and divided by the next
    layer's batch variance σ_w² Var[φ(z)] (BatchNorm's 1/σ); the two directions BatchNorm's
    Jacobian projects out are a vanishing share of a large batch. For ReLU this is
    ``(1/2) / (1/2 − 1/(2π)) = π/(π−1)`` (:data:`BATCHNORM_RELU_GROWTH`); for linear units it
    is 1, the large-batch limit of :func:`batchnorm_growth_linear`.
    """
    phi, dphi = activation_fn(activation), derivative_fn(activation)
    m1 = gauss_mean(phi, 1.0)
    return gauss_mean(lambda u: dphi(u) ** 2, 1.0) / (gauss_mean(lambda u: phi(u) ** 2, 1.0)
                                                        - m1 ** 2)


def batchnorm_growth_linear(batch: int) -> float:
    """Yang et al. (2019): per-layer growth ``(B − 2) / (B − 3)`` of the gradient's squared
    norm in a linear BatchNorm net at batch size B >= 4 (going back from the loss)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 4:
        raise ValueError(f"batch: {batch!r} is out of range; allowed: integers >= 4")
    return (batch - 2) / (batch - 3)
