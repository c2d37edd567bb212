"""The result of a sweep: the run table and the history arrays, all on the host as NumPy.

Shapes use one language everywhere: runs ``R`` first, then epochs ``E``, then layers ``L``.
``L = D + 1`` where ``D`` is the largest depth in the grid: layer index ``i < D`` is hidden
layer ``i + 1`` and index ``D`` is the output layer. Entries for layers a run does not have,
and for epochs after a run diverged, are NaN.

History arrays (``SweepResult.history``):

=====================  ================  ==================================================
name                   shape             meaning
=====================  ================  ==================================================
train_loss             [R, E] float32    binary cross-entropy on the whole training set
test_loss              [R, E] float32    same on the test set
train_accuracy         [R, E] float32    accuracy (threshold 0.5) on the training set
test_accuracy          [R, E] float32    same on the test set
grad_mean_abs          [R, E, L] f32     mean over the epoch's steps of mean |dL/dW| (kernel)
grad_norm              [R, E, L] f32     mean over the epoch's steps of ||dL/dW||_2 (kernel)
weight_l1              [R, E, L] f32     L1 norm of the kernel at the end of the epoch
test_grad_mean_abs     [R, E, L] f32     (only with ``test_gradients``) |dL/dW| on test data
test_grad_norm         [R, E, L] f32     (only with ``test_gradients``)
hist_epochs            [H] int32         1-based epochs that have histograms
hist_edges             [K + 1] float32   fixed bucket edges, shared by every histogram
grad_hist              [R, H, L, K] i32  kernel-gradient counts summed over the epoch's steps
grad_hist_stats        [R, H, L, 4] f32  min, max, sum, sum of squares of those gradients
weight_hist            [R, H, L, K] i32  kernel-weight counts at the end of the epoch
weight_hist_stats      [R, H, L, 4] f32  min, max, sum, sum of squares of those weights
=====================  ================  ==================================================

With the signal probe (``Config.probes=("signal",)``, ``vgjax sweep --probe signal``), on
the training set, per hidden layer (D = largest depth; the output layer is no probe target):

==========================  =================  =============================================
signal_q                    [R, E, D] f32      pre-activation second moment q^l, epoch's end
signal_saturation           [R, E, D] f32      share of (unit, point) pairs with |φ′(h)| < 0.05
signal_dead                 [R, E, D] f32      share of units with φ(h) = 0 on every point
signal_q_init, ..._init     [R, D] f32         the same three at initialisation
signal_jac_mean_sq          [R, H] f32         mean σ² of the input-output Jacobian ∂h_L/∂x
signal_jac_max              [R, H] f32         its largest σ (both at histogram epochs)
signal_jac_log_hist         [R, H, K'] i32     counts of log10 σ in ``signal_jac_edges``
signal_jac_*_init           [R], [R], [R, K']  the same before training
signal_jac_edges            [K' + 1] f32       bucket edges of log10 σ (shared)
==========================  =================  =============================================

The initial values are separate ``*_init`` arrays rather than an epoch 0 on the E axis, so
every [R, E, ...] array keeps meaning "after epoch e" (final values, divergence masks and
epoch indices stay as they are). Absent layers and epochs from the diverged one on are NaN
(the Jacobian's counts 0), as for the gradient statistics.

Values outside ``[hist_edges[0], hist_edges[-1]]`` are counted in the outermost buckets, so
the counts of one histogram add up to (number of real kernel entries) x (steps counted).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from vgjax.config import Config, hist_epochs, residual_label

CURVES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
LAYER_STATS = ("grad_mean_abs", "grad_norm", "weight_l1")
TEST_LAYER_STATS = ("test_grad_mean_abs", "test_grad_norm")
HIST_ARRAYS = ("grad_hist", "grad_hist_stats", "weight_hist", "weight_hist_stats")
# The signal probe's arrays (shapes in the module docstring); recorded only when it is on.
SIGNAL_LAYER_STATS = ("signal_q", "signal_saturation", "signal_dead")
SIGNAL_JAC = ("signal_jac_mean_sq", "signal_jac_max", "signal_jac_log_hist")
INIT_SUFFIX = "_init"
SIGNAL_JAC_EDGES = "signal_jac_edges"
SIGNAL_ARRAYS = (SIGNAL_LAYER_STATS + tuple(n + INIT_SUFFIX for n in SIGNAL_LAYER_STATS)
                 + SIGNAL_JAC + tuple(n + INIT_SUFFIX for n in SIGNAL_JAC))
"""Per-run arrays of the signal probe (the shared ``signal_jac_edges`` aside)."""


@dataclass(frozen=True)
class RunTable:
    """One row per run, in run-axis order. Every field is a NumPy array of shape [R].

    ``lr`` is each run's learning rate; ``diverged_epoch`` is the 1-based epoch in which a
    run's loss or parameters first became NaN/Inf, or -1 if it never did; ``weight_var`` and
    ``bias_var`` are each run's sigma_w^2 and sigma_b^2 (default 1 and 0 when not given);
    ``residual`` and ``norm`` its architecture as text (:func:`vgjax.config.residual_label`:
    ``"none"``, ``"0.5"``, ``"inv_sqrt_depth"``, ``"rezero"``; ``"none"``, ``"layer"``,
    ``"batch"``; default ``"none"``).
    """

    seed: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    lr: np.ndarray
    diverged_epoch: np.ndarray
    weight_var: np.ndarray | None = None
    bias_var: np.ndarray | None = None
    residual: np.ndarray | None = None
    norm: np.ndarray | None = None

    def __post_init__(self):
        n = np.shape(self.seed)[0]
        for name, default in (("weight_var", 1.0), ("bias_var", 0.0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, default, np.float32))
        for name in ("residual", "norm"):
            value = getattr(self, name)
            object.__setattr__(self, name, np.full(n, "none") if value is None
                               else np.asarray(value).astype(str))

    @property
    def diverged(self) -> np.ndarray:
        """[R] bool: whether the run diverged."""
        return self.diverged_epoch >= 0

    def __len__(self) -> int:
        return int(self.seed.shape[0])


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its config, grid lists, run table and history arrays (NumPy)."""

    config: Config
    seeds: tuple[int, ...]
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    runs: RunTable
    history: dict[str, np.ndarray]
    # Optional grid axes (empty: the config's single value) and, from
    # sweep(..., keep_params=True), the final parameters: kernels [R, D, P, P], biases
    # [R, D, P], out_kernel [R, P] (or [R, P, C]), out_bias [R] (or [R, C]).
    weight_vars: tuple[float, ...] = ()
    bias_vars: tuple[float, ...] = ()
    params: dict[str, np.ndarray] | None = None
    # Optional architecture axes (Config.residual / Config.norm values; empty: the config's).
    residuals: tuple = ()
    norms: tuple[str, ...] = ()

    @property
    def n_layers(self) -> int:
        """L = largest depth + 1 (the output layer)."""
        return max(self.depths) + 1


