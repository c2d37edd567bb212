"""Tasks with long dependencies, generated on the fly from a run's key at a per-run length.

* ``adding`` (Hochreiter & Schmidhuber 1997; Le et al. 2015): two input channels, values
  U(0, 1) and a marker channel with exactly one marker in each half of the ``T`` steps; the
  target is the sum of the two marked values, read out after the last step; mean squared
  error. Always predicting 1 scores Var(U₁ + U₂) = 1/6 (:func:`baseline`).
* ``copy`` (Arjovsky et al. 2016): ``K`` symbols from an alphabet of ``n_symbols``, then
  ``T − 1`` blanks, a go marker and ``K`` blanks (``T + 2K`` steps); the net outputs blank
  until the go marker and then the ``K`` symbols; cross-entropy averaged over all steps. A
  memoryless net scores ``K ln(n_symbols) / (T + 2K)``.

Batches are time-major and padded to the scan's ``t_max`` steps: steps past a run's own length
carry zero input and zero loss weight (the net holds its state there, :func:`vgjax.recurrent.
cells.run`). Inputs are low-dimensional and not isotropic, unlike the mean-field theory's
setting (:mod:`vgjax.recurrent.flow`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

TASKS = ("adding", "copy")


class Task(NamedTuple):
    """A task's static description: name (one of :data:`TASKS`), n_inputs D, n_outputs C,
    loss ("mse" or "xent"), n_symbols and copy_len K (the copy task's alphabet and length)."""

    name: str
    n_inputs: int
    n_outputs: int
    loss: str
    n_symbols: int = 8
    copy_len: int = 10


class SeqBatch(NamedTuple):
    """A padded batch: x [t_max, B, D] float32, y [t_max, B] float32 (targets; class indices
    for cross-entropy), weight [t_max, B] float32 (each example's per-step loss weights)."""

    x: jax.Array
    y: jax.Array
    weight: jax.Array


def make_task(name: str, *, n_symbols: int = 8, copy_len: int = 10) -> Task:
    """The task called ``name``; ValueError in one line for an unknown name or bad sizes."""
    if name not in TASKS:
        raise ValueError(f"task: {name!r} is not known; allowed: {', '.join(TASKS)}")
    if name == "adding":
        return Task("adding", 2, 1, "mse")
    for label, v in (("n_symbols", n_symbols), ("copy_len", copy_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{label}: {v!r} is out of range; allowed: integers >= 1")
    return Task("copy", n_symbols + 2, n_symbols + 1, "xent", n_symbols, copy_len)


def task_steps(task: Task, length):
    """Steps of a sequence at delay ``length`` T (int or traced): adding T, copy T + 2K."""
    return length if task.name == "adding" else length + 2 * task.copy_len


def check_length(length) -> None:
    """ValueError unless the sequence length is an integer >= 2 (the adding problem needs a
    step in each half)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"length: {length!r} is out of range; allowed: integers >= 2")


def sample(task: Task, key: jax.Array, length, t_max: int, batch: int) -> SeqBatch:
    """A fresh batch of ``batch`` sequences at length ``length`` (traced ok), padded to
    ``t_max`` >= :func:`task_steps` steps."""
    t = jnp.arange(t_max)[:, None]                             # [t_max, 1]
    if task.name == "adding":
        kv, k1, k2 = jax.random.split(key, 3)
        half = length // 2
        p1 = jnp.floor(jax.random.uniform(k1, (batch,)) * half).astype(jnp.int32)
        p2 = half + jnp.floor(jax.random.uniform(k2, (batch,)) * (length - half)).astype(
            jnp.int32)
        inside = t < length
        values = jnp.where(inside, jax.random.uniform(kv, (t_max, batch)), 0.0)
        markers = ((t == p1[None, :]) | (t == p2[None, :])).astype(jnp.float32)
        target = jnp.sum(values * markers, axis=0)             # [B]
        weight = (t == length - 1).astype(jnp.float32) * jnp.ones((1, batch), jnp.float32)
        y = jnp.broadcast_to(target[None, :], (t_max, batch))
        return SeqBatch(jnp.stack([values, markers], axis=-1), y, weight)
    k = task.copy_len
    steps = length + 2 * k
    symbols = jax.random.randint(key, (k, batch), 1, task.n_symbols + 1)   # [K, B]
    pad = jnp.zeros((t_max - k, batch), jnp.int32)
    head = jnp.concatenate([symbols, pad], axis=0)                         # [t_max, B]
    go = task.n_symbols + 1
    tokens = jnp.where(t == k + length - 1, go, head)
    x = jax.nn.one_hot(jnp.where(t < steps, tokens, 0), task.n_inputs) * (t < steps)[..., None]
    src = jnp.clip(t - (length + k), 0, k - 1) * jnp.ones((1, batch), jnp.int32)
    recalled = jnp.take_along_axis(jnp.concatenate([symbols, pad], axis=0), src, axis=0)
    y = jnp.where((t >= length + k) & (t < steps), recalled, 0).astype(jnp.float32)
    weight = jnp.where(t < steps, 1.0 / steps, 0.0) * jnp.ones((1, batch), jnp.float32)
    return SeqBatch(x.astype(jnp.float32), y, weight)


def example_losses(task: Task, outputs: jax.Array, batch: SeqBatch) -> jax.Array:
    """Per-example losses [B] of readouts ``outputs`` [t_max, B, C] on ``batch``."""
    if task.loss == "mse":
        per_step = jnp.square(outputs[..., 0] - batch.y)
    else:
        logp = jax.nn.log_softmax(outputs, axis=-1)
        per_step = -jnp.take_along_axis(logp, batch.y.astype(jnp.int32)[..., None],
                                        axis=-1)[..., 0]
    return jnp.sum(batch.weight * per_step, axis=0)


def baseline(task: Task, length: int) -> float:
    """The chance loss: 1/6 for the adding problem, K ln(n_symbols) / (T + 2K) for copy."""
    if task.name == "adding":
        return 1.0 / 6.0
    return task.copy_len * math.log(task.n_symbols) / (length + 2 * task.copy_len)
