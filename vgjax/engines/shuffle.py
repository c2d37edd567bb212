"""Minibatch shuffles for a chunk of runs, bit-identical to ``jax.random.permutation``.

One stable sort of 32-bit random keys per run (for n < 2**20), as
``jax.random.permutation`` does, but ~3-5x cheaper on XLA:CPU: a single-operand sort of
packed (top key bits | index) words instead of a two-operand key/value sort, then an exact
fix-up of the (rare) neighbours whose top key bits tie. Used by the fast and wide engines;
:func:`batches` cuts any engine's permutations into an epoch's minibatches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _random_sort_keys(key, n):
    _, sub = jax.random.split(key)            # as jax._src.random._shuffle (1 round, n < 2**20)
    return jax.random.bits(sub, (n,), jnp.uint32)


def permutations(keys, n):
    """[R, n] int32: row r equals jax.random.permutation(keys[r], n)."""
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    if rounds != 1 or n > (1 << 16):
        return jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    bits = jax.vmap(lambda k: _random_sort_keys(k, n))(keys)             # [R, n] uint32
    ib = max(1, int(np.ceil(np.log2(n))))
    hi_mask = jnp.uint32((0xFFFFFFFF >> ib) << ib)
    iota = jnp.arange(n, dtype=jnp.uint32)
    packed = jax.lax.sort((bits & hi_mask) | iota[None], dimension=1)     # stable by (hi, idx)
    idx = (packed & jnp.uint32((1 << ib) - 1)).astype(jnp.int32)
    hi = packed & hi_mask
    tie = jnp.any((hi[:, 1:] == hi[:, :-1]).reshape(-1))

    def fix(idx):
        # the order must be by (full key, index); only neighbours with equal top bits can be
        # out of order: odd-even transposition passes until nothing moves (exact).
        k = jnp.take_along_axis(bits, idx, axis=1)

        pos = jnp.arange(n)

        def shifted(x, d):  # x[:, p + d] (edge values repeated; never selected there)
            if d > 0:
                return jnp.concatenate([x[:, d:], x[:, -d:]], axis=1)
            return jnp.concatenate([x[:, :-d], x[:, :d]], axis=1)

        def one_pass(k, i, start):
            # pairs (p, p+1) with p - start even; elementwise, no scatter
            first = ((pos - start) % 2 == 0) & (pos + 1 < n) & (pos >= start)
            second = ((pos - start) % 2 == 1) & (pos >= start + 1)
            nk, ni = shifted(k, 1), shifted(i, 1)        # right neighbour
            pk, pi = shifted(k, -1), shifted(i, -1)      # left neighbour
            out_of_order_r = (nk < k) | ((nk == k) & (ni < i))   # for first elements
            out_of_order_l = (k < pk) | ((k == pk) & (i < pi))   # for second elements
            sw1 = first[None] & out_of_order_r
            sw2 = second[None] & out_of_order_l
            k2 = jnp.where(sw1, nk, jnp.where(sw2, pk, k))
            i2 = jnp.where(sw1, ni, jnp.where(sw2, pi, i))
            return k2, i2, jnp.any(sw1.reshape(-1))

        def body(c):
            k, i, _ = c
            k, i, s0 = one_pass(k, i, 0)
            k, i, s1 = one_pass(k, i, 1)
            return k, i, s0 | s1

        _, idx, _ = jax.lax.while_loop(lambda c: c[2], body, (k, idx, jnp.array(True)))
        return idx

    return jax.lax.cond(tie, fix, lambda i: i, idx)


def batches(perm: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """One epoch's minibatches from permutations ``perm`` [..., n]: indices [..., S, B]
    int32 and weights [S, B] float32, S = ceil(n / B). The last batch keeps the remainder
    (as Keras does); its padding points at example 0 with weight 0, so every run takes S
    steps per epoch."""
    n = perm.shape[-1]
    s = -(-n // batch_size)
    pad = [(0, 0)] * (perm.ndim - 1) + [(0, s * batch_size - n)]
    idx = jnp.pad(perm, pad).reshape(perm.shape[:-1] + (s, batch_size))
    weights = (jnp.arange(s * batch_size) < n).astype(jnp.float32).reshape(s, batch_size)
    return idx, weights


def epoch_batches(shuffle_keys: jax.Array, epoch, n: int, batch_size: int
                  ) -> tuple[jax.Array, jax.Array]:
    """Every run's minibatches of ``epoch``: idx [R, S, B], weights [S, B]; row r is the
    reference engine's ``batch_indices(fold_in(shuffle_keys[r], epoch), n, batch_size)``."""
    keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(shuffle_keys)
    return batches(permutations(keys, n), batch_size)