def final_metric(result: SweepResult, name: "str | np.ndarray") -> np.ndarray:
    """Each run's last finite value of a history curve, before the run diverged.

    ``name`` is a history key (or an array) of shape ``[R, E, ...]``: ``[R, E]`` curves give
    ``[R]``, per-layer stats ``[R, E, L]`` give ``[R, L]``. For a run with
    ``diverged_epoch == k`` (1-based) only epochs ``1 .. k-1`` count, so the value is the one
    of epoch ``k-1`` (or of the last earlier finite epoch); NaN if no epoch qualifies (e.g. a
    run that diverged in epoch 1, or a layer the run does not have).
    """
    if isinstance(name, str):
        if name not in result.history:
            raise KeyError(f"final_metric: no history array {name!r}; have {sorted(result.history)}")
        arr = np.asarray(result.history[name])
    else:
        arr = np.asarray(name)
    if arr.ndim < 2 or arr.shape[0] != len(result.runs):
        raise ValueError(
            f"final_metric: expected an array of shape [R={len(result.runs)}, E, ...], got {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    n_runs, n_epochs = arr.shape[:2]
    div = np.asarray(result.runs.diverged_epoch).astype(np.int64)
    limit = np.where(div >= 0, np.clip(div - 1, 0, n_epochs), n_epochs)  # usable epochs per run
    in_time = np.arange(n_epochs)[None, :] < limit[:, None]  # [R, E]
    usable = np.isfinite(arr) & in_time.reshape(in_time.shape + (1,) * (arr.ndim - 2))
    last = n_epochs - 1 - np.argmax(usable[:, ::-1], axis=1)  # [R, ...]
    out = np.take_along_axis(arr, last[:, None], axis=1)[:, 0].copy()
    out[~usable.any(axis=1)] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# The one definition of every derived result. The summary, `vgjax show`, the report, the
# figures and TensorBoard all call these; nothing else computes a final value, "learns",
# seed statistics or a config grouping.

GROUP_FIELDS = ("depth", "width", "lr", "weight_var", "bias_var", "residual", "norm")
"""Run-table fields that make a config: runs equal in all of them are seeds of one config.
Adding a run-table field to the grouping is adding its name here."""

ARCH_FIELDS = ("residual", "norm")
"""The run table's architecture fields: written to summaries and history files only for
sweeps that have a run other than the plain MLP (:func:`written_fields`), so the files of
plain sweeps are as they were before the fields existed."""


def written_fields(runs: RunTable, fields) -> list[str]:
    """``fields`` without :data:`ARCH_FIELDS` when every run is the plain MLP."""
    plain = all(np.all(np.asarray(getattr(runs, f)) == "none") for f in ARCH_FIELDS)
    return [f for f in fields if not (plain and f in ARCH_FIELDS)]

LEARN_THRESHOLD = 0.7
"""Default: a run learns when it did not diverge and its final test accuracy is >= 0.7
(chance is 0.5; the tutorial's working models reach 0.82-0.84, its failing one 0.47)."""


def group_key(runs: RunTable, i: int) -> tuple:
    """The config of run ``i``: its :data:`GROUP_FIELDS` values as Python scalars (the
    architecture as text, :class:`RunTable`)."""
    return tuple(np.asarray(getattr(runs, f))[i].item() for f in GROUP_FIELDS)


def group_indices(runs: "RunTable | SweepResult") -> dict[tuple, np.ndarray]:
    """Map each config (a tuple of :data:`GROUP_FIELDS` values) to the indices of its runs.

    Computed from the run table alone (no assumption about the run order). Keys are tuples of
    Python scalars (``(depth, width, lr, weight_var, bias_var, residual, norm)``; floats are the run table's
    float32 values as Python floats) in ascending order; each value is an ascending ``int64`` array of run indices
    (one per seed in a full grid).
    """
    if isinstance(runs, SweepResult):
        runs = runs.runs
    columns = [np.asarray(getattr(runs, f)).tolist() for f in GROUP_FIELDS]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*columns)):
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)}


