"""A grid (seeds x depths x widths x lrs x weight_vars x bias_vars) planned as chunks of
equally shaped compiled calls.

:func:`make_plan` checks the config's objects against the grid, builds the run table once, pads
every run to the grid's largest depth and to its group's width (:mod:`vgjax.grid.width_groups`:
on a CPU a grid of very different widths is trained by one program per group of widths,
when the training saved pays for the extra compilation; else one program), picks each
group's engine (:func:`vgjax.engines.choose_engine`) and sizes the chunks from memory. The
run axis is the leading axis of every input and output and is sharded over all devices
with a 1-D mesh (:func:`default_mesh`), so the same plan runs on one CPU, several CPU
devices, a GPU or a TPU slice.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vgjax.config import Config, Grid, parse_residual, residual_label
from vgjax.data import data_dims
from vgjax.engines import bytes_per_run, check_engine, choose_engine, even_calls
from vgjax.engines.loop import RunSpec
from vgjax.grid.width_groups import Group, plan_groups
from vgjax.model import Features, arch_codes, features_of
from vgjax.result import RunTable
from vgjax.step import check_parts, n_outputs_for

# Memory the chunk's outputs and working set may use, when the caller does not say.
DEFAULT_CHUNK_BYTES = 512 * 2**20


def run_table(grid: Grid, config: Config) -> RunTable:
    """The runs of ``grid`` in run-axis order: seed outermost, then depth, width, lr,
    weight_var, bias_var, residual, norm (an empty axis of the grid is the config's single
    value)."""
    lrs = grid.lrs or (config.lr,)
    wvs = grid.weight_vars or (config.weight_var,)
    bvs = grid.bias_vars or (config.bias_var,)
    res = tuple(residual_label(r) for r in grid.residuals or (config.residual,))
    norms = grid.norms or (config.norm,)
    rows = list(itertools.product(grid.seeds, grid.depths, grid.widths, lrs, wvs, bvs, res,
                                  norms))
    seed, depth, width, lr, wv, bv, r, n = (np.array(c) for c in zip(*rows))
    return RunTable(seed=seed.astype(np.int64), depth=depth.astype(np.int32),
                    width=width.astype(np.int32), lr=lr.astype(np.float32),
                    diverged_epoch=np.full(len(rows), -1, np.int32),
                    weight_var=wv.astype(np.float32), bias_var=bv.astype(np.float32),
                    residual=r.astype(str), norm=n.astype(str))


def architectures(runs: RunTable) -> list[tuple[str | float, str]]:
    """The distinct (residual, norm) pairs of the runs, as Config values."""
    pairs = dict.fromkeys(zip(np.asarray(runs.residual).tolist(),
                              np.asarray(runs.norm).tolist()))
    return [(parse_residual(r), n) for r, n in pairs]


def run_specs(runs: RunTable) -> RunSpec:
    """Stack the table into a :class:`RunSpec` of NumPy arrays with leading axis R."""
    # One vectorised call: equal to PRNGKey(seed) per run (seeds are < 2**31, validated).
    keys = np.asarray(jax.vmap(jax.random.PRNGKey)(jnp.asarray(runs.seed, jnp.int32)))
    codes = {pair: arch_codes(parse_residual(pair[0]), pair[1])
             for pair in dict.fromkeys(zip(runs.residual.tolist(), runs.norm.tolist()))}
    kind, alpha, norm = (np.array(c) for c in zip(*(codes[pair] for pair in zip(
        runs.residual.tolist(), runs.norm.tolist()))))
    return RunSpec(key=keys.astype(np.uint32), depth=runs.depth, width=runs.width, lr=runs.lr,
                   weight_var=runs.weight_var, bias_var=runs.bias_var,
                   residual=kind.astype(np.int32), alpha=alpha.astype(np.float32),
                   norm=norm.astype(np.int32))


def padded_sizes(config: Config, grid: Grid) -> tuple[int, int]:
    """(D, P): the grid's largest depth, and P >= every width, the input width and the
    number of logits."""
    return max(grid.depths), max(max(grid.widths), min_width(config))


def auto_chunk_size(n_runs: int, config: Config, max_depth: int, p: int, n_devices: int,
                    budget_bytes: int = DEFAULT_CHUNK_BYTES, per_run: int | None = None) -> int:
    """Runs per chunk: the fewest chunks whose runs fit ``budget_bytes`` (at ``per_run``
    bytes each, default :func:`vgjax.engines.bytes_per_run` of the vmap engine), all of
    the same size (:func:`vgjax.engines.even_calls`: a multiple of the device count, so the
    last chunk is not mostly padding)."""
    per_run = per_run or bytes_per_run("vmap", config, max_depth, p).working
    return even_calls(n_runs, max(1, budget_bytes // per_run), n_devices)


class Layout(NamedTuple):
    """The run table cut into chunks of ``chunk_size`` runs (the last may be shorter).

    What assembling and writing a sweep's results needs of its :class:`Plan`; a sweep
    computed elsewhere (array-job shards) is merged from its layout alone, with no devices.
    """

    config: Config
    grid: Grid
    runs: RunTable
    chunk_size: int

    @property
    def n_chunks(self) -> int:
        """ceil(R / chunk_size)."""
        return -(-len(self.runs) // self.chunk_size)

    def chunk_slice(self, c: int) -> slice:
        """The run indices of chunk ``c``."""
        return slice(c * self.chunk_size, min((c + 1) * self.chunk_size, len(self.runs)))


class Plan(NamedTuple):
    """How a grid is cut into equally shaped chunks of runs.

    runs: the run table; specs: its :class:`RunSpec` ([R] arrays); max_depth, p: padded
    sizes D and P; chunk_size: runs per compiled call (a multiple of the device count);
    n_chunks: ceil(R / chunk_size); mesh: the 1-D ``runs`` mesh; engine: the engines the
    groups use, ``+``-joined: ``"fast"`` (:mod:`vgjax.engines.fast`, runs-last with hand-written
    backprop), ``"wide"`` (:mod:`vgjax.engines.wide`, runs-leading batched matmuls) or ``"vmap"``
    (the reference: ``vmap`` of :func:`vgjax.engines.reference.make_train`); keep_params: return the
    final parameters; groups: the programs that train a chunk, one per group of padded
    widths (:mod:`vgjax.grid.width_groups`; one group unless the grid's widths differ enough to
    pay for another compilation), each with its width, engine, call size and depth blocks;
    features: the residual / normalised variants the grid's runs have (static: what its
    programs compute; each run's own is in ``specs``).
    """

    config: Config
    grid: Grid
    runs: RunTable
    specs: RunSpec
    max_depth: int
    p: int
    chunk_size: int
    n_chunks: int
    mesh: Mesh
    engine: str
    keep_params: bool = False
    groups: tuple[Group, ...] = ()
    features: Features = Features()

    @property
    def layout(self) -> Layout:
        """The plan's run table and chunk size (see :class:`Layout`)."""
        return Layout(self.config, self.grid, self.runs, self.chunk_size)

    def chunk_slice(self, c: int) -> slice:
        """The run indices of chunk ``c``."""
        return self.layout.chunk_slice(c)


