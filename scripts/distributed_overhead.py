"""W600 on each path beyond one machine, beside the single process: time and overhead per chunk.

Runs the W600 study (tanh U(0,1) and ReLU He, depths 1-10 x 30 seeds, width 5) as
``vgjax sweep`` commands, every path with the same total device count and chunk size:

  single   one process with D CPU devices;
  jax      multi-process JAX: D processes of 1 device each (--coordinator on 127.0.0.1);
  ray      a local Ray instance with D CPUs, one chunk per task (skipped without Ray);
  shards   D array-job shards (--shard I/D) at once, 1 device each, then ``vgjax merge``.

Each path's wall time is measured end to end (process start, JAX start, compiling or
loading from one shared, pre-warmed compilation cache, training, writing), and checked to
give the single process's history. Overhead per chunk = (path - single) / chunks. Writes
``OUT/distributed.json``. On one machine every path shares the same cores, so the point is
overhead, not speed-up.

    python scripts/distributed_overhead.py --out results      # W600: 500 epochs
    python scripts/distributed_overhead.py --epochs 20 --seeds 4 --out /tmp/d   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STUDIES = (("tanh", "uniform", "uniform"), ("relu", "he_uniform", "glorot_uniform"))


def _cmd(act: str, init: str, out_init: str, a, out: Path) -> list[str]:
    return [sys.executable, "-m", "vgjax.cli", "sweep", "--activation", act, "--init", init,
            "--output-init", out_init, "--depths", "1-10", "--widths", "5", "--seeds",
            f"0-{a.seeds - 1}", "--epochs", str(a.epochs), "--hist-every", "10",
            "--chunk-size", str(a.chunk_size), "--no-tensorboard", "--out", str(out)]


def _env(devices: int, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), VGJAX_CACHE_DIR=str(cache),
               JAX_COMPILATION_CACHE_DIR=str(cache), RAY_USAGE_STATS_ENABLED="0")
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _together(cmds: list[list[str]], env: dict) -> None:
    """Start every command at once; raise if any fails."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    errors = [p.communicate()[1] for p in procs]
    for p, err in zip(procs, errors):
        if p.returncode:
            raise SystemExit(f"failed ({p.returncode}): {' '.join(p.args[3:])}\n{err[-2000:]}")


def run_path(path: str, a, root: Path, cache: Path) -> float:
    """Wall seconds of W600 on ``path`` (both studies, one after the other)."""
    d = a.devices
    t0 = time.perf_counter()
    for study in STUDIES:
        out = root / path / study[0]
        base = _cmd(*study, a, out)
        if path == "single":
            _together([base], _env(d, cache))
        elif path == "jax":
            coord = f"127.0.0.1:{_port()}"
            _together([base + ["--coordinator", coord, "--num-processes", str(d),
                               "--process-id", str(i)] for i in range(d)], _env(1, cache))
        elif path == "ray":
            _together([base + ["--ray"]], _env(d, cache))
        else:
            _together([base + ["--shard", f"{i}/{d}"] for i in range(d)], _env(1, cache))
            _together([[sys.executable, "-m", "vgjax.cli", "merge", str(out),
                        "--no-tensorboard"]], _env(1, cache))
    return time.perf_counter() - t0


def _same_history(a: Path, b: Path) -> bool:
    with np.load(a / "history.npz") as x, np.load(b / "history.npz") as y:
        return sorted(x.files) == sorted(y.files) and all(
            np.array_equal(x[k], y[k], equal_nan=True) for k in x.files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--devices", type=int, default=2, help="total devices / processes")
    p.add_argument("--chunk-size", type=int, default=60, help="runs per chunk (default 60)")
    p.add_argument("--paths", default="single,jax,ray,shards")
    p.add_argument("--out", default="results")
    a = p.parse_args()
    paths = a.paths.split(",")
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray is not installed: skipping the ray path (pip install 'vgjax[ray]')")
        paths = [q for q in paths if q != "ray"]
    n_chunks = len(STUDIES) * -(-a.seeds * 10 // a.chunk_size)
    with tempfile.TemporaryDirectory(prefix="vgjax-dist-") as tmp:
        root, cache = Path(tmp), Path(tmp) / "cache"
        # Warm the shared compilation cache for every program first (one chunk per study
        # has the same shape as all of them): the paths are then compared on what they
        # add, not on who compiled first.
        warm = argparse.Namespace(**{**vars(a), "seeds": -(-a.chunk_size // 10)})
        for path in dict.fromkeys(["single", *paths]):
            run_path(path, warm, root / "warm", cache)
        seconds = {}
        for path in dict.fromkeys(["single", *paths]):
            print(f"{path} ...", flush=True)
            seconds[path] = run_path(path, a, root, cache)
            print(f"  {seconds[path]:.1f} s", flush=True)
        same = {q: all(_same_history(root / "single" / s[0], root / q / s[0])
                       for s in STUDIES) for q in seconds if q != "single"}
    single = seconds["single"]
    result = {
        "what": f"W600 (2 studies x {a.seeds * 10} runs, width 5, {a.epochs} epochs) per path, "
                "same total devices and chunk size, no TensorBoard",
        "epochs": a.epochs, "seeds": a.seeds, "devices": a.devices,
        "chunk_size": a.chunk_size, "chunks": n_chunks, "cpus": os.cpu_count(),
        "seconds": seconds,
        "ratio_to_single": {q: s / single for q, s in seconds.items()},
        "overhead_per_chunk_s": {q: (s - single) / n_chunks for q, s in seconds.items()
                                 if q != "single"},
        "history_equal_to_single": same,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from vgjax.io.store import atomic_write_text
    atomic_write_text(out / "distributed.json", json.dumps(result, indent=1, sort_keys=True))
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
