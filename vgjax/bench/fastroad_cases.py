"""The off-road cases (``fastroad``): grids off the SGD / tanh road, each timed beside the
same grid on the road, back to back in one process (so a shared machine's load falls on
both alike; each side is the best of ``repeats`` trainings of its compiled program).

Pairs (:data:`FASTROAD_PAIRS`: name -> (what changes, target ratio off/road)):

* ``adam``: W-wide (tanh Glorot, depths 4/8/16/32 x width 128 x 8 seeds) with Keras Adam
  (lr 0.001) beside W-wide with SGD;
* ``gelu`` and ``swish``: W-wide with ``activation="gelu"`` and with the callable
  ``jax.nn.swish`` beside tanh;
* ``probe``: W-wide with the signal probe beside W-wide without it;
* ``w600_adam``: W600's two grids (tanh U(0,1) and ReLU He x depths 1-10 x 30 seeds,
  width 5) with Adam beside SGD.
"""

from __future__ import annotations

import time
from dataclasses import replace

# name -> target: the off-road grid trains in at most this many times the road's time
FASTROAD_PAIRS = {"adam": 1.5, "gelu": 1.5, "swish": 1.5, "probe": 1.5, "w600_adam": 1.5}
FASTROAD_EPOCHS = 20
W600_EPOCHS = 100


def _grids(pair: str, epochs: int):
    """[(road config, off config, grid), ...] of one pair."""
    import jax
    from vgjax.bench.cases import W600_HIST_EVERY
    from vgjax.bench.wide_cases import WIDE_CASES
    from vgjax.config import Config, Grid
    if pair == "w600_adam":
        grid = Grid(tuple(range(30)), tuple(range(1, 11)), (5,))
        cfgs = (Config(activation="tanh", init="uniform", output_init="uniform", epochs=epochs,
                       hist_every=W600_HIST_EVERY),
                Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                       epochs=epochs, hist_every=W600_HIST_EVERY))
        return [(c, replace(c, optimizer="adam", lr=0.001), grid) for c in cfgs]
    _, depths, width, seeds, _ = WIDE_CASES[0]
    grid = Grid(tuple(range(seeds)), tuple(depths), (width,))
    road = Config(activation="tanh", init="glorot_uniform", epochs=epochs)
    off = {"adam": dict(optimizer="adam", lr=0.001), "gelu": dict(activation="gelu"),
           "swish": dict(activation=jax.nn.swish), "probe": dict(probes=("signal",))}[pair]
    return [(road, replace(road, **off), grid)]


def _train_s(config, grid, repeats: int) -> dict:
    """Compile ``grid`` once, then the best of ``repeats`` trainings (seconds) and its plan."""
    import jax
    from vgjax.grid.plan import make_plan
    from vgjax.run.chunks import compile_plan, device_data, run_chunk
    plan = make_plan(config, grid)
    compiled, compile_s = compile_plan(plan)
    data = device_data(plan)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in range(plan.n_chunks):
            jax.block_until_ready(run_chunk(plan, compiled, data, c))
        best = min(best, time.perf_counter() - t0)
    return {"engine": plan.engine, "devices": int(plan.mesh.devices.size),
            "compile_s": compile_s, "train_s": best}


def case_fastroad(pair: str, epochs: int, repeats: int = 2) -> dict:
    """One pair: road and off-road training seconds (summed over the pair's grids), each
    grid's engine and device count, the ratio off/road and its target."""
    import jax
    if pair not in FASTROAD_PAIRS:
        raise ValueError(f"pair: {pair!r} is not known; allowed: {', '.join(FASTROAD_PAIRS)}")
    out = {"pair": pair, "epochs": epochs, "repeats": repeats, "devices": len(jax.devices()),
           "road": [], "off": []}
    for road, off, grid in _grids(pair, epochs):
        out["road"].append(_train_s(road, grid, repeats))
        out["off"].append(_train_s(off, grid, repeats))
    out["road_train_s"] = sum(r["train_s"] for r in out["road"])
    out["off_train_s"] = sum(r["train_s"] for r in out["off"])
    out["ratio"] = out["off_train_s"] / out["road_train_s"]
    out["target_ratio"] = FASTROAD_PAIRS[pair]
    return out


def run_fastroad(run_child, env: dict, log, epochs: int = FASTROAD_EPOCHS) -> list[dict]:
    """Every pair, each in its own child process (``python -m vgjax.bench fastroad ...``)."""
    rows = []
    for pair, target in FASTROAD_PAIRS.items():
        log(f"fastroad: {pair} beside the road ...")
        e = W600_EPOCHS if pair == "w600_adam" else epochs
        r = run_child(["fastroad", pair, e], env=env)
        rows.append(r)
        log(f"  off {r['off_train_s']:.1f} s vs road {r['road_train_s']:.1f} s: "
            f"{r['ratio']:.2f}x (target <= {target}x)")
    return rows
