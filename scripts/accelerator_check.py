"""Small sweeps on the accelerator beside the same sweeps on this machine's CPU, and timings.

On a machine with a GPU or TPU (JAX's default backend), this trains a few small grids with
every engine on the accelerator and with the vmap reference engine on the CPU backend of
the same process, and compares every history array (float32 matmuls at full precision for
the comparison: ``jax_default_matmul_precision="highest"``, since a GPU's default may use
TF32). Then, at JAX's default precision, it times the benchmark's wide grids and the
``tanh-breadth`` experiment (the longest part of ``vgjax reproduce``) per engine on the
accelerator. Writes ``OUT/accelerator_check.json`` and prints one line per check.

    python scripts/accelerator_check.py --out results
    python scripts/accelerator_check.py --quick --out /tmp/acc     # fewer epochs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from vgjax.bench.wide_cases import time_grid
from vgjax.config import Config, Grid
from vgjax.io.store import atomic_write_text
from vgjax.grid.plan import default_mesh
from vgjax.run.chunks import sweep

# float32 agreement like tests/test_wide.py: accuracies may flip a point, signed histogram
# sums cancel
TOL = {"accuracy": 2.5e-3, "hist_stats": 1e-3}
RTOL = 5e-5

# Well-conditioned nets only: in the tutorial's saturated tanh U(0,1) nets the gradients are
# rounding noise (1 - a^2 of a = 1 - 1e-8), different in every engine on any backend.
GRIDS = {  # name -> (config, grid, engines on the accelerator)
    "tanh-Glorot widths 5,16": (
        Config(activation="tanh", init="glorot_uniform", output_init="glorot_uniform",
               epochs=5, hist_every=5),
        dict(seeds=(0, 1, 2, 3), depths=(1, 3, 5), widths=(5, 16)),
        ("auto", "fast", "wide", "vmap")),
    "relu-He momentum width 128": (
        Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
               momentum=0.9, epochs=3, hist_every=3),
        dict(seeds=(0, 1), depths=(2, 8), widths=(128,)), ("auto", "vmap")),
    "tanh-Glorot Adam, test gradients": (
        Config(activation="tanh", init="glorot_uniform", output_init="glorot_uniform",
               optimizer="adam", lr=0.001, epochs=3, hist_every=3, test_gradients=True),
        dict(seeds=(0, 1), depths=(3,), widths=(32,)), ("auto",)),
}


def compare(ref, got) -> dict:
    """Largest relative difference per history array, and whether all are within TOL."""
    worst, ok = {}, True
    for k, a in ref.history.items():
        b = got.history[k]
        if a.shape != b.shape:
            worst[k], ok = f"shape {a.shape} vs {b.shape}", False
            continue
        if a.dtype.kind == "f":
            same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
            m = np.isfinite(a) & np.isfinite(b)
            rel = float(np.max(np.abs(b[m] - a[m]) / (np.abs(a[m]) + 1e-7), initial=0.0))
            tol = next((t for name, t in TOL.items() if name in k), RTOL)
            worst[k] = rel
            ok &= same_nan and bool(np.allclose(b[m], a[m], rtol=tol, atol=tol * 1e-2))
        elif "hist" in k and k != "hist_epochs":
            # values on a bucket edge may land one bucket over: the same totals, and at
            # most 0.1 % of the entries moved
            moved = int(np.abs(a.astype(np.int64) - b).sum())
            worst[k] = moved
            ok &= bool(moved <= 1e-3 * a.sum()) and bool(np.array_equal(a.sum(-1), b.sum(-1)))
        else:
            ok &= bool(np.array_equal(a, b))
    ok &= bool(np.array_equal(ref.runs.diverged_epoch, got.runs.diverged_epoch))
    return {"ok": ok, "worst": worst}


def agreement(cpu_mesh) -> list[dict]:
    rows = []
    with jax.default_matmul_precision("highest"):
        for name, (cfg, grid, engines) in GRIDS.items():
            ref = sweep(cfg, engine="vmap", mesh=cpu_mesh, **grid)
            for engine in engines:
                got = sweep(cfg, engine=engine, **grid)
                row = {"grid": name, "engine": engine, **compare(ref, got)}
                print(f"agree {name:36s} {engine:5s} {'ok' if row['ok'] else 'DIFFERS'}",
                      flush=True)
                rows.append(row)
    return rows


def timings(quick: bool, save) -> list[dict]:
    wide = Config(activation="tanh", init="glorot_uniform", output_init="glorot_uniform",
                  epochs=5 if quick else 20, hist_every=5 if quick else 10)
    breadth = Config(activation="tanh", init="uniform", output_init="uniform",
                     epochs=20 if quick else 100, hist_every=20 if quick else 25)
    cases = [("W-wide", wide, Grid(tuple(range(8)), (4, 8, 16, 32), (128,)), ("auto", "vmap")),
             ("w512-d16", wide, Grid(tuple(range(4)), (16,), (512,)), ("auto",)),
             ("tanh-breadth", breadth, Grid(tuple(range(30)), tuple(range(1, 11)),
                                            (5, 10, 15, 20, 25)), ("auto", "wide", "vmap"))]
    rows = []
    for name, cfg, grid, engines in cases:
        for engine in engines:
            row = {"case": name, "epochs": cfg.epochs, "requested": engine,
                   **time_grid(cfg, grid, engine)}
            print(f"time  {name:14s} {engine:5s} -> {row['engine']:10s} compile "
                  f"{row['compile_s']:6.1f} s  train {row['train_s']:7.2f} s", flush=True)
            rows.append(row)
            save(rows)  # each figure kept as it comes: a run cut short keeps the rest
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/accelerator", help="output directory")
    p.add_argument("--quick", action="store_true", help="fewer epochs in the timings")
    a = p.parse_args()
    dev = jax.devices()[0]
    print(f"jax {jax.__version__}, {dev.platform}: {dev.device_kind} x {jax.device_count()}",
          flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"jax": jax.__version__, "platform": dev.platform, "device": dev.device_kind,
              "devices": jax.device_count(),
              "agreement": agreement(default_mesh(jax.devices("cpu")))}

    def save(rows):
        report["timings"] = rows
        atomic_write_text(out / "accelerator_check.json", json.dumps(report, indent=1) + "\n")

    save([])
    timings(a.quick, save)
    print("all agree" if all(r["ok"] for r in report["agreement"]) else "SOME DIFFER")


if __name__ == "__main__":
    main()
