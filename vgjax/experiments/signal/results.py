"""Derived numbers of the signal probe's history arrays (host-side NumPy, no jax).

The ``saturation`` and ``dead-relu`` experiments' tables and figures both read these, so a
share, a "fully dead layer" and an initial/final value are computed in one place. Inputs are
:class:`vgjax.result.SweepResult` objects trained with ``Config.probes=("signal",)``; shapes
follow :mod:`vgjax.result` (R runs, E epochs, D hidden layers). Final values are
:func:`vgjax.result.final_metric`'s (the last epoch before a run diverged), "learns" is
:func:`vgjax.result.learns`', seed statistics are :func:`vgjax.result.seed_stats`'.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vgjax.result import INIT_SUFFIX, SweepResult, final_metric, learns, seed_stats


def _need(res: SweepResult, name: str) -> np.ndarray:
    if name not in res.history:
        raise ValueError(f"signal: history has no {name!r}; train with probes=('signal',) "
                         "(vgjax sweep --probe signal)")
    return np.asarray(res.history[name], np.float64)


def init_and_final(res: SweepResult, name: str) -> tuple[np.ndarray, np.ndarray]:
    """([R, D] at initialisation, [R, D] final) of ``signal_q``/``signal_saturation``/
    ``signal_dead`` (NaN for layers a run lacks, or without a final value)."""
    _need(res, name)
    return _need(res, name + INIT_SUFFIX), final_metric(res, name).astype(np.float64)


def fully_dead_layer(dead: np.ndarray) -> np.ndarray:
    """[R] 1-based index of each run's first hidden layer whose units are all dead (dead
    share 1: the layer outputs 0 for every training point, so the net's output is constant
    and no gradient reaches the layers below), or 0 if none. ``dead``: [R, D]."""
    full = np.nan_to_num(np.asarray(dead, np.float64), nan=0.0) >= 1.0
    return np.where(full.any(axis=1), np.argmax(full, axis=1) + 1, 0)


def _stats(values: np.ndarray) -> dict[str, Any]:
    st = seed_stats(values)
    return {k: st[k].tolist() for k in ("mean", "std")}


def saturation_tables(results: Mapping[str, SweepResult]) -> dict[str, Any]:
    """The ``saturation`` numbers: per config (label) and hidden layer, seed mean ± std of
    the saturated share at initialisation, after epoch 1 and at the end."""
    columns = []
    n_hidden = 0
    for label, res in results.items():
        init, final = init_and_final(res, "signal_saturation")
        first = _need(res, "signal_saturation")[:, 0]
        n_hidden = max(n_hidden, init.shape[1])
        columns.append({"label": label, "n_seeds": len(res.runs), "init": _stats(init),
                        "epoch1": _stats(first), "final": _stats(final)})
    return {"layers": [f"hidden {i + 1}" for i in range(n_hidden)], "columns": columns}


def dead_tables(res: SweepResult) -> dict[str, Any]:
    """The ``dead-relu`` numbers, one row per depth: seeds, share that learns, the dead
    share (mean over the run's layers, then mean ± std over seeds) at init and at the end,
    the share of runs with a fully dead layer at init and at the end, and the share that
    learns among the runs without / with a fully dead layer at the end."""
    d_init, d_final = init_and_final(res, "signal_dead")
    learned = learns(final_metric(res, "test_accuracy"), res.runs.diverged_epoch)
    dead_at_init = fully_dead_layer(d_init) > 0
    dead_at_end = fully_dead_layer(d_final) > 0
    rows = []
    for depth in sorted(set(np.asarray(res.runs.depth).tolist())):
        sel = np.flatnonzero(np.asarray(res.runs.depth) == depth)
        layer_mean = lambda a: seed_stats(a[sel], axis=1)["mean"]  # noqa: E731 - [n] per run
        ok, bad = sel[~dead_at_end[sel]], sel[dead_at_end[sel]]
        rows.append({
            "depth": int(depth), "n_seeds": int(sel.size),
            "share_learn": float(learned[sel].mean()),
            "dead_init": _stats(layer_mean(d_init)), "dead_final": _stats(layer_mean(d_final)),
            "share_fully_dead_init": float(dead_at_init[sel].mean()),
            "share_fully_dead_final": float(dead_at_end[sel].mean()),
            "learn_without_dead_layer": float(learned[ok].mean()) if ok.size else None,
            "learn_with_dead_layer": float(learned[bad].mean()) if bad.size else None,
        })
    return {"rows": rows}
