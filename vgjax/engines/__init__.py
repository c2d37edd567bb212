"""Which engine trains a grid, and each engine's chunk function.

Three engines run the one training loop of :mod:`vgjax.engines.loop` with their own kernels: the
reference ``"vmap"`` (:mod:`vgjax.engines.reference`, ``vmap`` of the :class:`vgjax.step.Step` methods;
covers everything), ``"fast"`` (:mod:`vgjax.engines.fast`, runs-last with hand-written backprop, for
tiny widths on a CPU) and ``"wide"`` (:mod:`vgjax.engines.wide`, batched matmuls over a leading run
axis); on a CPU the fast and wide engines train a chunk in depth-sorted blocks
(:func:`in_depth_blocks`). :func:`choose_engine` is what ``engine="auto"`` means;
:func:`chunk_train` is the function :mod:`vgjax.run.chunks` compiles per call shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from vgjax.engines import fast
from vgjax.engines import wide
from vgjax.config import Config, check_choice
from vgjax.engines import reference
from vgjax.engines.loop import Memory
from vgjax.engines.reference import make_train
from vgjax.model import Features, features_of

ENGINES = ("auto", "fast", "wide", "vmap")
# Padded width from which the wide engine beats the fast one on XLA:CPU, on the tanh-breadth
# shape (depths 1-10 x 30 seeds): `vgjax bench` measures the crossover (benchmark.json's
# "crossover"; docs: guides/performance).
CPU_WIDE_FROM = 8


def _features(config: Config, features: Features | None) -> Features:
    return features_of([(config.residual, config.norm)]) if features is None else features


def choose_engine(config: Config, p: int, mesh: Mesh, features: Features | None = None) -> str:
    """The engine ``"auto"`` means. On a CPU the fast engine below :data:`CPU_WIDE_FROM`
    padded units and the wide (batched-matmul) engine from there on; on a GPU/TPU always the
    wide engine. Both take any optimizer (Keras SGD fused into the step, any other optax
    ``GradientTransformation`` applied to the gradient pytree) and any elementwise
    activation (named or a callable; its derivative by ``jax.grad``). The wide engine also
    takes any data (F features, C classes: the softmax cross-entropy on C logits), so a grid
    the fast engine does not cover (:func:`vgjax.engines.fast.supports`: two features, two
    classes, one logit) goes wide at any width, and so does a grid with residual or
    normalised runs (``features``, default the config's: the fast engine trains the plain
    MLP only). The vmap reference engine (``jax.grad`` of the whole model) is chosen only for
    what no hand-written backward pass covers (:func:`vgjax.engines.wide.supports`): a user
    loss and test-set gradients. The signal probe is recorded by every engine."""
    if not wide.supports(config):
        return "vmap"
    if not fast.supports(config) or not _features(config, features).plain:
        return "wide"
    if mesh.devices.flat[0].platform != "cpu":
        # a few large kernels beat many tiny ones there, at every width the grids use
        # (scripts/accelerator_check.py measures it: results/accelerator_check.json)
        return "wide"
    return "wide" if p >= CPU_WIDE_FROM else "fast"


def bytes_per_run(engine: str, config: Config, max_depth: int, p: int,
                  keep_params: bool = False) -> Memory:
    """Rough device bytes of one run of a grid padded to (D, P) on ``engine``: each engine's
    own memory model (:func:`vgjax.engines.wide.memory`; the fast and vmap engines:
    :func:`vgjax.engines.reference.memory`)."""
    if engine == "wide":
        return wide.memory(config, max_depth, p, keep_params)
    return reference.memory(config, max_depth, p)


# A block costs its runs times its deepest run's layers, plus this many layer-runs of fixed
# overhead (loop and dispatch work that does not shrink with the block), per engine, counted
# on one device (a device trains its own blocks). Calibrated by timing the tanh-depth and
# relu-depth chunks in 1-10 blocks on a 2-core CPU: the fast engine's per-layer conds make a
# block dear, so it pays only for a few blocks of very different depths.
BLOCK_OVERHEAD = {"wide": 1.0, "fast": 200.0}


def depth_blocks(depths: np.ndarray, chunk_size: int, n_devices: int,
                 max_block: int | None = None, overhead: float = BLOCK_OVERHEAD["wide"]) -> int:
    """How many depth-sorted blocks each chunk of the fast or wide engine is trained in.

    Each device sorts its share of a chunk (a contiguous slice of the chunk's runs) by depth
    and trains it in blocks; each block computes the layers of its deepest run, so blocks of
    equal-depth runs save the work of padded layers, but small blocks make small matmuls.
    Picks the count that minimises the modelled cost (per chunk, the slowest device's sum
    over its blocks of runs x deepest depth, plus ``overhead`` per block), preferring fewer
    blocks on ties, among blocks of at most ``max_block`` runs (memory, counted over all
    devices) where possible.
    """
    depths = np.asarray(depths)
    n = len(depths)
    per_device = chunk_size // n_devices
    chunks = [depths[np.minimum(np.arange(s, s + chunk_size), n - 1)].reshape(n_devices, -1)
              for s in range(0, n, chunk_size)]
    chunks = [np.sort(ch, axis=1) for ch in chunks]                 # [devices, runs each]
    best, best_cost = 1, None
    for g in range(1, per_device + 1):
        b = per_device // g                                         # one device's block
        if per_device % g or (max_block and b * n_devices > max_block and b > 1):
            continue
        cost = sum(float((b * ch.reshape(n_devices, g, b).max(2).sum(1)).max()) + overhead * g
                   for ch in chunks)
        if best_cost is None or cost < best_cost * 0.97:
            best, best_cost = g, cost
    return best


def even_calls(n_runs: int, most: int, n_devices: int) -> int:
    """Runs per call when ``n_runs`` runs are cut into the fewest calls of at most ``most``
    runs (rounded down to a multiple of ``n_devices``, at least one per device) and every
    call holds as many as the others: a multiple of ``n_devices``, at most ``most``. So 250
    runs that fit 198 per call go as 2 x 125 (126 on two devices), not as 198 and a second
    call of 52 runs and 146 runs of padding that cost as much to train."""
    most = max(n_devices, most // n_devices * n_devices)
    calls = -(-n_runs // most)
    size = -(-n_runs // max(calls, 1))
    return max(n_devices, -(-size // n_devices) * n_devices)


def check_engine(config: Config, engine: str, features: Features | None = None) -> None:
    """Refuse, in one line, an engine name that does not exist or does not cover ``config``
    (and a grid of the architectures ``features``, default the config's)."""
    check_choice("engine", engine, ENGINES)
    if engine == "fast" and not _features(config, features).plain:
        raise ValueError("engine: 'fast' trains the plain MLP only, not residual or "
                         "normalised runs; allowed: 'wide', 'vmap' or 'auto'")
    if engine == "wide" and not wide.supports(config):
        raise ValueError(f"engine: 'wide' does not cover loss {config.loss!r} or "
                         f"test_gradients={config.test_gradients} (it covers the binary and "
                         f"softmax cross-entropy without test gradients); allowed: 'vmap' or "
                         f"'auto'")
    if engine == "fast" and not fast.supports(config):
        raise ValueError(f"engine: 'fast' does not cover loss {config.loss!r}, "
                         f"test_gradients={config.test_gradients} or data "
                         f"{config.data!r} (it covers two-feature binary data with the default "
                         f"loss); allowed: 'wide', 'vmap' or 'auto'")


def chunk_train(static_config: Config, max_depth: int, p: int, mesh: Mesh, engine: str,
                keep_params: bool, n_blocks: int, features: Features | None = None):
    """The chunk function ``(RunSpec [R], DeviceData) -> history dict`` (run axis first) of
    ``engine`` for a chunk padded to (D, P) on ``mesh``: every engine is the one loop of
    :mod:`vgjax.engines.loop` with its own kernels, ``shard_map``-ped over the mesh's run axis (each
    device trains its R / devices runs); the fast and wide engines train a device's runs in
    ``n_blocks`` depth-sorted blocks (:func:`in_depth_blocks`). ``features``: the residual /
    normalised variants the runs may have (default: the config's)."""
    if engine == "fast":
        train = in_depth_blocks(fast.make_fast_train(static_config, max_depth, p,
                                                     keep_params=keep_params), n_blocks)
    elif engine == "wide":
        train = in_depth_blocks(wide.make_wide_train(static_config, max_depth, p,
                                                     keep_params=keep_params,
                                                     features=features), n_blocks)
    else:
        train = jax.vmap(make_train(static_config, max_depth, p, keep_params=keep_params,
                                    features=features), in_axes=(0, None))
    # Runs are independent: each device trains its own slice of the chunk's runs (its own
    # depth blocks, its own skipped layers) with no cross-device traffic, and XLA need not
    # propagate shardings through the whole program (a sizeable share of a grid program's
    # compile time when it did). check_vma
    # off: the engines' loops mix per-device values into unbatched carries, which is right
    # here since no value is shared between devices.
    return jax.shard_map(train, mesh=mesh, in_specs=(PartitionSpec("runs"), PartitionSpec()),
                         out_specs=PartitionSpec("runs"), check_vma=False)


def in_depth_blocks(train_block, n_blocks: int):
    """``train(spec, data)`` for a chunk (one device's share of it) that sorts its runs by
    depth (stable), trains them block after block with ``train_block`` (a ``lax.map`` over
    ``n_blocks`` equal blocks, each computing only the layers of its deepest run) and returns
    the outputs in the chunk's order. ``n_blocks`` must divide the chunk's runs."""
    if n_blocks == 1:
        return train_block

    def train(spec, data):
        r = spec.depth.shape[0]
        if r % n_blocks:
            raise ValueError(f"n_blocks: {n_blocks} does not divide the chunk's {r} runs")
        order = jnp.argsort(spec.depth, stable=True)
        blocks = jax.tree.map(lambda a: a[order].reshape((n_blocks, r // n_blocks) + a.shape[1:]),
                              spec)
        out = jax.lax.map(lambda s: train_block(s, data), blocks)
        inverse = jnp.argsort(order)
        return jax.tree.map(lambda a: a.reshape((r,) + a.shape[2:])[inverse], out)

    return train
