"""Which engine trains a grid, and each engine's chunk function.

Three engines run the one training loop of :mod:`vgjax.loop` with their own kernels: the
reference ``"vmap"`` (:mod:`vgjax.train`, ``vmap`` of the :class:`vgjax.step.Step` methods;
covers everything), ``"fast"`` (:mod:`vgjax.fast`, runs-last with hand-written backprop, for
tiny widths on a CPU) and ``"wide"`` (:mod:`vgjax.wide`, batched matmuls over a leading run
axis, trained in depth-sorted blocks). :func:`choose_engine` is what ``engine="auto"``
means; :func:`chunk_train` is the function :mod:`vgjax.sweep` compiles per chunk shape.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import fast, wide
from vgjax.config import Config, check_choice
from vgjax.train import make_train

ENGINES = ("auto", "fast", "wide", "vmap")
# Padded width from which the wide engine beats the fast one on XLA:CPU. Measured on the
# tanh-breadth shape (depths 1-10 x 30 seeds, 2 CPU devices): fast 1.7x faster at width 5,
# wide 2.5x faster at 10 and 16 (`vgjax bench`'s crossover table; README, Performance).
CPU_WIDE_FROM = 8


def choose_engine(config: Config, p: int, mesh: Mesh, keep_params: bool = False) -> str:
    """The engine ``"auto"`` means: on a CPU the fast engine below :data:`CPU_WIDE_FROM`
    padded units and the wide (batched-matmul) engine from there on; on a GPU/TPU always the
    wide engine; the vmap reference wherever neither covers the config. Probes
    (``config.probes``) are recorded by the vmap engine only. Every engine returns final
    parameters, so ``keep_params`` (kept for old callers) changes nothing."""
    del keep_params
    if not fast.supports(config) or config.probes:
        return "vmap"
    if mesh.devices.flat[0].platform != "cpu":
        return "wide"
    return "wide" if p >= CPU_WIDE_FROM else "fast"


# A block costs its runs times its deepest run's layers, plus this many layer-runs of fixed
# overhead (loop and dispatch work that does not shrink with the block).
_BLOCK_OVERHEAD = 2.0


def depth_blocks(depths: np.ndarray, chunk_size: int, n_devices: int,
                 max_block: int | None = None) -> int:
    """How many depth-sorted blocks each chunk of the wide engine is trained in.

    Each block computes the layers of its deepest run, so blocks of equal-depth runs save
    the work of padded layers; but a block must hold a multiple of the device count and
    small blocks make small matmuls. Picks the count that minimises the modelled cost
    (sum over blocks of runs x deepest depth, plus a fixed overhead per block) over the
    plan's chunks, preferring fewer blocks on ties, among blocks of at most ``max_block``
    runs (memory) where possible.
    """
    depths = np.asarray(depths)
    n = len(depths)
    chunks = [np.sort(depths[np.minimum(np.arange(s, s + chunk_size), n - 1)])
              for s in range(0, n, chunk_size)]
    best, best_cost = 1, None
    for g in range(1, chunk_size // n_devices + 1):
        b = chunk_size // g
        if chunk_size % g or b % n_devices or (max_block and b > max_block and b > n_devices):
            continue
        cost = sum(b * float(ch.reshape(g, b).max(1).sum()) + _BLOCK_OVERHEAD * g
                   for ch in chunks)
        if best_cost is None or cost < best_cost * 0.97:
            best, best_cost = g, cost
    return best


def check_engine(config: Config, engine: str) -> None:
    """Refuse, in one line, an engine name that does not exist or does not cover ``config``."""
    check_choice("engine", engine, ENGINES)
    if engine in ("fast", "wide") and config.probes:
        raise ValueError(f"engine: {engine!r} does not record probes "
                         f"({', '.join(config.probes)}); allowed: 'vmap' or 'auto'")
    if engine in ("fast", "wide") and not fast.supports(config):
        raise ValueError(f"engine: {engine!r} does not cover optimizer {config.optimizer!r}, "
                         f"activation {config.activation!r}, test_gradients="
                         f"{config.test_gradients}; allowed: 'vmap' or 'auto'")


def chunk_train(static_config: Config, max_depth: int, p: int, mesh: Mesh, engine: str,
                keep_params: bool, n_blocks: int):
    """The chunk function ``(RunSpec [R], DeviceData) -> history dict`` (run axis first) of
    ``engine`` for a chunk padded to (D, P) on ``mesh``: every engine is the one loop of
    :mod:`vgjax.loop` with its own kernels."""
    if engine == "fast":
        return fast.make_fast_train(static_config, max_depth, p, keep_params=keep_params)
    if engine == "wide":
        def pin(x, axis):
            spec = PartitionSpec(*([None] * axis + ["runs"]))
            return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
        return wide.make_wide_train(static_config, max_depth, p, n_blocks, pin,
                                    keep_params=keep_params)
    return jax.vmap(make_train(static_config, max_depth, p, keep_params=keep_params),
                    in_axes=(0, None))
