"""FLOP counts of a grid: the real layers, and what the padded grid program executes."""

from __future__ import annotations


def useful_flops(depths, width: int, epochs: int, n_train: int = 500, n_test: int = 500) -> float:
    """FLOPs of the real (unpadded) layers: 6 per weight per training example (forward,
    input gradient, weight gradient) and 2 per weight per evaluated example, per epoch."""
    total = 0.0
    for d in depths:
        weights = 2 * width + (d - 1) * width * width + width
        total += (6 * n_train + 2 * (n_train + n_test)) * weights * epochs
    return total


def padded_flops(depths, width: int, epochs: int, n_train: int = 500, n_test: int = 500) -> float:
    """FLOPs the grid program executes when every run computes all max(depths) layers at
    the padded width (what a chunk holding every depth does; XLA's cost analysis counts a
    loop body once, so it cannot give this)."""
    d, p = max(depths), max(width, 2)
    weights = 2 * p + (d - 1) * p * p + p
    return (6 * n_train + 2 * (n_train + n_test)) * weights * epochs * len(depths)
