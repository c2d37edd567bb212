"""The ``random-walk-training`` experiment: do deep nets at Sussillo & Abbott's random-walk
initialisation train where Glorot/He-initialised ones do not?

Per activation (:data:`ACTIVATIONS`) two sweeps of seeds x depths :data:`DEPTHS` of width
:data:`WIDTH` on the circles: ``init="random_walk"`` (every layer, the output with the
linear gain) and the usual initialiser of that activation (:data:`BASELINE`, every layer),
with the training budget of :mod:`.architectures` (Adam, few epochs). Measured as there
(:func:`.architectures.depth_cases`): the share of seeds that learn and the first epoch's
per-layer gradient norm. Linear nets cannot separate the circles: they show the gradient
profile only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vgjax.config import Config, Grid
from vgjax.experiments.remedies.architectures import (EPOCHS, LR, OPTIMIZER, depth_cases,
                                                      train_sweep)
from vgjax.result import LEARN_THRESHOLD

ACTIVATIONS = ("linear", "relu", "tanh")
BASELINE = {"linear": "glorot_uniform", "relu": "he_uniform", "tanh": "glorot_uniform"}
DEPTHS = (50, 100, 200)
WIDTH = 16
SEEDS = tuple(range(4))


def sweep_config(activation: str, init: str, epochs: int = EPOCHS) -> Config:
    """One sweep's protocol: ``init`` for every layer, the study's optimizer and budget."""
    return replace(Config(), activation=activation, init=init, output_init=None,
                   optimizer=OPTIMIZER, lr=LR, epochs=epochs, hist_every=0)


def inits(activation: str) -> tuple[tuple[str, str], ...]:
    """(initialiser, label) pairs compared for ``activation``."""
    return (("random_walk", "random walk"),
            (BASELINE[activation], BASELINE[activation].replace("_", " ")))


def train_all(out: Path, *, seeds=SEEDS, depths=DEPTHS, width: int = WIDTH,
              epochs: int = EPOCHS, activations=ACTIVATIONS, overwrite: bool = False,
              chunk_size: int | None = None, tensorboard: bool = False,
              logdir: Path | None = None, progress=None) -> dict:
    """Train every (activation, initialiser) sweep into ``out/sweeps/`` and return the
    study's data in :func:`.architectures.train_all`'s layout (an activation is a
    "family", an initialiser an "architecture"), so the same figures and table draw it."""
    grid = Grid(tuple(seeds), tuple(depths), (width,))
    sweeps = []
    for act in activations:
        for init, label in inits(act):
            name = f"{act}-{init.replace('_', '-')}"
            res, seconds = train_sweep(Path(out), name, sweep_config(act, init, epochs), grid,
                                       overwrite=overwrite, chunk_size=chunk_size,
                                       tensorboard=tensorboard, logdir=logdir,
                                       progress=progress)
            sweeps.append({"family": act, "family_label": act, "architecture": init,
                           "label": label, "cases": depth_cases(res, depths),
                           "seconds": seconds})
    return {"setting": "initialiser",
            "depths": list(depths), "width": width, "seeds": len(seeds), "epochs": epochs,
            "optimizer": OPTIMIZER, "lr": LR, "learn_threshold": LEARN_THRESHOLD,
            "families": [{"key": a, "label": a, "activation": a, "init": "random_walk",
                          "output_init": "random_walk"} for a in activations],
            "sweeps": sweeps}
