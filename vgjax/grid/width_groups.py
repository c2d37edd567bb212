"""Width-aware planning: a grid's runs grouped by padded width, one program per group.

A compiled chunk program pads every run to one width ``P``, so in a grid of widths 5-25 the
width-5 runs would pay for 25 x 25 products. :func:`plan_groups` splits the grid's distinct
padded widths into contiguous groups, each trained by its own program at the group's
largest width (and, for ``engine="auto"``, with the engine that width wants: the fast
engine for the tiny ones on a CPU, the wide one above). On a GPU/TPU a grid stays one
group in one depth block (measured: fewer, larger programs win there). A chunk stays the
unit of work, storage and resumption: :func:`vgjax.run.chunks.run_chunk` calls each group's
program on the chunk's runs of that group and puts the outputs back in run-table order, so
nothing downstream knows about groups. Splitting costs one more compilation per group, so the
groups are chosen by a cost model (:func:`partition_widths`): small grids stay one group.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from vgjax.config import Config
from vgjax.engines import BLOCK_OVERHEAD, bytes_per_run, choose_engine, depth_blocks, even_calls
from vgjax.engines.loop import PARAM_PREFIX
from vgjax.result import RunTable

# The cost model of one group, in seconds on the reference machine (2 CPU cores, XLA:CPU),
# used only to choose the groups: per run, layer and minibatch step a fixed overhead plus a
# term per multiply-add of the layer's [B, P] x [P, P] product. Fitted to the wide engine on
# the tanh-breadth shape (depths 1-10 x 30 seeds, widths 10-25), and a program's compile
# time (that of the programs `vgjax reproduce` compiles).
LAYER_STEP_S = 1.8e-6
MAC_S = 2.8e-10
PROGRAM_S = 7.0


class Group(NamedTuple):
    """The runs of a plan trained by one program.

    widths: the padded widths (ascending) of its runs; p: its program's padded width (the
    largest); engine: ``"fast"``, ``"wide"`` or ``"vmap"``; size: runs per call (a multiple
    of the device count): a chunk's runs of the group, in calls of ``size`` runs, the last
    padded by repeating its last run;
    n_blocks: depth-sorted blocks per call (fast and wide engines; 1 for vmap).
    """

    widths: tuple[int, ...]
    p: int
    engine: str
    size: int
    n_blocks: int = 1


def padded_widths(runs: RunTable, min_p: int) -> np.ndarray:
    """Each run's padded width [R]: its width, at least ``min_p`` (inputs, logits)."""
    return np.maximum(np.asarray(runs.width, np.int64), min_p)


def partition_widths(padded: np.ndarray, layer_steps: np.ndarray, batch: int
                     ) -> list[tuple[int, ...]]:
    """Contiguous groups of the distinct values of ``padded`` [R] that minimise the modelled
    time: per group a compilation (:data:`PROGRAM_S`) plus its runs' ``layer_steps`` [R]
    (epochs x steps x depth) at the group's largest width. Exact (dynamic programming over
    the sorted widths); on ties the fewer, larger groups."""
    ws = np.unique(padded)
    work = np.array([layer_steps[padded == w].sum() for w in ws], np.float64)
    rate = LAYER_STEP_S + MAC_S * batch * ws.astype(np.float64) ** 2   # s per layer-step
    k = len(ws)
    best, cut = np.full(k + 1, np.inf), np.zeros(k + 1, np.int64)
    best[0] = 0.0
    for j in range(1, k + 1):          # best[j]: the first j widths grouped
        for i in range(j):             # last group ws[i:j], trained at width ws[j - 1]
            c = best[i] + PROGRAM_S + work[i:j].sum() * rate[j - 1]
            if c < best[j] * (1 - 1e-9):
                best[j], cut[j] = c, i
    groups, j = [], k
    while j > 0:
        groups.append(tuple(int(w) for w in ws[cut[j]:j]))
        j = cut[j]
    return groups[::-1]