def make_plan(config: Config, grid: Grid, *, chunk_size: int | None = None,
              mesh: Mesh | None = None, engine: str = "auto", keep_params: bool = False) -> Plan:
    """Check ``config``'s objects against the grid and plan the chunks; nothing is compiled yet.

    The runs are split into groups of padded widths, one program each
    (:func:`vgjax.grid.width_groups.plan_groups`); ``engine="auto"`` picks each group's engine by
    backend and width (:func:`choose_engine`); without a ``mesh``, every device
    (:func:`default_mesh`; the signal probe included: its spectrum calls no library inside
    the program, :func:`vgjax.probes.singular_values`). On a CPU the fast and wide engines
    train a call in depth-sorted blocks (:func:`vgjax.engines.depth_blocks`), each computing only
    the layers its runs have; outputs keep the run-table order.
    """
    check_parts(config)  # user objects traced once (jax.eval_shape), before compiling
    if grid.lrs and not isinstance(config.optimizer, str) and hasattr(config.optimizer, "update"):
        raise ValueError("lrs: an optax.GradientTransformation has its own learning rate; "
                         "allowed: no lrs axis, or a factory lr -> GradientTransformation")
    runs = run_table(grid, config)
    features = features_of(architectures(runs))
    if config.probes and not features.plain:
        raise ValueError(f"probes: {list(config.probes)} read the plain MLP's layers, not "
                         f"residual or normalised runs; allowed: no probes, or residuals "
                         f"and norms 'none'")
    check_engine(config, engine, features)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size: {chunk_size!r} is not allowed; allowed: integers >= 1")
    max_depth, p = padded_sizes(config, grid)
    mesh = mesh or default_mesh()
    n_dev = mesh.devices.size
    widest = choose_engine(config, p, mesh, features) if engine == "auto" else engine
    if widest == "wide":  # a chunk's outputs stay, its working set is per block
        out_b = bytes_per_run("wide", config, max_depth, p, keep_params).outputs
        size = chunk_size or auto_chunk_size(len(runs), config, max_depth, p, n_dev,
                                             per_run=out_b)
    else:
        size = chunk_size or auto_chunk_size(len(runs), config, max_depth, p, n_dev)
    size = max(n_dev, -(-size // n_dev) * n_dev)  # a multiple of the device count
    fit = lambda p_g: max(1, DEFAULT_CHUNK_BYTES  # runs of width p_g one call may hold
                          // bytes_per_run("vmap", config, max_depth, p_g).working)
    groups = plan_groups(config, runs, max_depth, min_width(config), size, mesh, engine,
                         DEFAULT_CHUNK_BYTES, fit, features)
    engines = "+".join(dict.fromkeys(g.engine for g in groups))
    return Plan(config, grid, runs, run_specs(runs), max_depth, p, size,
                math.ceil(len(runs) / size), mesh, engines, bool(keep_params), groups,
                features)


def min_width(config: Config) -> int:
    """The narrowest padded width: the data's inputs and the logits must fit."""
    f, c = data_dims(config)
    return max(f, n_outputs_for(config, c))


def default_mesh(devices: list | None = None) -> Mesh:
    """1-D mesh named ``runs`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("runs",))
