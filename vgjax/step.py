"""THE train step of vgjax: one definition, public and vmappable.

:func:`vgjax.engines.reference.make_train` (the reference engine) is the one training loop of
:mod:`vgjax.engines.loop` with :meth:`Step.train_step` as its step. The fast CPU engine
(:mod:`vgjax.engines.fast`) and the wide engine (:mod:`vgjax.engines.wide`) run under the same loop with
hand-written backprop kernels for the cases they cover, tested equal to this step.

A :class:`Step` is the static description of a padded net and its pluggable parts
(activation, loss, optimizer); its methods are pure functions that ``jax.jit`` and
``jax.vmap`` take as they are::

    step = make_step(config, max_depth=D, p=P)        # static: shapes and parts
    state = step.init(key, depth, width)              # TrainState: params + optax state
    state, out = step.train_step(state, batch)        # out.loss [], out.grads (params' tree),
                                                      # out.grad_mean_abs [L], out.grad_norm [L]

Parameters use the padded layout of :mod:`vgjax.model` (hidden kernels [D, P, P], biases
[D, P], out_kernel [P] or [P, C], out_bias [] or [C]); ``depth`` and ``width`` are per-run
values (they may be traced), so one compiled step serves every run of a grid.
:func:`vgjax.model.unpack_run` turns one run's params or grads into its exact per-layer
pytree (``dense_1 ... dense_d, output``). ``L = D + 1`` layers: index ``i < D`` is hidden
layer ``i + 1``, index ``D`` the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vgjax import diagnostics as diag
from vgjax.config import CUSTOM, Config, describe
from vgjax.data import data_dims
from vgjax.model import (Arch, Features, MaskedMLP, Params, activation_fn, arch_of,
                         features_of, init_architecture, init_batch_stats, init_params)

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
OptimizerFactory = Callable[[Any], optax.GradientTransformation]


class Batch(NamedTuple):
    """One minibatch: x [B, F] float32, y [B] float32 class indices (0/1 for two classes),
    weight [B] float32 (0 for padding examples; the loss is the weighted mean)."""

    x: jax.Array
    y: jax.Array
    weight: jax.Array


class LrState(NamedTuple):
    """Optimizer state that carries its own learning rate, so one compiled step serves a
    grid of learning rates: lr [] float32, inner: the optax state of ``factory(lr)``."""

    lr: jax.Array
    inner: Any


class TrainState(NamedTuple):
    """A run being trained: params (padded layout), opt_state (:class:`LrState`), the run's
    real depth and width (int32 [] each; [R] when stacked over runs), with BatchNorm its
    running averages (``{"mean", "var"}`` [D, P]: state, not parameters, so no optimizer
    touches them; None where no run of the step has BatchNorm), and the run's architecture
    (:class:`vgjax.model.Arch`; None for the plain MLP)."""

    params: Params
    opt_state: LrState
    depth: jax.Array
    width: jax.Array
    batch_stats: Params | None = None
    arch: Arch | None = None


class StepOutputs(NamedTuple):
    """What one step returns beside the new state.

    loss: [] weighted-mean loss of the batch before the update; grads: the gradient, with
    exactly the structure and shapes of ``params``; grad_mean_abs: [L] mean |g| over each
    layer's real kernel entries (0 for layers the run lacks); grad_norm: [L] each kernel
    gradient's L2 norm.
    """

    loss: jax.Array
    grads: Params
    grad_mean_abs: jax.Array
    grad_norm: jax.Array


# ----------------------------------------------------------------------------------------
# losses and optimizers

def bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example binary cross-entropy on logits: [B], [B] -> [B]."""
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def softmax_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy: logits [B, C], labels [B] class indices -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


LOSS_FNS: dict[str, LossFn] = {"bce": bce, "softmax_ce": softmax_ce}


class KerasAdamState(NamedTuple):
    """count [] int32 (steps taken), mu and nu: first and second moments (params' tree)."""

    count: jax.Array
    mu: Any
    nu: Any


# Keras's Adam defaults (beta_1, beta_2, epsilon).
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7


