"""A training grid of recurrent nets: every (cell, sequence length, depth, init, seed) in one
compiled program, and its files.

Runs (:class:`RunSpec`) are grouped by their static parts, the cell, the rnn's φ, the
sequence's number of steps (so a T = 50 run does not scan the 200 steps of a longer one)
and the number of stacked layers;
inside a group the seed, initialisation (kind, scale, forget bias, bias variance) and
clipping threshold are per-run values, vmapped over (:func:`vgjax.recurrent.cells.run_layers`
masks steps past a run's length, and a task's sequence is the same whatever length it is
padded to, so a run computes the same numbers in any grid). One ``jax.jit`` holds every group, so one
compiled program trains the whole grid; each group's run axis is
``shard_map``-ped over the CPU devices (one per core, :mod:`vgjax.runtime`), its runs padded
to a multiple of them by repeating its last run.

One run: ``key = PRNGKey(seed)`` split into init, training-data and test-data keys (runs that
differ only in length or cell share their seed's streams); every step draws a fresh batch of
the task (:func:`vgjax.recurrent.tasks.sample`) and applies ``clip_by_global_norm`` (at the
run's threshold; none by default) then the grid's optax transformation. Every ``eval_every``
steps, and at initialisation, the run is evaluated on its fixed test batch: the test loss and
the gradient flow through time of every layer (:func:`vgjax.recurrent.flow.task_flow` on the
first ``flow_examples`` test sequences) and, per layer, the norms of the gradient of the loss
on those same sequences with respect to the layer's input kernel, recurrent kernel and biases
(:attr:`vgjax.recurrent.flow.Flow.param_grads`: the flow's backward pass sums them from its
own cotangents, so they cost no pass over the test set and describe the batch the flow is
measured on).

:func:`write_grid` writes ``summary.json`` (the runs, their final losses, timing) and
``history.npz`` (every array of :class:`GridResult`, runs first) atomically through
:mod:`vgjax.io.store`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import runtime
from vgjax.config import MAX_SEED, check_choice, check_float, check_int
from vgjax.io.store import atomic_save_npz, atomic_write_text, dumps_json, jsonable, read_npz
from vgjax.model import ACTIVATION_FNS
from vgjax.recurrent import cells as rc
from vgjax.recurrent import flow as rf
from vgjax.recurrent import tasks as rt
from vgjax.recurrent.outputs import SUMMARY_FORMAT, SUMMARY_VERSION
HISTORY_ARRAYS = ("train_loss", "grad_norm", "test_loss", "log_norm", "log_rms", "saturation",
                  "lambda1", "grad_input_kernel", "grad_recurrent_kernel", "grad_bias")
LAYER_GRADS = {"grad_input_kernel": "input_kernel", "grad_recurrent_kernel":
               "recurrent_kernel", "grad_bias": "bias"}   # history name: LayerGrads field
LAYER_ARRAYS = ("log_norm", "log_rms", "saturation", "lambda1", *LAYER_GRADS)   # [R, E+1, L..]


class RunSpec(NamedTuple):
    """One run (host-side values). cell: one of :data:`~vgjax.recurrent.cells.CELLS`;
    length: the task's T; activation: the rnn's φ (ignored by gated cells); init, scale,
    forget_bias, bias_var: see :class:`~vgjax.recurrent.cells.InitSpec` (every layer's);
    clip_norm: the global-norm clipping threshold (None: no clipping); layers: stacked
    recurrent layers of the cell (:mod:`~vgjax.recurrent.cells`)."""

    cell: str
    length: int
    seed: int
    activation: str = "tanh"
    init: str = "orthogonal"
    scale: float = 1.0
    forget_bias: float = 1.0
    bias_var: float = 0.0
    clip_norm: float | None = None
    layers: int = 1

    @property
    def label(self) -> str:
        """A short name: ``irnn``, ``rnn-tanh-normal-0.8``, ``lstm``, ``lstm-x3`` (3 layers)..."""
        depth = f"-x{self.layers}" if self.layers != 1 else ""
        if self.cell != "rnn":
            return self.cell + depth
        if self.activation == "relu" and self.init == "identity" and self.scale == 1.0:
            return "irnn" + depth
        return f"rnn-{self.activation}-{self.init}-{self.scale:g}{depth}"


class TrainSpec(NamedTuple):
    """The grid's shared protocol: task, hidden width N, batch size, training steps, the
    evaluation period (steps), test and gradient-flow batch sizes, the optax transformation."""

    task: rt.Task
    width: int = 64
    batch_size: int = 32
    steps: int = 1000
    eval_every: int = 100
    test_size: int = 256
    flow_examples: int = 32
    optimizer: optax.GradientTransformation = optax.adam(1e-3)


class GridResult(NamedTuple):
    """A trained grid, runs in the order given; ``E = steps / eval_every`` evaluations after
    the one at initialisation, T the grid's longest sequence in steps.

    L is the grid's largest depth (first layer first; NaN in the layers a shallower run
    lacks). train_loss, grad_norm [R, steps] (grad_norm before clipping); eval_steps
    [E + 1]; test_loss [R, E + 1]; saturation, lambda1
    [R, E + 1, L]; log_norm, log_rms [R, E + 1, L, T] (NaN past a run's steps; see
    :class:`~vgjax.recurrent.flow.Flow`); grad_input_kernel, grad_recurrent_kernel,
    grad_bias [R, E + 1, L] (:class:`~vgjax.recurrent.flow.LayerGrads` of the gradient of
    the loss on the flow's test sequences); compile_s, train_s: seconds.
    """

    runs: tuple[RunSpec, ...]
    train_loss: np.ndarray
    grad_norm: np.ndarray
    eval_steps: np.ndarray
    test_loss: np.ndarray
    log_norm: np.ndarray
    log_rms: np.ndarray
    saturation: np.ndarray
    lambda1: np.ndarray
    grad_input_kernel: np.ndarray
    grad_recurrent_kernel: np.ndarray
    grad_bias: np.ndarray
    compile_s: float
    train_s: float


def check_runs(runs, spec: TrainSpec) -> None:
    """One-line ValueError for the first bad value of ``runs`` or ``spec`` (before anything
    is compiled)."""
    if not runs:
        raise ValueError("runs: empty; allowed: at least one RunSpec")
    for name in ("width", "batch_size", "steps", "eval_every", "test_size", "flow_examples"):
        check_int(name, getattr(spec, name), 1)
    if spec.steps % spec.eval_every:
        raise ValueError(f"eval_every: {spec.eval_every} does not divide steps {spec.steps}")
    if spec.flow_examples > spec.test_size:
        raise ValueError(f"flow_examples: {spec.flow_examples} is out of range; allowed: "
                         f"<= test_size {spec.test_size}")
    for r in runs:
        rc.check_cell(r.cell)
        rt.check_length(r.length)
        check_choice("activation", r.activation, tuple(ACTIVATION_FNS))
        check_choice("init", r.init, rc.INITS)
        check_float("scale", r.scale, lo=0.0, lo_open=True)
        check_float("forget_bias", r.forget_bias, lo=0.0, lo_open=False)
        check_float("bias_var", r.bias_var, lo=0.0, lo_open=False)
        if r.clip_norm is not None:  # None: no clipping
            check_float("clip_norm", r.clip_norm, lo=0.0, lo_open=True)
        check_int("seed", r.seed, 0, MAX_SEED)
        check_int("layers", r.layers, 1)


def _groups(runs, task: rt.Task) -> dict[tuple[str, str, int, int], list[int]]:
    # Static parts of a run: the cell, φ for rnn (gated cells ignore it), the scan length
    # (a group per length costs a compilation each, and saves the shorter runs the longer
    # ones' steps: the recurrent bench grid, T = 50/100/200: 200 / 117 of the work) and the
    # depth (the parameters' shapes).
    groups: dict[tuple[str, str, int, int], list[int]] = {}
    for i, r in enumerate(runs):
        key = (r.cell, r.activation if r.cell == "rnn" else "-", rt.task_steps(task, r.length),
               r.layers)
        groups.setdefault(key, []).append(i)
    return groups


class RunValues(NamedTuple):
    """A group's per-run values, each [R]: seed, length, init (:class:`InitSpec`), clip."""

    seed: jax.Array
    length: jax.Array
    init: rc.InitSpec
    clip: jax.Array


def _values(runs, idx) -> RunValues:
    sel = [runs[i] for i in idx]
    f32 = lambda xs: jnp.asarray(xs, jnp.float32)
    return RunValues(
        seed=jnp.asarray([r.seed for r in sel], jnp.uint32),
        length=jnp.asarray([r.length for r in sel], jnp.int32),
        init=rc.InitSpec(jnp.asarray([rc.INITS.index(r.init) for r in sel], jnp.int32),
                         f32([r.scale for r in sel]), f32([r.forget_bias for r in sel]),
                         f32([r.bias_var for r in sel])),
        clip=f32([np.inf if r.clip_norm is None else r.clip_norm for r in sel]))


def make_train_run(cell: str, activation: str, spec: TrainSpec, t_max: int, layers: int = 1):
    """The pure training function of one run of a group of ``layers``-deep nets:
    ``train(values) -> dict`` of its histories (shapes as in :class:`GridResult` without the
    run axis, its own ``layers`` and ``t_max``); vmap it over runs."""
    task = spec.task
    n_blocks = spec.steps // spec.eval_every

    def train(v: RunValues) -> dict[str, jax.Array]:
        k_init, k_train, k_test = jax.random.split(jax.random.PRNGKey(v.seed), 3)
        params = rc.init_cell(k_init, cell, n_inputs=task.n_inputs, width=spec.width,
                              n_outputs=task.n_outputs, spec=v.init, layers=layers)
        tx = optax.chain(optax.clip_by_global_norm(v.clip), spec.optimizer)
        n_steps = rt.task_steps(task, v.length)
        test = rt.sample(task, k_test, v.length, t_max, spec.test_size)
        flow_batch = rt.SeqBatch(*(a[:, :spec.flow_examples] for a in test))

        def loss_fn(p, batch):
            out = rc.readout(p, rc.run(cell, activation, p, batch.x, n_steps).h)
            return jnp.mean(rt.example_losses(task, out, batch))

        def evaluate(p):
            flow = rf.task_flow(task, cell, activation, p, flow_batch, v.length)
            grads = flow.param_grads
            return {"test_loss": loss_fn(p, test), "log_norm": flow.log_norm,
                    "log_rms": flow.log_rms, "saturation": flow.saturation,
                    "lambda1": flow.lambda1,
                    **{name: getattr(grads, f) for name, f in LAYER_GRADS.items()}}

        def step(state, i):
            p, opt = state
            batch = rt.sample(task, jax.random.fold_in(k_train, i), v.length, t_max,
                              spec.batch_size)
            loss, grads = jax.value_and_grad(loss_fn)(p, batch)
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), (loss, optax.tree.norm(grads))

        def train_block(state, b):
            return jax.lax.scan(step, state, b * spec.eval_every + jnp.arange(spec.eval_every))

        def skip_block(state, b):
            zeros = jnp.zeros((spec.eval_every,), jnp.float32)
            return state, (zeros, zeros)

        def block(state, b):
            # Evaluate, then train the next block: n_blocks + 1 evaluations from one traced
            # copy of `evaluate` (it is the larger part of the program); the block index is
            # not a per-run value, so under vmap the cond stays a branch, not a select.
            ev = evaluate(state[0])
            state, (loss, gnorm) = jax.lax.cond(b < n_blocks, train_block, skip_block,
                                                state, b)
            return state, (loss, gnorm, ev)

        _, (loss, gnorm, out) = jax.lax.scan(block, (params, tx.init(params)),
                                             jnp.arange(n_blocks + 1))
        return {**out, "train_loss": loss[:-1].reshape(-1), "grad_norm": gnorm[:-1].reshape(-1)}
    return train


