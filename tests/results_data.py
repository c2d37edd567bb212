"""Small hand-built results shared by the tests of the file modules (store, outdir, summary,
history): a 6-run SweepResult with absent layers, divergence and histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vgjax.config import Config
from vgjax.result import RunTable, SweepResult

NAN = np.nan


def strict_loads(text: str):
    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=bad)


def make_result(seeds=(0, 1, 2)) -> SweepResult:
    """6 runs: depths (1, 2) x seeds (0, 1, 2), width 3, lr 0.1, 3 epochs, L = 3.

    Depth-1 runs have NaN for layer index 1 (hidden layer 2 does not exist). Run 3 diverged
    in epoch 3 (final = epoch 2), run 4 in epoch 1 (no final value).
    """
    config = Config(epochs=3, hist_every=2)
    depths, widths, lrs = (1, 2), (3,), (0.1,)
    rows = [(s, d) for d in depths for s in seeds]
    r = len(rows)
    test_acc = np.array([
        [0.5, 0.6, 0.9],
        [0.5, 0.7, 0.8],
        [0.5, 0.5, 0.6],
        [0.5, 0.75, NAN],
        [NAN, NAN, NAN],
        [0.5, 0.6, 0.7],
    ], np.float32)[:r]
    train_acc = (test_acc + np.float32(0.05)).astype(np.float32)
    train_loss = np.linspace(1.0, 0.1, r * 3, dtype=np.float32).reshape(r, 3)
    train_loss[3, 2] = NAN
    train_loss[4:5, :] = NAN
    test_loss = (train_loss * 2).astype(np.float32)
    layer = np.arange(r * 3 * 3, dtype=np.float32).reshape(r, 3, 3)
    layer[:3, :, 1] = NAN  # depth-1 runs have no second hidden layer
    k = 4
    hist = np.arange(r * 1 * 3 * k, dtype=np.int32).reshape(r, 1, 3, k)
    stats = np.ones((r, 1, 3, 4), np.float32)
    history = {
        "train_loss": train_loss, "test_loss": test_loss,
        "train_accuracy": train_acc, "test_accuracy": test_acc,
        "grad_mean_abs": layer, "grad_norm": layer * 2, "weight_l1": layer + 1,
        "hist_epochs": np.array([2], np.int32),
        "hist_edges": np.linspace(-1, 1, k + 1, dtype=np.float32),
        "grad_hist": hist, "grad_hist_stats": stats,
        "weight_hist": hist + 1, "weight_hist_stats": stats * 2,
    }
    runs = RunTable(
        seed=np.array([s for s, _ in rows], np.int32),
        depth=np.array([d for _, d in rows], np.int32),
        width=np.full(r, 3, np.int32),
        lr=np.full(r, 0.1, np.float32),
        diverged_epoch=np.array([-1, -1, -1, 3, 1, -1], np.int32)[:r],
    )
    return SweepResult(config=config, seeds=tuple(seeds), depths=depths, widths=widths,
                       lrs=lrs, runs=runs, history=history)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())