def keras_adam(learning_rate, b1: float = ADAM_B1, b2: float = ADAM_B2,
               eps: float = ADAM_EPS) -> optax.GradientTransformation:
    """Keras's Adam (2.3 and 3) as an optax ``GradientTransformation``.

    Keras adds ``eps`` to sqrt(v) *before* the bias correction of the step size, which
    optax's ``adam`` does not::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  update = -lr_t m / (sqrt(v) + eps)

    ``learning_rate`` may be traced.
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(grads, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, grads)
        count = state.count + 1
        t = count.astype(jnp.float32)
        lr_t = learning_rate * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        updates = jax.tree.map(lambda m, v: -lr_t * m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, KerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def optimizer_factory(config: Config) -> OptimizerFactory:
    """``lr -> GradientTransformation`` for the config's optimizer (``lr`` may be traced).

    ``"sgd"``: Keras's SGD(lr, momentum); optax's momentum trace t = g + m t with update
    -lr t equals Keras's v = m v - lr g for a constant learning rate. ``"adam"``:
    :func:`keras_adam`. A ``GradientTransformation`` is used as is (its own learning rate).
    """
    opt = config.optimizer
    if isinstance(opt, str):
        _refuse_loaded("optimizer", opt)
        if opt == "sgd":
            m = config.momentum
            return lambda lr: optax.sgd(lr, momentum=m if m > 0 else None)
        return lambda lr: keras_adam(lr)
    if isinstance(opt, optax.GradientTransformation):
        return lambda lr: opt
    return opt


def _refuse_loaded(name: str, value: str) -> None:
    if value.startswith(CUSTOM) or value.startswith("arrays:"):
        raise ValueError(f"{name}: {value!r} describes a Python object of a loaded config and "
                         f"cannot be rebuilt from its name; allowed: pass the object itself")


def n_outputs_for(config: Config, n_classes: int) -> int:
    """Logits per example: 1 for two classes (sigmoid), else C (softmax)."""
    return n_classes if (n_classes > 2 or config.loss == "softmax_ce") else 1


# ----------------------------------------------------------------------------------------
# the step

@dataclass(frozen=True)
class Step:
    """Static description of a padded net and its parts; its methods are the train step.

    Fields: config; max_depth D and p P (padded sizes); n_features F; n_outputs (1 for two
    classes, else C); activation, loss (per-example, ``(logits, labels) -> [B]``) and
    optimizer (``lr -> GradientTransformation``) as callables; features: the residual and
    normalisation variants its runs may use (:class:`vgjax.model.Features`; each run's own
    is its traced :class:`vgjax.model.Arch`, by default the config's). Hashable, so bound
    methods are valid ``jax.jit`` targets and a grid compiles once.
    """

    config: Config
    max_depth: int
    p: int
    n_features: int
    n_outputs: int
    activation: Callable
    loss: LossFn
    optimizer: OptimizerFactory
    features: Features = Features()

    @property
    def n_layers(self) -> int:
        """L = D + 1."""
        return self.max_depth + 1

    @property
    def model(self) -> MaskedMLP:
        """The Flax module of the padded stack."""
        return MaskedMLP(max_depth=self.max_depth, p=self.p, activation=self.activation,
                         n_outputs=self.n_outputs, features=self.features)

    @property
    def batch_norm(self) -> bool:
        """Whether some run has BatchNorm (running averages in :attr:`TrainState.batch_stats`)."""
        return self.features.batch

    def arch(self, arch: Arch | None) -> Arch | None:
        """A run's architecture: ``arch``, by default the config's (None for a plain step)."""
        if self.features.plain:
            return None
        return arch_of(self.config.residual, self.config.norm) if arch is None else arch

    def init(self, key: jax.Array, depth, width, *, lr=None, weight_var=None,
             bias_var=None, arch: Arch | None = None) -> TrainState:
        """A fresh :class:`TrainState` for one run.

        Args:
          key: the run's init PRNG key.
          depth, width: the run's real depth (1..D) and width (1..P); may be traced.
          lr, weight_var, bias_var: the run's learning rate, sigma_w^2 and sigma_b^2 (may be
            traced); default: the config's.
          arch: the run's architecture (traced :class:`vgjax.model.Arch`, among
            :attr:`features`); default: the config's.
        """
        c = self.config
        params = init_params(key, depth, width, max_depth=self.max_depth, p=self.p,
                             init=c.init, output_init=c.resolved_output_init,
                             n_features=self.n_features, n_outputs=self.n_outputs,
                             weight_var=c.weight_var if weight_var is None else weight_var,
                             bias_var=c.bias_var if bias_var is None else bias_var,
                             activation=c.activation)
        params |= init_architecture(self.max_depth, self.p, self.features)
        lr = jnp.asarray(c.lr if lr is None else lr, jnp.float32)
        opt_state = LrState(lr, self.optimizer(lr).init(params))
        stats = init_batch_stats(self.max_depth, self.p) if self.batch_norm else None
        return TrainState(params, opt_state, jnp.asarray(depth, jnp.int32),
                          jnp.asarray(width, jnp.int32), stats, self.arch(arch))

    def apply(self, params: Params, x: jax.Array, depth, width,
              batch_stats: Params | None = None, arch: Arch | None = None) -> jax.Array:
        """Logits of one run in evaluation mode: x [B, F] -> [B] (two classes) or [B, C].
        BatchNorm normalises with the running averages ``batch_stats`` (required then);
        ``arch``: the run's architecture (default: the config's)."""
        variables = {"params": params}
        if self.batch_norm:
            if batch_stats is None:
                raise ValueError("batch_stats: a BatchNorm net is evaluated with its running "
                                 "averages; allowed: TrainState.batch_stats")
            variables["batch_stats"] = batch_stats
        return self.model.apply(variables, x, depth, width, arch=self.arch(arch))

    def apply_train(self, params: Params, x: jax.Array, weight: jax.Array, depth, width,
                    batch_stats: Params | None = None, arch: Arch | None = None
                    ) -> tuple[jax.Array, Params | None]:
        """Logits of one run in training mode and the new running averages: BatchNorm
        normalises with the batch's statistics (examples weighted by ``weight`` [B]) and
        moves ``batch_stats`` (default: the initial ones) by Keras's momentum; other nets
        compute what :meth:`apply` does and return ``batch_stats`` as given."""
        arch = self.arch(arch)
        if not self.batch_norm:
            return self.model.apply({"params": params}, x, depth, width, train=True,
                                    weight=weight, arch=arch), batch_stats
        stats = init_batch_stats(self.max_depth, self.p) if batch_stats is None else batch_stats
        logits, new = self.model.apply({"params": params, "batch_stats": stats}, x, depth,
                                       width, train=True, weight=weight, arch=arch,
                                       mutable=["batch_stats"])
        return logits, new["batch_stats"]

    def loss_grads_and_stats(self, params: Params, batch: Batch, depth, width,
                             batch_stats: Params | None = None, arch: Arch | None = None
                             ) -> tuple[jax.Array, Params, Params | None]:
        """Weighted-mean loss [] of ``batch`` in training mode, its gradient (exactly
        ``params``' tree) and BatchNorm's new running averages (:meth:`apply_train`)."""
        def loss_fn(params):
            logits, stats = self.apply_train(params, batch.x, batch.weight, depth, width,
                                             batch_stats, arch)
            per_example = self.loss(logits, batch.y)
            return (per_example * batch.weight).sum() / batch.weight.sum(), stats
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, grads, stats

    def loss_and_grads(self, params: Params, batch: Batch, depth, width,
                       arch: Arch | None = None) -> tuple[jax.Array, Params]:
        """Weighted-mean loss [] of ``batch`` and its gradient (exactly ``params``' tree),
        in training mode (BatchNorm: the batch's statistics)."""
        return self.loss_grads_and_stats(params, batch, depth, width, arch=arch)[:2]

    def layer_stats(self, grads: Params, depth, width) -> tuple[jax.Array, jax.Array]:
        """Per-layer mean |g| over real kernel entries and kernel L2 norm: ([L], [L])."""
        counts = diag.real_counts(depth, width, max_depth=self.max_depth,
                                  n_features=self.n_features, n_outputs=self.n_outputs)
        return diag.abs_sums(grads) / jnp.maximum(counts, 1.0), diag.l2_norms(grads)

    def apply_grads(self, state: TrainState, grads: Params) -> TrainState:
        """The optimizer update of ``state`` with ``grads`` (computing and applying
        gradients are separate, as in Flax's examples: the gradients are a result)."""
        tx = self.optimizer(state.opt_state.lr)
        updates, inner = tx.update(grads, state.opt_state.inner, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=LrState(state.opt_state.lr, inner))

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, StepOutputs]:
        """One optimizer step: ``(state, batch) -> (new state, StepOutputs)``."""
        loss, grads, stats = self.loss_grads_and_stats(state.params, batch, state.depth,
                                                       state.width, state.batch_stats,
                                                       state.arch)
        mean_abs, norm = self.layer_stats(grads, state.depth, state.width)
        state = self.apply_grads(state, grads)._replace(batch_stats=stats)
        return state, StepOutputs(loss, grads, mean_abs, norm)

    def evaluate(self, params: Params, x: jax.Array, y: jax.Array, depth, width,
                 batch_stats: Params | None = None, arch: Arch | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        """Mean loss [] and accuracy [] on a whole set (x [N, F], y [N]), in evaluation mode
        (BatchNorm: the running averages ``batch_stats``)."""
        logits = self.apply(params, x, depth, width, batch_stats, arch)
        loss = self.loss(logits, y).mean()
        if self.n_outputs == 1:
            hit = (logits > 0).astype(jnp.float32) == y
        else:
            hit = jnp.argmax(logits, axis=-1).astype(jnp.float32) == y
        return loss, hit.sum() / y.shape[0]


def make_step(config: Config, *, max_depth: int, p: int | None = None,
              n_features: int | None = None, n_classes: int | None = None,
              features: Features | None = None) -> Step:
    """The :class:`Step` of ``config`` for a stack padded to ``max_depth`` layers of ``p``
    units. ``n_features`` and ``n_classes`` default to the config's data; ``p`` defaults to
    the smallest that fits (at least the input width and the number of logits);
    ``features`` (the architectures its runs may have) to the config's.
    """
    dims = data_dims(config) if n_features is None or n_classes is None else None
    f = n_features if n_features is not None else dims[0]
    c = n_classes if n_classes is not None else dims[1]
    n_out = n_outputs_for(config, c)
    need = max(f, n_out)
    p = need if p is None else p
    if p < need:
        raise ValueError(f"p: {p} is smaller than the input width {f} or the {n_out} logits; "
                         f"allowed: p >= {need}")
    if isinstance(config.activation, str):
        _refuse_loaded("activation", config.activation)
    loss = config.loss
    if loss is None:
        loss = "bce" if n_out == 1 else "softmax_ce"
    if isinstance(loss, str):
        _refuse_loaded("loss", loss)
        if loss == "bce" and n_out != 1:
            raise ValueError(f"loss: 'bce' needs two classes, the data has {c}; allowed: "
                             f"'softmax_ce' or a callable")
        loss = LOSS_FNS[loss]
    if features is None:
        features = features_of([(config.residual, config.norm)])
    return Step(config, max_depth, p, f, n_out, activation_fn(config.activation), loss,
                optimizer_factory(config), features)


def init_state(key: jax.Array, config: Config, depth: int, width: int) -> tuple[Step, TrainState]:
    """The :class:`Step` of one exact net (no padding: D = depth, P = width or the input
    width if larger) and its fresh :class:`TrainState`."""
    step = make_step(config, max_depth=depth, p=max(width, *_dims(config)))
    return step, step.init(key, depth, width)


def _dims(config: Config) -> tuple[int, int]:
    f, c = data_dims(config)
    return f, n_outputs_for(config, c)


def check_parts(config: Config) -> None:
    """Trace the config's user objects once on tiny shapes (``jax.eval_shape``: nothing runs
    or compiles) and raise a one-line ``ValueError`` naming any that does not work."""
    f, c = data_dims(config)
    n_out = n_outputs_for(config, c)
    act = config.activation
    if not isinstance(act, str):
        x = jax.ShapeDtypeStruct((3, 4), jnp.float32)
        out = _trace("activation", act, "a JAX-traceable callable [...] -> same shape", act, x)
        if getattr(out, "shape", None) != (3, 4):
            raise ValueError(f"activation: {describe(act)!r} maps [3, 4] to "
                             f"{getattr(out, 'shape', out)}; allowed: a callable that keeps "
                             f"the shape")
    opt = config.optimizer
    if not isinstance(opt, str):
        if not isinstance(opt, optax.GradientTransformation) and not callable(opt):
            raise ValueError(f"optimizer: {opt!r} is not an optax.GradientTransformation; "
                             f"allowed: sgd, adam, a GradientTransformation or a factory")
        factory = optimizer_factory(config)
        try:
            made = factory(0.01)
        except Exception as e:  # noqa: BLE001 - any failure of user code is bad input
            raise ValueError(f"optimizer: calling {describe(opt)!r} with a learning rate "
                             f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             f"allowed: a factory lr -> GradientTransformation") from None
        if not isinstance(made, optax.GradientTransformation):
            raise ValueError(f"optimizer: {describe(opt)!r} returned {type(made).__name__}, not "
                             f"an optax.GradientTransformation; allowed: sgd, adam, a "
                             f"GradientTransformation or a factory lr -> GradientTransformation")

        def probe(lr):
            tx = factory(lr)
            params = {"w": jnp.ones((3,), jnp.float32)}
            return tx.update(params, tx.init(params), params)[0]
        _trace("optimizer", opt, "a factory whose lr may be a traced array", probe,
               jax.ShapeDtypeStruct((), jnp.float32))
    loss = config.loss
    if loss is not None and not isinstance(loss, str):
        logits = jax.ShapeDtypeStruct((4,) if n_out == 1 else (4, n_out), jnp.float32)
        out = _trace("loss", loss, "a JAX-traceable callable (logits, labels) -> [B]", loss,
                     logits, jax.ShapeDtypeStruct((4,), jnp.float32))
        if getattr(out, "shape", None) != (4,):
            raise ValueError(f"loss: {describe(loss)!r} returns shape "
                             f"{getattr(out, 'shape', out)} for a batch of 4; allowed: a "
                             f"per-example loss of shape [B]")


def _trace(name: str, obj: Any, allowed: str, fn: Callable, *shapes) -> Any:
    try:
        return jax.eval_shape(fn, *shapes)
    except Exception as e:  # noqa: BLE001 - any failure of user code is bad input
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{name}: {describe(obj)!r} cannot be traced by JAX "
                         f"({type(e).__name__}: {first[:160]}); allowed: {allowed}") from None