class LoweredGrid(NamedTuple):
    """The grid's one program traced and lowered, not compiled.

    lowered: the ``jax.stages.Lowered`` program; groups: {(cell, φ, scan length, layers):
    run indices}; inputs: {"cell/φ/length/layers": :class:`RunValues`}; t_maxes: {group:
    scan length}.
    """

    lowered: jax.stages.Lowered
    groups: dict[tuple[str, str, int, int], list[int]]
    inputs: dict[str, RunValues]
    t_maxes: dict[tuple[str, str, int, int], int]


def lower_grid(runs, spec: TrainSpec) -> LoweredGrid:
    """Check the runs, trace and lower the grid's one program (:class:`LoweredGrid`).

    The program calls no library (LAPACK or other custom call): XLA:CPU runs those on its
    intra-op thread pool and two at once can deadlock it
    (:func:`vgjax.recurrent.cells.orthogonal`); a test holds every cell's program to it.
    """
    runs = tuple(runs)
    check_runs(runs, spec)
    groups = _groups(runs, spec.task)
    t_maxes = {g: g[2] for g in groups}
    # The run axis of every group sharded over the CPU devices (one per core): each device
    # trains its share of the runs with no communication, so nothing in the program waits
    # on another device. A group's runs are padded to a multiple of the devices by
    # repeating its last run (run_grid drops the copies).
    mesh = Mesh(np.asarray(jax.devices()), ("runs",))
    shard = NamedSharding(mesh, PartitionSpec("runs"))
    fns = {g: jax.shard_map(jax.vmap(make_train_run(g[0], g[1] if g[0] == "rnn" else "tanh",
                                                    spec, t_maxes[g], g[3])),
                            mesh=mesh, in_specs=PartitionSpec("runs"),
                            out_specs=PartitionSpec("runs"), check_vma=False)
           for g in groups}
    names = {g: "/".join(map(str, g)) for g in groups}   # pytree keys must be strings
    inputs = {names[g]: jax.device_put(_values(runs, _padded(idx, mesh.size)), shard)
              for g, idx in groups.items()}
    program = jax.jit(lambda xs: {names[g]: fns[g](xs[names[g]]) for g in groups},
                      in_shardings=shard, out_shardings=shard)
    return LoweredGrid(program.lower(inputs), groups, inputs, t_maxes)


