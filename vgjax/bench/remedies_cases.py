"""The remedies case (``remedies``): a W-wide-like grid with the architecture as a per-run
axis (plain, residual alpha = 1, 1/sqrt(depth) and ReZero, each with no normalisation,
LayerNorm and BatchNorm: 12 architectures, among them the ``architectures`` study's seven)
beside a grid of as many plain MLPs, both on the wide engine, back to back in one process
(so a shared machine's load falls on both alike; each side is the best of ``repeats``
trainings of its compiled program). Target: the architecture grid trains in at most
:data:`REMEDIES_TARGET` times the plain grid's time.
"""

from __future__ import annotations

from vgjax.bench.fastroad_cases import train_seconds

REMEDIES_TARGET = 1.5
REMEDIES_EPOCHS = 10
RESIDUALS = ("none", 1.0, "inv_sqrt_depth", "rezero")
NORMS = ("none", "layer", "batch")


def _grids(seeds: int):
    """(config, plain grid, architecture grid): W-wide's depths and width (tanh, Glorot,
    Keras SGD), ``seeds`` seeds per architecture, as many runs in both grids."""
    from vgjax.bench.wide_cases import WIDE_CASES
    from vgjax.config import Config, Grid
    _, depths, width, _, _ = WIDE_CASES[0]
    n_arch = len(RESIDUALS) * len(NORMS)
    plain = Grid(tuple(range(seeds * n_arch)), tuple(depths), (width,))
    arch = Grid(tuple(range(seeds)), tuple(depths), (width,), residuals=RESIDUALS, norms=NORMS)
    return Config(activation="tanh", init="glorot_uniform"), plain, arch


def case_remedies(epochs: int, seeds: int = 2, repeats: int = 2) -> dict:
    """The plain grid and the architecture grid timed back to back: training seconds of
    each, their ratio (architectures / plain) and its target."""
    from dataclasses import replace
    config, plain, arch = _grids(seeds)
    config = replace(config, epochs=epochs)
    out = {"epochs": epochs, "seeds": seeds, "repeats": repeats,
           "residuals": [str(r) for r in RESIDUALS], "norms": list(NORMS),
           "plain": train_seconds(config, plain, repeats),
           "architectures": train_seconds(config, arch, repeats)}
    out["ratio"] = out["architectures"]["train_s"] / out["plain"]["train_s"]
    out["target_ratio"] = REMEDIES_TARGET
    return out


def run_remedies(run_child, env: dict, log, epochs: int = REMEDIES_EPOCHS) -> dict:
    """The case in its own child process (``python -m vgjax.bench remedies EPOCHS``)."""
    log("remedies: 12 architectures as a grid axis beside as many plain MLPs ...")
    r = run_child(["remedies", epochs], env=env)
    log(f"  architectures {r['architectures']['train_s']:.1f} s vs plain "
        f"{r['plain']['train_s']:.1f} s: {r['ratio']:.2f}x (target <= {r['target_ratio']}x)")
    return r


def render_remedies(r: dict) -> list[str]:
    """Markdown lines for the case."""
    ok = "met" if r["ratio"] <= r["target_ratio"] else "missed"
    a, p = r["architectures"], r["plain"]
    return [f"Residual / normalised nets as a grid axis ({len(r['residuals'])} residual x "
            f"{len(r['norms'])} norm settings, {a['runs']} runs in {a['programs']} program(s), "
            f"{r['epochs']} epochs, {a['engine']} x{a['devices']}): {a['train_s']:.1f} s vs "
            f"{p['train_s']:.1f} s for {p['runs']} plain MLPs: {r['ratio']:.2f}x "
            f"(<= {r['target_ratio']}x: {ok})"]