def seed_stats(values: np.ndarray, axis: int = 0) -> dict[str, np.ndarray]:
    """Mean, std (population, ddof 0), min, max and count of the finite entries along ``axis``.

    NaN/Inf entries (absent layers, epochs after a run diverged, runs without a final value)
    are left out; where no entry is finite every statistic is NaN and the count is 0. Computed
    in float64 without warnings. Returns arrays of ``values``' shape without ``axis``.
    """
    a = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    has = n > 0
    safe_n = np.where(has, n, 1)
    mean = np.where(ok, a, 0.0).sum(axis=axis) / safe_n
    dev = np.where(ok, a - np.expand_dims(mean, axis), 0.0)
    std = np.sqrt((dev ** 2).sum(axis=axis) / safe_n)
    lo = np.where(ok, a, np.inf).min(axis=axis)
    hi = np.where(ok, a, -np.inf).max(axis=axis)
    nan = np.full(np.shape(mean), np.nan)
    return {"mean": np.where(has, mean, nan), "std": np.where(has, std, nan),
            "min": np.where(has, lo, nan), "max": np.where(has, hi, nan), "n": n}


def learns(final_test_accuracy: np.ndarray, diverged_epoch: np.ndarray,
           threshold: float = LEARN_THRESHOLD) -> np.ndarray:
    """[R] bool: the run did not diverge and its final test accuracy is >= ``threshold``.

    A diverged run never learns, whatever its accuracy before the divergence. The threshold is
    compared in the accuracy's own dtype, so a float32 accuracy of exactly ``float32(0.7)``
    reaches 0.7. A run without a final value (NaN) does not learn.
    """
    acc = np.asarray(final_test_accuracy)
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"learn_threshold: {threshold!r} is out of range; allowed: [0, 1]")
    thr = np.asarray(threshold, dtype=acc.dtype if acc.dtype.kind == "f" else np.float64)
    reached = np.isfinite(acc) & (np.nan_to_num(acc, nan=-1.0) >= thr)
    return reached & (np.asarray(diverged_epoch) < 0)