def plan_groups(config: Config, runs: RunTable, max_depth: int, min_p: int, chunk_size: int,
                mesh, engine: str, block_bytes: int, max_size: Callable[[int], int],
                features=None) -> tuple[Group, ...]:
    """The groups of a plan whose chunks hold ``chunk_size`` consecutive runs of ``runs``.

    ``engine``: the requested engine (``"auto"`` is chosen per group by its width);
    ``block_bytes``: the memory a depth block of the wide engine may use; ``max_size(p)``:
    the most runs one call of the fast or vmap engine at width ``p`` may hold (memory);
    ``features``: the grid's residual / normalised variants (:class:`vgjax.model.Features`;
    default the config's), which the fast engine does not train.
    """
    padded = padded_widths(runs, min_p)
    steps = config.epochs * config.steps_per_epoch * np.asarray(runs.depth, np.float64)
    n_dev, n = mesh.devices.size, len(padded)
    cpu = mesh.devices.flat[0].platform == "cpu"
    # On a GPU a program of many tiny kernels is launch-bound: one program and one block
    # are fastest (scripts/accelerator_check.py times tanh-breadth both ways).
    partition = (partition_widths(padded, steps, config.batch_size) if cpu
                 else [tuple(int(w) for w in np.unique(padded))])
    groups = []
    for widths in partition:
        p = widths[-1]
        eng = choose_engine(config, p, mesh, features) if engine == "auto" else engine
        # each chunk's runs of the group; the call size fits the fullest chunk
        per_chunk = [chunk_members(widths, padded, slice(s, min(s + chunk_size, n)))
                     for s in range(0, n, chunk_size)]
        per_chunk = [ix for ix in per_chunk if len(ix)]
        size = max(len(ix) for ix in per_chunk)
        if eng != "wide":  # the wide engine's working set is per depth block instead
            size = even_calls(size, max_size(p), n_dev)  # calls of equal size, if several
        size = max(n_dev, -(-size // n_dev) * n_dev)
        n_blocks = 1
        if cpu and eng in BLOCK_OVERHEAD:  # engines whose layer loops stop at a block's depth
            depths = np.concatenate([runs.depth[ix[np.minimum(np.arange(size), len(ix) - 1)]]
                                     for ix in per_chunk])  # each chunk's call, padded
            cap = None
            if eng == "wide":
                cap = max(1, block_bytes // bytes_per_run("wide", config, max_depth, p).working)
            n_blocks = depth_blocks(depths, size, n_dev, max_block=cap,
                                    overhead=BLOCK_OVERHEAD[eng])
        groups.append(Group(widths, p, eng, size, n_blocks))
    return tuple(groups)


def chunk_members(widths: tuple[int, ...], padded: np.ndarray, sl: slice) -> np.ndarray:
    """The run indices in ``sl`` whose padded width is one of ``widths``."""
    return np.flatnonzero(np.isin(padded[sl], widths)) + sl.start


def group_runs(groups: tuple[Group, ...], padded: np.ndarray, sl: slice) -> list[np.ndarray]:
    """Per group, the run indices of the chunk ``sl`` it trains (possibly empty)."""
    return [chunk_members(g.widths, padded, sl) for g in groups]


def pad_param(name: str, value: np.ndarray, p: int) -> np.ndarray:
    """A group's final-parameter output (``param_*``, run axis first) zero-padded to the
    plan's width ``p``: kernels [r, D, Pg, Pg], biases [r, D, Pg], out_kernel [r, Pg] or
    [r, Pg, C], the normalisation's [r, D, Pg] leaves; anything else unchanged (the
    padding entries are zero: they stand for units no run of the group has)."""
    axes = {PARAM_PREFIX + "kernels": (2, 3), PARAM_PREFIX + "biases": (2,),
            PARAM_PREFIX + "out_kernel": (1,), PARAM_PREFIX + "norm_scale": (2,),
            PARAM_PREFIX + "norm_offset": (2,), PARAM_PREFIX + "batch_mean": (2,),
            PARAM_PREFIX + "batch_var": (2,)}.get(name, ())
    widths = [(0, 0)] * value.ndim
    for a in axes:
        widths[a] = (0, p - value.shape[a])
    return np.pad(value, widths) if axes else value