def _padded(idx: list[int], n: int) -> list[int]:
    # idx repeated at its end to a multiple of n
    size = -(-len(idx) // n) * n
    return [idx[min(k, len(idx) - 1)] for k in range(size)]


def compile_grid(runs, spec: TrainSpec):
    """Check the runs, trace and compile the grid's one program: (compiled, groups, inputs,
    t_max per group, compile seconds). ``compiled(inputs)`` -> {group: histories [R_g, ...]}."""
    lowered, groups, inputs, t_maxes = lower_grid(runs, spec)
    t0 = time.perf_counter()
    # vgjax's CPU compile options (YNNPACK fusions off: faster on these small tensors)
    compiled = runtime.compile_lowered(lowered, jax.default_backend())
    return compiled, groups, inputs, t_maxes, time.perf_counter() - t0


def run_grid(runs, spec: TrainSpec) -> GridResult:
    """Train every run of ``runs`` (RunSpecs) under ``spec`` in one compiled program."""
    runs = tuple(runs)
    compiled, groups, inputs, t_maxes, compile_s = compile_grid(runs, spec)
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(inputs))
    train_s = time.perf_counter() - t0
    t_max = max(t_maxes.values())
    depth = max(g[3] for g in groups)
    n_eval = spec.steps // spec.eval_every + 1
    merged: dict[str, np.ndarray] = {}
    for g, idx in groups.items():
        for name, arr in out["/".join(map(str, g))].items():
            arr = np.asarray(arr)[:len(idx)]   # the group's runs, without the padding
            if name in LAYER_ARRAYS:   # [R, E+1, L_g, ...]: NaN for layers and steps it lacks
                arr = _nan_pad(arr, 2, depth)
                if name in ("log_norm", "log_rms"):
                    arr = _nan_pad(arr, 3, t_max)
            if name not in merged:
                merged[name] = np.empty((len(runs),) + arr.shape[1:], arr.dtype)
            merged[name][np.asarray(idx)] = arr
    return GridResult(runs=runs, eval_steps=np.arange(n_eval) * spec.eval_every,
                      compile_s=compile_s, train_s=train_s,
                      **{k: merged[k] for k in HISTORY_ARRAYS})


