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

Values outside ``[hist_edges[0], hist_edges[-1]]`` are counted in the outermost buckets, so
the counts of one histogram add up to (number of real kernel entries) x (steps counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vgjax.config import Config

CURVES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
LAYER_STATS = ("grad_mean_abs", "grad_norm", "weight_l1")
TEST_LAYER_STATS = ("test_grad_mean_abs", "test_grad_norm")
HIST_ARRAYS = ("grad_hist", "grad_hist_stats", "weight_hist", "weight_hist_stats")


@dataclass(frozen=True)
class RunTable:
    """One row per run, in run-axis order. Every field is a NumPy array of shape [R].

    ``lr`` is each run's learning rate; ``diverged_epoch`` is the 1-based epoch in which a
    run's loss or parameters first became NaN/Inf, or -1 if it never did; ``weight_var`` and
    ``bias_var`` are each run's sigma_w^2 and sigma_b^2 (default 1 and 0 when not given).
    """

    seed: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    lr: np.ndarray
    diverged_epoch: np.ndarray
    weight_var: np.ndarray | None = None
    bias_var: np.ndarray | None = None

    def __post_init__(self):
        n = np.shape(self.seed)[0]
        for name, default in (("weight_var", 1.0), ("bias_var", 0.0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, default, np.float32))

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
