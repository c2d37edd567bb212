"""Watch the gradients of your own Flax model: per-path statistics over seeds, in one program.

``vgjax.watch.train(model, data, optimizer=..., seeds=range(8))`` trains every seed of a
``flax.linen.Module`` (or an nnx module factory ``rngs -> module``) in one compiled program
with vgjax's training loop, and records each parameter path's gradient statistics per epoch
(mean |g|, L2 norm, the weights' L1, histograms) keyed by module path in input-to-output
order; with ``out=DIR`` it writes the same files as a sweep (summary.json, history.npz,
TensorBoard), which ``vgjax show DIR`` reads and :func:`load` loads.

Modules: ``models`` (Flax adapters, path names and order), ``engine`` (the loop's kernels),
``api`` (train, WatchResult), ``outputs`` (files, resume, load), ``show`` (the table),
``figures`` (per-path gradients over epochs, learning curves with seed bands).
Attributes are imported on first use, so ``vgjax show`` reads a summary without JAX.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"train": "api", "WatchResult": "api", "WatchRuns": "api", "load": "outputs",
            "write_outputs": "outputs", "plot_path_gradients": "figures",
            "plot_learning_curves": "figures"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vgjax.watch.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vgjax.watch' has no attribute {name!r}")