def _nan_pad(arr: np.ndarray, axis: int, size: int) -> np.ndarray:
    # arr with NaN appended along `axis` to `size`
    if arr.shape[axis] == size:
        return arr
    shape = list(arr.shape)
    shape[axis] = size - arr.shape[axis]
    return np.concatenate([arr, np.full(shape, np.nan, arr.dtype)], axis=axis)


def final_test_loss(result: GridResult) -> np.ndarray:
    """[R] each run's test loss after its last step."""
    return result.test_loss[:, -1]


def write_grid(result: GridResult, spec: TrainSpec, out_dir: Path,
               settings: dict | None = None) -> list[Path]:
    """Write ``summary.json`` and ``history.npz`` into ``out_dir`` (created) atomically;
    ``settings`` (optional, JSON values, e.g. the optimizer's name and learning rate, which
    the optax transformation does not tell) goes into the summary as it is."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = spec.task
    rows = [{**r._asdict(), "label": r.label, "final_test_loss": float(loss),
             "baseline": rt.baseline(task, r.length),
             # per layer, at the last evaluation: the gradient norms of the flow's batch
             "final_layer_grads": {f: getattr(result, name)[i, -1, :r.layers].tolist()
                                   for name, f in LAYER_GRADS.items()}}
            for i, (r, loss) in enumerate(zip(result.runs, final_test_loss(result)))]
    summary = {"format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
               "task": task._asdict(),
               "protocol": {k: getattr(spec, k) for k in ("width", "batch_size", "steps",
                                                          "eval_every", "test_size",
                                                          "flow_examples")},
               "runs": rows, "timing": {"compile_s": result.compile_s,
                                        "train_s": result.train_s}}
    if settings is not None:
        summary["settings"] = dict(settings)
    arrays = {k: getattr(result, k) for k in HISTORY_ARRAYS}
    atomic_save_npz(out_dir / "history.npz", {**arrays, "eval_steps": result.eval_steps},
                    compress=True)
    # summary.json last: its presence says the directory is complete
    atomic_write_text(out_dir / "summary.json", dumps_json(jsonable(summary)))
    return [out_dir / "summary.json", out_dir / "history.npz"]


def read_history(out_dir: Path) -> dict[str, np.ndarray]:
    """The arrays :func:`write_grid` wrote into ``out_dir/history.npz`` (no pickle)."""
    return read_npz(Path(out_dir) / "history.npz")
