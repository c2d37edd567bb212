"""The ``architectures`` experiment: which architectures train deep nets, and the per-layer
gradient profile each gives, against depth.

Seven architectures (:data:`ARCHITECTURES`: the plain MLP, residual connections with alpha =
1, 1/sqrt(depth) and ReZero, LayerNorm, BatchNorm, BatchNorm + residual) x two families of
nets (:data:`FAMILIES`: the tutorial's failing tanh nets with U(0, 1) kernels, and ReLU nets
with He kernels), on the circles, depths :data:`DEPTHS`. Each (family, architecture) is its
own sweep of seeds x depths (its architecture a :class:`~vgjax.config.Config` field), one
compiled program, written under ``OUT/architectures/sweeps/<family>-<architecture>/``, on
the engine ``engine="auto"`` picks (the wide one for residual and normalised nets).

Measured per (family, architecture, depth): the share of seeds that learn (final test
accuracy >= :data:`vgjax.result.LEARN_THRESHOLD`, not diverged) and the first epoch's
per-layer gradient norm ‖∂L/∂W_l‖ (the epoch's mean over its steps: the profile near
initialisation), as the seeds' median.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vgjax.config import Config, Grid
from vgjax.result import LEARN_THRESHOLD, SweepResult


class Architecture(NamedTuple):
    """key (file names), label (figures, tables), and its Config fields."""

    key: str
    label: str
    residual: str | float
    norm: str


class Family(NamedTuple):
    """key (file names), label, and the protocol its sweeps start from."""

    key: str
    label: str
    config: Config


ARCHITECTURES = (
    Architecture("plain", "plain", "none", "none"),
    Architecture("res1", "residual α = 1", 1.0, "none"),
    Architecture("res-sqrt", "residual α = 1/√L", "inv_sqrt_depth", "none"),
    Architecture("rezero", "ReZero", "rezero", "none"),
    Architecture("layernorm", "LayerNorm", "none", "layer"),
    Architecture("batchnorm", "BatchNorm", "none", "batch"),
    Architecture("batchnorm-res1", "BatchNorm + residual α = 1", 1.0, "batch"),
)
FAMILIES = (
    Family("tanh-uniform", "tanh, U(0, 1)",
           Config(activation="tanh", init="uniform", output_init="uniform")),
    Family("relu-he", "ReLU, He",
           Config(activation="relu", init="he_uniform", output_init="glorot_uniform")),
)
DEPTHS = (3, 10, 30, 100)
# Width 8 rather than the tutorial's 5: the plain sweeps then take the wide engine on a CPU
# (the fast engine's per-layer branches compile slowly at depth 100), and a LayerNorm over 5
# units is a coarse estimate.
WIDTH = 8
SEEDS = tuple(range(6))
# The training budget: the whole study (14 sweeps) in minutes on a 2-core CPU, so Adam (lr
# 0.01) for 20 epochs instead of the tutorial's SGD for 500.
EPOCHS = 20
OPTIMIZER, LR = "adam", 0.01
SWEEPS_DIR = "sweeps"


def sweep_config(family: Family, arch: Architecture, epochs: int = EPOCHS) -> Config:
    """The protocol of one (family, architecture) sweep: the family's activation and
    initialisers, the architecture, the study's optimizer and budget, no histograms."""
    return replace(family.config, residual=arch.residual, norm=arch.norm,
                   optimizer=OPTIMIZER, lr=LR, epochs=epochs, hist_every=0)


def sweep_name(family: Family, arch: Architecture) -> str:
    """The sweep's directory (under ``sweeps/``) and TensorBoard prefix."""
    return f"{family.key}-{arch.key}"