def final_values(result: SweepResult) -> dict[str, np.ndarray]:
    """Each run's final train/test loss and accuracy (:func:`final_metric` of every curve).

    Returns:
        curve name (``train_loss``, ...) -> [R] array of the history's dtype.
    """
    return {name: final_metric(result, name) for name in CURVES}


# --------------------------------------------------------------------------------------------
# Consistency of a result (checked by the summary and history writers and by the loaders)

SHARED_ARRAYS = ("hist_epochs", "hist_edges")
"""History arrays without a leading run axis."""

# Run-table field -> the SweepResult grid list its values must come from. (Seeds are checked
# against the summary's runs instead: a run table of other seeds is another sweep.)
_GRID_AXES = (("depth", "depths"), ("width", "widths"), ("lr", "lrs"),
              ("weight_var", "weight_vars"), ("bias_var", "bias_vars"),
              ("residual", "residuals"), ("norm", "norms"))
# Float axes: an empty grid list means every run uses the config's value.
_FLOAT_AXES = ("lr", "weight_var", "bias_var")
_INT_FIELDS = ("seed", "depth", "width", "diverged_epoch")


def expected_arrays(config: Config) -> tuple[str, ...]:
    """Names of the history arrays a sweep under ``config`` records."""
    names = CURVES + LAYER_STATS
    if config.test_gradients:
        names += TEST_LAYER_STATS
    if config.hist_every > 0:
        names += HIST_ARRAYS + SHARED_ARRAYS
    if "signal" in config.probes:  # per-epoch Jacobians only where there are histogram epochs
        names += tuple(n for n in SIGNAL_ARRAYS if n not in SIGNAL_JAC or config.hist_every > 0)
        names += (SIGNAL_JAC_EDGES,)
    return names


def axis_values(result: SweepResult, field: str) -> tuple:
    """The grid values of run-table ``field`` (``depth``, ``width``, ``lr``, ``weight_var``,
    ``bias_var``, ``residual``, ``norm``); an empty float or architecture axis means the
    config's single value (the architecture as the run table's text)."""
    axis = dict(_GRID_AXES)[field]
    values = tuple(getattr(result, axis))
    if not values and field in _FLOAT_AXES + ARCH_FIELDS:
        values = (getattr(result.config, field),)
    if field == "residual":
        values = tuple(residual_label(v) for v in values)
    return values


def check_in_grid(where: str, result: SweepResult) -> None:
    """``ValueError(f'{where} ...')`` unless every run's grid values are in the grid lists."""
    for field, axis in _GRID_AXES:
        values = np.asarray(getattr(result.runs, field))
        allowed = axis_values(result, field)
        # Matched in the run table's own dtype: float32(0.1) != 0.1 as float64.
        ok = np.isin(values, np.asarray(allowed, dtype=values.dtype))
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{where} run {bad} has {field} {values[bad].item()!r}, "
                             "which is not in the grid")


def _check_run_table(where: str, result: SweepResult) -> None:
    r = len(result.runs)
    for f in dataclasses.fields(RunTable):
        a = np.asarray(getattr(result.runs, f.name))
        if a.shape != (r,):
            raise ValueError(f"{where} run table field {f.name} has shape {a.shape}; "
                             f"expected ({r},)")
        want = "iu" if f.name in _INT_FIELDS else "f" if f.name in _FLOAT_AXES else "biufU"
        if a.dtype.kind not in want:
            raise ValueError(f"{where} run table field {f.name} has dtype {a.dtype}")
    n_grid = len(result.seeds) * math.prod(len(axis_values(result, f)) for f, _ in _GRID_AXES)
    if r != n_grid:
        raise ValueError(f"{where} has {r} runs; the grid has {n_grid}")
    check_in_grid(where, result)


