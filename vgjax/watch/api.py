"""``vgjax.watch.train``: S seeds (x learning rates) of a user's Flax model in one compiled
program, with per-path gradient statistics, as a :class:`WatchResult` (and, with ``out``,
the files of a sweep).

Runs are seeds x lrs, seed outermost. Every run is the one loop of
:mod:`vgjax.engines.loop` with :func:`vgjax.watch.engine.watch_engine`'s kernels, vmapped
over runs and sharded over the devices; runs are trained ``chunk_size`` at a time, each
chunk a call of the same compiled program, so a directory run resumes chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vgjax import diagnostics as diag
from vgjax.config import MAX_SEED, Config, describe
from vgjax.data import Data, make_data
from vgjax.engines.loop import PARAM_PREFIX, DeviceData
from vgjax.grid.plan import default_mesh
from vgjax.result import final_metric
from vgjax.step import LOSS_FNS
from vgjax.watch.engine import LoopConfig, RunSpec, train_program, watch_engine
from vgjax.watch.models import ACTIVATION_PREFIX, as_model, model_layout

PATH_STATS = ("grad_mean_abs", "grad_norm", "weight_l1")
ACT_STATS = ("act_grad_mean_abs", "act_grad_norm")
HISTS = ("grad_hist", "weight_hist", "act_grad_hist")


class WatchRuns(NamedTuple):
    """One row per run ([R] arrays): seed int, lr float32 (NaN: the optimizer's own) and
    diverged_epoch int32 (1-based, -1 never)."""

    seed: np.ndarray
    lr: np.ndarray
    diverged_epoch: np.ndarray

    def __len__(self) -> int:
        return int(self.seed.shape[0])


@dataclass(frozen=True)
class WatchResult:
    """A trained model's seeds, on the host.

    model: ``{"kind": "linen" | "nnx", "name": class name}``; paths [L] and sizes [L]: the
    parameter paths in input-to-output order and their entries; act_paths [A]: the
    activation paths (perturbations), if any; seeds, lrs: the grid (lrs empty: the
    optimizer's own rate); runs: :class:`WatchRuns`; settings: the protocol as JSON values.

    history (R runs, E epochs, H histogram epochs, K buckets):

    - train_loss, test_loss, train_accuracy, test_accuracy [R, E];
    - grad_mean_abs, grad_norm [R, E, L]: per epoch, the mean over its steps of each path's
      mean |g| and L2 norm; weight_l1 [R, E, L] at the epoch's end;
    - act_grad_mean_abs, act_grad_norm [R, E, A] (with activation paths);
    - grad_hist, weight_hist [R, H, L, K] int32 and ``_stats`` [R, H, L, 4] (min, max, sum,
      sum of squares), act_grad_hist [R, H, A, K] (with activation paths);
    - hist_epochs [H] int32 (1-based), hist_edges [K + 1] float32.

    Epochs from the one a run diverged in are NaN (counts 0).
    params: with ``keep_params``, each path's final values [R, ...]; else None.
    """

    model: dict
    paths: tuple[str, ...]
    sizes: tuple[int, ...]
    act_paths: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    runs: WatchRuns
    settings: dict
    history: dict[str, np.ndarray]
    params: dict[str, np.ndarray] | None = None
    timing: dict = field(default_factory=dict)

    def final(self, name: str) -> np.ndarray:
        """Each run's last value of history array ``name`` before it diverged: [R] for the
        curves, [R, L] for the per-path statistics (:func:`vgjax.result.final_metric`)."""
        return final_metric(self, name)

    def stat(self, name: str, path: str) -> np.ndarray:
        """[R, E] history of statistic ``name`` (e.g. ``grad_norm``) of one path."""
        names = self.act_paths if name.startswith("act_") else self.paths
        if path not in names:
            raise ValueError(f"path: {path!r} is not a path of this model; allowed: "
                             f"{list(names)}")
        return self.history[name][:, :, names.index(path)]


def _data(data: Any) -> Data:
    if isinstance(data, str):
        if data not in ("circles", "moons", "digits"):
            raise ValueError(f"data: {data!r} is not a vgjax data set; allowed: 'circles', "
                             "'moons', 'digits' or arrays (x_train, y_train, x_test, y_test)")
        return make_data(Config(data=data, n_samples=1797 if data == "digits" else 1000,
                                n_train=1200 if data == "digits" else 500))
    if isinstance(data, (tuple, list)) and len(data) == 4:
        arrays = Data(*(np.asarray(a, np.float32) for a in data))
        for split, x, y in (("train", arrays.x_train, arrays.y_train),
                            ("test", arrays.x_test, arrays.y_test)):
            if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(f"data: x_{split} {x.shape} and y_{split} {y.shape} do not "
                                 "match; allowed: x [N, ...] and y [N] with N >= 1")
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise ValueError(f"data: the {split} arrays hold NaN/Inf; allowed: finite numbers")
        if arrays.x_train.shape[1:] != arrays.x_test.shape[1:]:
            raise ValueError(f"data: x_train {arrays.x_train.shape} and x_test "
                             f"{arrays.x_test.shape} differ beyond N; allowed: equal shapes")
        return arrays
    raise ValueError(f"data: {type(data).__name__} is not allowed; allowed: 'circles', "
                     "'moons', 'digits' or arrays (x_train, y_train, x_test, y_test)")


def _loss(loss: Any) -> Callable | None:
    if loss is None or callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSS_FNS:
        return LOSS_FNS[loss]
    raise ValueError(f"loss: {loss!r} is not allowed; allowed: None, 'bce', 'softmax_ce' or "
                     "a callable (outputs, labels [B]) -> per-example loss [B]")


def _optimizer(optimizer: Any, lrs: tuple[float, ...]) -> Callable:
    if isinstance(optimizer, optax.GradientTransformation):
        if lrs:
            raise ValueError("lrs: a learning-rate axis needs optimizer as a factory lr -> "
                             "GradientTransformation (e.g. optax.adam); allowed: lrs=() with "
                             "an optax transformation")
        return lambda lr: optimizer
    if callable(optimizer):
        if not lrs:
            raise ValueError("lrs: optimizer is a factory lr -> GradientTransformation; "
                             "allowed: a non-empty lrs, or an optax transformation")
        return optimizer
    raise ValueError(f"optimizer: {type(optimizer).__name__} is not allowed; allowed: an "
                     "optax.GradientTransformation, or a factory lr -> one with lrs")


def _check(seeds, lrs, epochs, batch_size, hist_every, chunk_size) -> None:
    if not seeds:
        raise ValueError("seeds: empty; allowed: a non-empty list of integers")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"seeds: {s!r} is out of range; allowed: integers in 0..{MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {list(seeds)} repeats a seed; allowed: distinct seeds")
    for lr in lrs:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lrs: {lr!r} is out of range; allowed: finite numbers > 0")
    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                        ("hist_every", hist_every, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: {v!r} is out of range; allowed: integers >= {lo}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: {chunk_size!r} is out of range; allowed: integers >= 1")


def digest(tree: Any) -> str:
    """SHA-256 (16 hex digits) of a pytree of arrays: names user data in a manifest."""
    h = hashlib.sha256()
    for a in jax.tree.leaves(tree):
        a = np.asarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


class Prepared(NamedTuple):
    """Everything :func:`train` fixes before training: the data, the runs, the engine
    (:func:`vgjax.watch.engine.watch_engine`, one run's kernels), ``compile() ->
    program`` (``(RunSpec [call_size], DeviceData) -> history``), the call size, the mesh,
    the result's static parts and the histogram epochs."""

    data: Data
    specs: RunSpec
    engine: Any
    compile: Callable[[], Any]
    call_size: int
    mesh: Mesh
    meta: dict
    hist_epochs: np.ndarray


def prepare(model, data, *, loss=None, optimizer, seeds=(0,), lrs=(), epochs: int = 10,
            batch_size: int = 32, hist_every: int = 10, activations: bool = True,
            init_params=None, keep_params: bool = False, chunk_size: int | None = None,
            mesh: Mesh | None = None) -> Prepared:
    """Check the arguments of :func:`train` (one-line ``ValueError``) and build the model's
    layout and the chunk program (``Prepared.compile()`` compiles it), without training."""
    seeds, lrs = tuple(seeds), tuple(float(x) for x in lrs)
    _check(seeds, lrs, epochs, batch_size, hist_every, chunk_size)
    opt = _optimizer(optimizer, lrs)
    loss_fn = _loss(loss)
    arrays = _data(data)
    user = as_model(model)
    mesh = mesh or default_mesh()
    n_dev = mesh.devices.size
    x0 = jnp.asarray(arrays.x_train[:batch_size])
    try:
        params0 = jax.eval_shape(user.init, jax.random.key(0), x0)
        out = jax.eval_shape(lambda p: user.apply(p, x0, None), params0)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model does not fit the data: one line
        raise ValueError(f"model: does not run on x_train {arrays.x_train.shape} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    if out.ndim not in (1, 2) or out.shape[0] != x0.shape[0]:
        raise ValueError(f"model: outputs {out.shape} for a batch of {x0.shape[0]}; allowed: "
                         "[B] (one logit) or [B, C]")
    if loss_fn is None:
        loss_fn = LOSS_FNS["bce" if out.ndim == 1 else "softmax_ce"]
    layout = model_layout(lambda p, x: user.apply(p, x, None), params0, x0)
    act_layout = None
    if activations:
        perts = jax.eval_shape(user.perturbations, params0, x0)
        if perts is not None and jax.tree.leaves(perts):
            act_layout = model_layout(lambda q, p, x: user.apply(p, x, q), perts, params0, x0,
                                      prefix=ACTIVATION_PREFIX)
    runs = [(s, lr) for s in seeds for lr in (lrs or (math.nan,))]
    n_runs = len(runs)
    if init_params is not None:
        lead = {np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(init_params)}
        want = jax.tree.map(lambda s: (n_runs,) + s.shape, params0)
        got = jax.tree.map(np.shape, init_params)
        if lead != {n_runs} or jax.tree.structure(want) != jax.tree.structure(got) or want != got:
            raise ValueError(f"init_params: shapes {got} do not fit {n_runs} runs of the "
                             f"model's parameters {want}; allowed: the model's tree with a "
                             "leading run axis")
    size = n_runs if chunk_size is None else min(chunk_size, n_runs)
    size = -(-size // n_dev) * n_dev
    key_data = np.stack([np.asarray(jax.random.key_data(jax.random.PRNGKey(s))) for s, _ in runs])
    specs = RunSpec(key_data.astype(np.uint32),
                    np.asarray([0.0 if math.isnan(lr) else lr for _, lr in runs], np.float32),
                    None if init_params is None else jax.tree.map(np.asarray, init_params))
    config = LoopConfig(epochs, batch_size, int(arrays.x_train.shape[0]), hist_every)
    engine = watch_engine(user, layout, act_layout, loss_fn, opt, config)
    program = lambda: _compile(engine, config, mesh, keep_params, specs, size, arrays)
    hist = np.arange(hist_every, epochs + 1, hist_every, dtype=np.int32) if hist_every else \
        np.zeros(0, np.int32)
    meta = dict(
        model={"kind": user.kind, "name": user.name}, paths=layout.paths, sizes=layout.sizes,
        act_paths=act_layout.paths if act_layout else (), seeds=seeds, lrs=lrs,
        lr_column=np.asarray([lr for _, lr in runs], np.float32),
        settings={"epochs": epochs, "batch_size": batch_size, "hist_every": hist_every,
                  "loss": describe(loss if loss is not None else loss_fn),
                  "optimizer": describe(optimizer),
                  "data": data if isinstance(data, str) else f"arrays:{digest(arrays)}",
                  "n_train": int(arrays.x_train.shape[0]), "n_test": int(arrays.x_test.shape[0]),
                  "init_params": None if init_params is None else f"arrays:{digest(init_params)}",
                  "activations": bool(activations), "keep_params": bool(keep_params)})
    return Prepared(arrays, specs, engine, program, size, mesh, meta, hist)


def _compile(engine, config, mesh, keep_params, specs, size, arrays):
    runs = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    fn = jax.jit(train_program(engine, config, mesh, keep_params=keep_params),
                 in_shardings=(runs, replicated), out_shardings=runs)
    shape = lambda a: jax.ShapeDtypeStruct((size,) + np.shape(a)[1:], np.asarray(a).dtype)
    spec_shapes = RunSpec(shape(specs.key), shape(specs.lr),
                          None if specs.params is None else jax.tree.map(shape, specs.params))
    data_shapes = DeviceData(*(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in arrays))
    return fn.lower(spec_shapes, data_shapes).compile()


def n_chunks(prep: Prepared) -> int:
    """Program calls that train all runs."""
    return -(-len(prep.specs.lr) // prep.call_size)


def run_chunk(prep: Prepared, program, c: int, data: DeviceData) -> dict[str, np.ndarray]:
    """Train chunk ``c`` (runs ``c * call_size ...``) with ``program`` (``prep.compile()``)
    on ``data`` (:func:`device_data`); its history on the host (run axis first, only the
    chunk's real runs)."""
    n = len(prep.specs.lr)
    idx = np.arange(c * prep.call_size, min((c + 1) * prep.call_size, n))
    take = idx[np.minimum(np.arange(prep.call_size), len(idx) - 1)]
    runs = NamedSharding(prep.mesh, PartitionSpec("runs"))
    spec = jax.tree.map(lambda a: jax.device_put(np.asarray(a)[take], runs), prep.specs)
    out = program(spec, data)
    return {k: np.asarray(v)[:len(idx)] for k, v in out.items()}


def device_data(prep: Prepared) -> DeviceData:
    """The data, replicated on every device of the mesh."""
    replicated = NamedSharding(prep.mesh, PartitionSpec())
    return DeviceData(*(jax.device_put(np.asarray(a, np.float32), replicated) for a in prep.data))


def assemble(prep: Prepared, parts: list[dict[str, np.ndarray]], timing: dict) -> WatchResult:
    """The :class:`WatchResult` of the chunks' histories (in chunk order)."""
    m = prep.meta
    raw = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n_params = len(m["paths"])
    history = {k: raw[k] for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy")}
    for name in PATH_STATS:
        history[name] = raw[name][:, :, :n_params]
    if m["act_paths"]:
        history["act_grad_mean_abs"] = raw["grad_mean_abs"][:, :, n_params:]
        history["act_grad_norm"] = raw["grad_norm"][:, :, n_params:]
    if "grad_hist" in raw:
        for name in ("grad_hist", "weight_hist"):
            history[name] = raw[name][:, :, :n_params]
            history[name + "_stats"] = raw[name + "_stats"][:, :, :n_params]
        if m["act_paths"]:
            history["act_grad_hist"] = raw["grad_hist"][:, :, n_params:]
            history["act_grad_hist_stats"] = raw["grad_hist_stats"][:, :, n_params:]
    history["hist_epochs"] = prep.hist_epochs
    history["hist_edges"] = diag.HIST_EDGES.copy()
    params = {k[len(PARAM_PREFIX):]: v for k, v in raw.items() if k.startswith(PARAM_PREFIX)}
    runs = WatchRuns(np.asarray([s for s in m["seeds"] for _ in (m["lrs"] or (0,))], np.int64),
                     m["lr_column"], raw["diverged_epoch"].astype(np.int32))
    return WatchResult(model=m["model"], paths=tuple(m["paths"]), sizes=tuple(m["sizes"]),
                       act_paths=tuple(m["act_paths"]), seeds=tuple(m["seeds"]),
                       lrs=tuple(m["lrs"]), runs=runs, settings=dict(m["settings"]),
                       history=history, params=params or None, timing=dict(timing))


def train(model, data, *, optimizer, loss=None, seeds=(0,), lrs=(), epochs: int = 10,
          batch_size: int = 32, hist_every: int = 10, activations: bool = True,
          init_params=None, keep_params: bool = False, chunk_size: int | None = None,
          mesh: Mesh | None = None, out=None, overwrite: bool = False,
          tensorboard: bool = True) -> WatchResult:
    """Train every seed (x lr) of a Flax model in one compiled program, watching its
    gradients path by path.

    Args:
      model: a ``flax.linen.Module``, or a factory ``rngs -> nnx.Module`` (called once per
        seed with ``nnx.Rngs(init key)``). Its outputs are [B] (one logit) or [B, C].
        Parameters only (no batch statistics, no dropout state).
      data: ``"circles"``, ``"moons"`` (1000 points, 500 for training), ``"digits"`` (1797
        8x8 images flattened to 64 pixels, 1200 for training), or arrays ``(x_train [N, ...],
        y_train [N], x_test [M, ...], y_test [M])`` with class-index labels.
      optimizer: an ``optax.GradientTransformation``, or with ``lrs`` a factory ``lr ->
        GradientTransformation`` (e.g. ``optax.adam``; lr traced, one program for all).
      loss: per-example ``(outputs, labels [B]) -> [B]``, ``"bce"`` or ``"softmax_ce"``;
        None: bce for [B] outputs, softmax cross-entropy for [B, C]. A batch's loss is the
        weighted mean over its examples (the last batch's padding weighs 0).
      seeds: distinct ints; run r's keys are :func:`vgjax.engines.loop.run_keys` of
        ``PRNGKey(seed)``: init and minibatch order, as in a vgjax sweep.
      lrs: learning rates (an axis of runs; seeds outermost), empty with a transformation.
      epochs, batch_size: the protocol; hist_every: gradient and weight histograms every
        that many epochs (0: none).
      activations: also record gradients w.r.t. the activations the model perturbs (linen
        or nnx ``self.perturb(name, h)``).
      init_params: optional initial parameters, the model's tree with a leading run axis
        [R, ...] (instead of ``model.init``).
      keep_params: also return each path's final values in ``result.params`` [R, ...].
      chunk_size: runs per program call (default: all at once); mesh: a 1-D ``runs`` mesh
        (default: every device).
      out: a directory to write summary.json, history.npz and tensorboard/ into
        (:mod:`vgjax.watch.outputs`); resumes chunk by chunk after an interruption.
      overwrite: replace a different run in ``out``; tensorboard: write the event files.
    Returns:
      :class:`WatchResult`.
    """
    kwargs = dict(loss=loss, optimizer=optimizer, seeds=seeds, lrs=lrs, epochs=epochs,
                  batch_size=batch_size, hist_every=hist_every, activations=activations,
                  init_params=init_params, keep_params=keep_params, chunk_size=chunk_size,
                  mesh=mesh)
    if out is not None:
        from vgjax.watch.outputs import train_into
        return train_into(model, data, out, overwrite=overwrite, tensorboard=tensorboard,
                          **kwargs)
    t0 = time.perf_counter()
    prep = prepare(model, data, **kwargs)
    program = prep.compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dev = device_data(prep)
    parts = [run_chunk(prep, program, c, dev) for c in range(n_chunks(prep))]
    return assemble(prep, parts, {"compile_s": compile_s, "train_s": time.perf_counter() - t0})


def manifest(prep: Prepared) -> dict:
    """What names a watched run in its directory (JSON): model, paths, settings, grid."""
    m = prep.meta
    return json.loads(json.dumps({
        "format": "vgjax.watch.manifest", "version": 1, "model": m["model"],
        "paths": list(m["paths"]), "act_paths": list(m["act_paths"]),
        "settings": m["settings"], "grid": {"seeds": [int(s) for s in m["seeds"]],
                                            "lrs": list(m["lrs"])},
        "call_size": prep.call_size}))
