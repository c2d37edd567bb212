"""A user's Flax model as an engine of vgjax's one training loop.

:func:`watch_engine` gives the kernels of :class:`vgjax.engines.loop.Engine` for ONE run
(a seed, at one learning rate) of a :class:`~vgjax.watch.models.UserModel`; the loop of
:mod:`vgjax.engines.loop` does the rest as for vgjax's own MLPs: the epochs' ``lax.scan``,
the per-step gradient statistics reduced in the carry, histograms on histogram epochs, the
evaluation and the divergence masking. :func:`train_program` vmaps it over runs and
``shard_map``-s the run axis over a 1-D ``runs`` mesh, as every vgjax grid is trained.

The loop's "layers" are the model's paths (:class:`~vgjax.watch.models.Layout`) in
input-to-output order: the parameter paths, then, when the model perturbs activations, the
activation paths. A run's minibatches are the reference engine's (``fold_in(shuffle key,
epoch)`` permutations cut by :func:`vgjax.engines.shuffle.batches`) and its keys are
:func:`vgjax.engines.loop.run_keys` of ``PRNGKey(seed)``, so a user model and a vgjax run of
the same seed see the same examples in the same order.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from vgjax import diagnostics as diag
from vgjax.engines.loop import Engine, Setup, grads_step, run_keys, train_loop
from vgjax.engines.shuffle import batches
from vgjax.step import LrState
from vgjax.watch.models import Layout, UserModel

Loss = Callable[[jax.Array, jax.Array], jax.Array]


class LoopConfig(NamedTuple):
    """What the training loop reads of a protocol: epochs, batch size, training-set size
    and the histogram period (0: none)."""

    epochs: int
    batch_size: int
    n_train: int
    hist_every: int

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; the last batch keeps the remainder."""
        return -(-self.n_train // self.batch_size)


class RunSpec(NamedTuple):
    """One run ([R] leading when stacked): key uint32 [2] (``key_data(PRNGKey(seed))``), lr
    float32 [] and optional initial params (the model's tree; None: ``model.init``)."""

    key: jax.Array
    lr: jax.Array
    params: Any = None


class State(NamedTuple):
    """A run being trained: params (the model's tree) and opt_state (:class:`LrState`)."""

    params: Any
    opt_state: LrState


def accuracy(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """[] share of correct predictions: ``outputs > 0`` for one logit [N], else the argmax
    of [N, C] (labels [N] are class indices)."""
    pred = (outputs > 0) if outputs.ndim == 1 else jnp.argmax(outputs, axis=-1)
    return (pred.astype(jnp.float32) == labels).mean()


def _sums(leaves: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """[L] sums of |entries| and L2 norms of the leaves."""
    return (jnp.stack([jnp.abs(v).sum() for v in leaves]),
            jnp.sqrt(jnp.stack([jnp.square(v).sum() for v in leaves])))


def _histogram(leaves: list[jax.Array], present: list[bool]) -> tuple[jax.Array, jax.Array]:
    """Counts [L, K] int32 and value stats [L, 4] of each leaf on :data:`HIST_EDGES`
    (:func:`vgjax.diagnostics.bucket_histogram`); leaves not ``present`` count nothing."""
    parts = [diag.bucket_histogram(v.reshape(1, -1).astype(jnp.float32),
                                   jnp.full((1, v.size), keep))
             for v, keep in zip(leaves, present)]
    return jnp.concatenate([c for c, _ in parts]), jnp.concatenate([s for _, s in parts])


def watch_engine(model: UserModel, layout: Layout, act_layout: Layout | None, loss: Loss,
                 optimizer: Callable[[Any], optax.GradientTransformation],
                 config: LoopConfig) -> Engine:
    """The loop's kernels for one run of ``model`` (vmap the loop over runs).

    Args:
      model, layout: the model and its parameter paths; act_layout: its activation paths
        (perturbations of a training batch), or None.
      loss: per-example loss ``(outputs [B] or [B, C], labels [B]) -> [B]``; a batch's loss is
        the weighted mean (padding examples weigh 0).
      optimizer: ``lr -> optax.GradientTransformation`` (lr traced).
      config: the protocol.
    """
    n_params = len(layout.paths)
    sizes = layout.sizes + (act_layout.sizes if act_layout else ())
    is_param = [True] * n_params + [False] * (len(sizes) - n_params)

    def init(spec: RunSpec, data) -> Setup:
        init_key, shuffle_key = run_keys(jax.random.wrap_key_data(spec.key))
        params = spec.params
        if params is None:
            params = model.init(init_key, data.x_train[:config.batch_size])
        state = State(params, LrState(spec.lr, optimizer(spec.lr).init(params)))
        counts = jnp.asarray(sizes, jnp.float32)
        ctx = dict(data=data, shuffle_key=shuffle_key)
        return Setup(state, ctx, counts, jnp.ones(len(sizes), bool))

    def minibatches(ctx, epoch):
        perm = jax.random.permutation(jax.random.fold_in(ctx["shuffle_key"], epoch),
                                      config.n_train)
        return batches(perm, config.batch_size)

    def loss_and_grads(params, x, y, weight):
        perts = model.perturbations(params, x) if act_layout is not None else None

        def objective(params, perts):
            return (loss(model.apply(params, x, perts), y) * weight).sum() / weight.sum()
        return jax.value_and_grad(objective, argnums=(0, 1))(params, perts)

    def grad_leaves(grads):
        g_params, g_acts = grads
        out = layout.leaves(g_params)
        return out + (act_layout.leaves(g_acts) if act_layout is not None else [])

    def train_step(state: State, batch, ctx):
        (idx, weight), data = batch, ctx["data"]
        _, grads = loss_and_grads(state.params, data.x_train[idx], data.y_train[idx], weight)
        tx = optimizer(state.opt_state.lr)
        updates, inner = tx.update(grads[0], state.opt_state.inner, state.params)
        params = optax.apply_updates(state.params, updates)
        return State(params, LrState(state.opt_state.lr, inner)), grads

    def weight_leaves(params):
        leaves = layout.leaves(params)
        return leaves + [jnp.zeros(s, jnp.float32) for s in sizes[n_params:]]

    def evaluate(state: State, ctx):
        d = ctx["data"]
        curves = []
        for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
            out = model.apply(state.params, x, None)
            curves.append((loss(out, y).mean(), accuracy(out, y)))
        (train_loss, train_acc), (test_loss, test_acc) = curves
        return (jnp.stack([train_loss, test_loss, train_acc, test_acc]),
                _sums(weight_leaves(state.params))[0])

    return Engine(
        init=init, minibatches=minibatches,
        step=grads_step(train_step, lambda g, ctx: _sums(grad_leaves(g)),
                        lambda g, ctx: _histogram(grad_leaves(g), [True] * len(sizes))),
        evaluate=evaluate,
        weight_hist=lambda state, ctx: _histogram(weight_leaves(state.params), is_param),
        params=lambda state: dict(zip(layout.paths, layout.leaves(state.params))))


def train_program(engine: Engine, config: LoopConfig, mesh: Mesh, *, keep_params: bool):
    """``(RunSpec [R], DeviceData) -> history dict [R, ...]``: the loop of ``engine``
    vmapped over runs and ``shard_map``-ped over ``mesh``'s ``runs`` axis (R a multiple of
    its devices); not yet jitted."""
    one = functools.partial(train_loop, engine, config, keep_params=keep_params)
    runs = jax.vmap(one, in_axes=(0, None))
    return jax.shard_map(runs, mesh=mesh, in_specs=(PartitionSpec("runs"), PartitionSpec()),
                         out_specs=PartitionSpec("runs"), check_vma=False)