def _expected_shapes(where: str, result: SweepResult) -> dict[str, tuple[int, ...]]:
    h, r, e, layers = result.history, len(result.runs), result.config.epochs, result.n_layers
    want: dict[str, tuple[int, ...]] = {n: (r, e) for n in CURVES}
    want.update({n: (r, e, layers) for n in LAYER_STATS + TEST_LAYER_STATS if n in h})
    if "hist_epochs" in h and "hist_edges" in h:
        n_h = int(np.shape(h["hist_epochs"])[0]) if np.ndim(h["hist_epochs"]) == 1 else -1
        n_k = int(np.shape(h["hist_edges"])[0]) - 1 if np.ndim(h["hist_edges"]) == 1 else -1
        if n_h < 0 or n_k < 1:
            raise ValueError(f"{where} hist_epochs/hist_edges must be 1-d (edges with >= 2 "
                             "values)")
        for n in ("grad_hist", "weight_hist"):
            want[n] = (r, n_h, layers, n_k)
        for n in ("grad_hist_stats", "weight_hist_stats"):
            want[n] = (r, n_h, layers, 4)
    want.update(_signal_shapes(where, result))
    return want


def _signal_shapes(where: str, result: SweepResult) -> dict[str, tuple[int, ...]]:
    """Expected shapes of the signal probe's arrays present in the history."""
    h, r, e, d = result.history, len(result.runs), result.config.epochs, max(result.depths)
    if not any(n in h for n in SIGNAL_ARRAYS + (SIGNAL_JAC_EDGES,)):
        return {}
    edges = h.get(SIGNAL_JAC_EDGES)
    if edges is None or np.ndim(edges) != 1 or np.shape(edges)[0] < 2:
        raise ValueError(f"{where} {SIGNAL_JAC_EDGES} must be 1-d with >= 2 values")
    k = int(np.shape(edges)[0]) - 1
    n_h = len(hist_epochs(result.config))
    want = {n: (r, e, d) for n in SIGNAL_LAYER_STATS}
    want.update({n + INIT_SUFFIX: (r, d) for n in SIGNAL_LAYER_STATS})
    want.update(signal_jac_mean_sq=(r, n_h), signal_jac_max=(r, n_h),
                signal_jac_log_hist=(r, n_h, k), signal_jac_mean_sq_init=(r,),
                signal_jac_max_init=(r,), signal_jac_log_hist_init=(r, k))
    if result.config.hist_every == 0:  # no histogram epochs: no per-epoch Jacobian arrays
        for n in SIGNAL_JAC:
            want.pop(n)
    return want


def check_result(where: str, result: SweepResult, *, need_hist: bool = True) -> None:
    """Raise ``ValueError(f'{where} ...')`` unless the history matches the run table and grid.

    ``need_hist=False`` accepts a result without the histogram arrays (the summary needs
    none; a chunked sweep streams them from the chunk files into history.npz).
    """
    _check_run_table(where, result)
    h = result.history
    missing = [n for n in expected_arrays(result.config) if n not in h
               and (need_hist or n not in HIST_ARRAYS)]
    if missing:
        raise ValueError(f"{where} lacks array(s) {', '.join(missing)}")
    for n, shape in _expected_shapes(where, result).items():
        got = np.shape(h[n]) if n in h else shape
        if got != shape:
            raise ValueError(f"{where} array {n} has shape {got}; expected {shape} "
                             f"(R={len(result.runs)} runs, E={result.config.epochs} epochs, "
                             f"L={result.n_layers} layers)")


def with_init(res: SweepResult, name: str) -> np.ndarray:
    """[R, E + 1, D]: a probe's value at initialisation (index 0) then after each epoch
    (``name`` and ``name + INIT_SUFFIX`` in ``res.history``, e.g. ``signal_saturation``)."""
    for key in (name, name + INIT_SUFFIX):
        if key not in res.history:
            raise ValueError(f"signal: history has no {key!r}; train with probes=('signal',) "
                             "(vgjax sweep --probe signal)")
    return np.concatenate([np.asarray(res.history[name + INIT_SUFFIX], np.float64)[:, None],
                           np.asarray(res.history[name], np.float64)], axis=1)