def depth_cases(result: SweepResult, depths=DEPTHS) -> list[dict]:
    """Per depth of one sweep: seeds, share that learns, mean final test accuracy, diverged
    runs, and the first epoch's gradient norm per layer (hidden layers 1..depth, then the
    output): the median over the seeds whose value is finite (an exact 0, a gradient that
    underflowed, counts; None where no seed's is finite), with log10 of layer 1's over the
    output layer's (None unless both are > 0; ``vanished`` when layer 1's is 0). JSON-able."""
    runs = result.runs
    acc = np.asarray(result.history["test_accuracy"], np.float64)[:, -1]
    grad = np.asarray(result.history["grad_norm"], np.float64)[:, 0]         # [R, L]
    out = []
    for depth in depths:
        sel = runs.depth == depth
        diverged = runs.diverged_epoch[sel] > 0
        learnt = (~diverged) & (np.nan_to_num(acc[sel], nan=0.0) >= LEARN_THRESHOLD)
        layers = np.concatenate([grad[sel][:, :depth], grad[sel][:, -1:]], axis=1)
        finite = np.isfinite(layers)
        profile = [float(np.median(col[ok])) if ok.any() else None
                   for col, ok in zip(layers.T, finite.T)]
        first, last = profile[0], profile[-1]
        both = first is not None and last is not None and first > 0 and last > 0
        out.append({
            "depth": int(depth), "seeds": int(sel.sum()),
            "share_learn": float(learnt.mean()),
            "test_accuracy": float(np.nanmean(acc[sel])) if np.isfinite(acc[sel]).any()
            else None,
            "diverged": int(diverged.sum()),
            "grad_profile": profile,
            "log10_first_over_output": float(np.log10(first / last)) if both else None,
            "vanished": first == 0.0})
    return out


def train_sweep(out: Path, name: str, config: Config, grid: Grid, *, overwrite: bool = False,
                chunk_size: int | None = None, tensorboard: bool = False,
                logdir: Path | None = None, progress=None) -> tuple[SweepResult, float]:
    """One sweep of a study into ``out/sweeps/NAME/`` (resumable; TensorBoard logs under
    ``logdir/NAME``): its result and the seconds it took."""
    from vgjax.run.pipeline import run_sweep
    t0 = time.perf_counter()
    res = run_sweep(config, grid, Path(out) / SWEEPS_DIR / name, overwrite=overwrite,
                    chunk_size=chunk_size, tensorboard=tensorboard, prefix=name,
                    logdir=None if logdir is None else Path(logdir) / name, progress=progress)
    return res.result, time.perf_counter() - t0


def train_all(out: Path, *, seeds=SEEDS, depths=DEPTHS, width: int = WIDTH,
              epochs: int = EPOCHS, families=FAMILIES, architectures=ARCHITECTURES,
              overwrite: bool = False, chunk_size: int | None = None,
              tensorboard: bool = False, logdir: Path | None = None,
              progress=None) -> dict:
    """Train every (family, architecture) sweep into ``out/sweeps/`` (resumable) and return
    the study's data: the protocol, and per sweep its depth cases and seconds. JSON-able."""
    grid = Grid(tuple(seeds), tuple(depths), (width,))
    sweeps = []
    for family in families:
        for arch in architectures:
            name = sweep_name(family, arch)
            res, seconds = train_sweep(Path(out), name, sweep_config(family, arch, epochs),
                                       grid, overwrite=overwrite, chunk_size=chunk_size,
                                       tensorboard=tensorboard, logdir=logdir,
                                       progress=progress)
            sweeps.append({"family": family.key, "family_label": family.label,
                           "architecture": arch.key, "label": arch.label,
                           "residual": arch.residual, "norm": arch.norm,
                           "cases": depth_cases(res, depths), "seconds": seconds})
    return {"depths": list(depths), "width": width, "seeds": len(seeds), "epochs": epochs,
            "optimizer": OPTIMIZER, "lr": LR, "learn_threshold": LEARN_THRESHOLD,
            "families": [{"key": f.key, "label": f.label, "activation": f.config.activation,
                          "init": f.config.init, "output_init": f.config.resolved_output_init}
                         for f in families],
            "sweeps": sweeps}
