"""The parent side of ``vgjax bench``: each case in a fresh process with the cases' own
compilation cache, the results collected into ``OUT/benchmark.json`` and its figure."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vgjax.bench.fastroad_cases import run_fastroad
from vgjax.bench.remedies_cases import run_remedies
from vgjax.bench.recurrent_cases import run_recurrent
from vgjax.bench.render import plot_benchmark
from vgjax.bench.wide_cases import CROSSOVER_WIDTHS, WIDE_CASES, WIDE_EPOCHS


def case_reproduce(out: Path, cache: Path, group: str | None = None) -> dict:
    """``vgjax reproduce`` end to end (30 seeds, 500 epochs; or ``--group group``), in a
    child process whose compilation cache ``cache`` starts empty (a user's first run):
    total_s, the wall time, and each trained experiment's seconds from its summary
    (``runs``: total_s = compile + train + writes, and compile_s; the figure-only studies
    are in the total only)."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), VGJAX_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "vgjax.cli", "reproduce", "--out", str(out)]
    cmd += ["--group", group] if group else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{proc.stderr[-3000:]}")
    total = time.perf_counter() - t0
    runs = {}
    for summary in sorted(Path(out).glob("*/summary.json")):
        timing = json.loads(summary.read_text()).get("timing", {})  # compile, train, writes
        runs[summary.parent.name] = {
            "total_s": round(sum(v for v in timing.values() if isinstance(v, (int, float))), 1),
            "compile_s": round(timing.get("compile_s", 0.0), 1)}
    return {"total_s": total, "cold_cache": True, "runs": runs}


def _reproduce_into(results: dict, env: dict, tmp: Path, log) -> None:
    log("reproduce: the whole reproduction (cold compilation cache) ...")
    results["reproduce"] = case_reproduce(tmp / "reproduce", tmp / "reproduce-cache")
    log(f"  {results['reproduce']['total_s'] / 60:.1f} min")


def _group_into(group: str):
    # `vgjax reproduce --group GROUP` end to end, into results["groups"][GROUP]
    def into(results: dict, env: dict, tmp: Path, log) -> None:
        log(f"{group} group: `vgjax reproduce --group {group}` (cold compilation cache) ...")
        r = case_reproduce(tmp / group, tmp / f"{group}-cache", group)
        results.setdefault("groups", {})[group] = r
        log(f"  {r['total_s'] / 60:.1f} min")
    return into


def _fastroad_into(results: dict, env: dict, tmp: Path, log) -> None:
    results["fastroad"] = run_fastroad(_run_child, env, log)


def _remedies_into(results: dict, env: dict, tmp: Path, log) -> None:
    results["remedies"] = run_remedies(_run_child, env, log)
def _recurrent_into(results: dict, env: dict, tmp: Path, log) -> None:
    results["recurrent"] = run_recurrent(_run_child, env, log)


# the cases `vgjax bench --only` can time again into an existing benchmark.json
UPDATABLE = {"reproduce": _reproduce_into, "fastroad": _fastroad_into,
             "remedies": _remedies_into, "recurrent": _recurrent_into,
             **{f"{g}-group": _group_into(g) for g in ("signal", "remedies", "recurrent")}}


def update_cases(out: Path, names, log=print) -> dict:
    """Time the cases ``names`` (of :data:`UPDATABLE`) again and put them into the existing
    ``OUT/benchmark.json``, every other case's figures left as they are; returns the whole.
    (Each case's ratios are measured within the case, so they stay comparable.)"""
    from vgjax.config import check_choice
    from vgjax.io.store import atomic_write_text
    for name in names:
        check_choice("only", name, tuple(UPDATABLE))
    path = Path(out) / "benchmark.json"
    if not path.is_file():
        raise ValueError(f"out: {str(path)!r} does not exist; allowed: a directory where "
                         "`vgjax bench` wrote benchmark.json")
    results = json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="vgjax-bench-") as tmp:
        cache = str(Path(tmp) / "jax-cache")
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, VGJAX_CACHE_DIR=cache)
        for name in names:
            UPDATABLE[name](results, env, Path(tmp), log)
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True))
    return results


def _run_child(args: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "vgjax.bench", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    from vgjax.io.summary import package_versions
    return {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "xla_flags": os.environ.get("XLA_FLAGS", ""),
                        "jax_num_cpu_devices": os.environ.get("JAX_NUM_CPU_DEVICES")},
            "versions": package_versions()}


def _w600_cases(results: dict, env: dict, tmp: Path, epochs: int, seeds: int, log) -> None:
    """ceiling, w600, cached_compile (after w600: it reads the cache w600 filled), train_only
    on one device, latency."""
    log("ceiling: large matmul ...")
    results["ceiling"] = _run_child(["ceiling"], env=env)
    log(f"  {results['ceiling']['gflop_per_s']:.1f} GFLOP/s")
    log(f"w600: 600 runs x {epochs} epochs, everything written ...")
    results["w600"] = w = _run_child(["w600", epochs, seeds, tmp / "w600"], env=env)
    w["ceiling_fraction"] = w["useful_gflop_per_s"] / results["ceiling"]["gflop_per_s"]
    log(f"  train {w['train_s']:.1f} s, compile {w['compile_s']:.1f} s, "
        f"total {w['total_s']:.1f} s, peak {w['peak_rss_mb']:.0f} MB")
    log("w600 programs compiled again in a second process (persistent cache) ...")
    # Side by side: tracing again (the programs' lowering only) vs loading it traced.
    results["w600_second_process_traced"] = t = _run_child(
        ["cached_compile", epochs, seeds, "traced"], env=env)
    log(f"  traced again: compile {t['compile_s']:.1f} s ({t['cache_hits']} cache hits)")
    results["w600_second_process"] = c = _run_child(["cached_compile", epochs, seeds], env=env)
    log(f"  compile {c['compile_s']:.1f} s ({c['cache_hits']} cache hits)")
    one = dict(env, JAX_NUM_CPU_DEVICES="1", XLA_FLAGS=" ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")))
    log("w600 training on one device, for comparison ...")
    results["w600_one_device"] = _run_child(["train_only", epochs, seeds], env=one)
    log(f"  train {results['w600_one_device']['train_s']:.1f} s")
    log("latency: one deep-relu run ...")
    results["latency"] = _run_child(["latency", epochs], env=env)


def _scaling_cases(env: dict, tmp: Path, scale, scale_epochs: int, big_epochs: int,
                   log) -> list[dict]:
    rows = []
    for n in scale:
        e = big_epochs if n >= 10000 else scale_epochs
        log(f"scale: {n} runs x {e} epochs ...")
        r = _run_child(["scale", n, e, tmp / f"scale{n}"], env=env)
        rows.append(r)
        log(f"  {r['ms_per_run_epoch']:.4f} ms/run-epoch, peak {r['peak_rss_mb']:.0f} MB")
    return rows


def _wide_cases(results: dict, env: dict, crossover_epochs: int, log) -> None:
    results["wide"] = []
    for name, depths, width, n_seeds, target in WIDE_CASES:
        log(f"wide: {name} ...")
        r = _run_child(["wide", ",".join(map(str, depths)), width, n_seeds, WIDE_EPOCHS],
                       env=env)
        r.update(name=name, target_fraction=target)
        results["wide"].append(r)
        log(f"  train {r['train_s']:.1f} s, compile {r['compile_s']:.1f} s, "
            f"{100 * r['ceiling_fraction']:.0f} % of the batched-matmul ceiling")
    results["crossover"] = []
    for width in CROSSOVER_WIDTHS:
        log(f"crossover: tanh-breadth shape at width {width} ...")
        results["crossover"].append(_run_child(["crossover", width, crossover_epochs],
                                               env=env))


def run_benchmark(out: Path, *, epochs: int = 500, seeds: int = 30,
                  scale: tuple[int, ...] = (1, 10, 100, 1000, 10000),
                  scale_epochs: int = 500, big_epochs: int = 50, wide: bool = True,
                  crossover_epochs: int = 25, reproduce: bool = False,
                  recurrent_steps: int = 0, log=print) -> dict:
    """Run every case and write ``OUT/benchmark.json`` (and return it). ``wide``: the wide
    grids and the engine crossover; ``reproduce``: also time ``vgjax reproduce``;
    ``recurrent_steps`` > 0: the recurrent grid against a PyTorch loop for that many steps."""
    from vgjax.io.store import atomic_write_text
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = _machine()
    with tempfile.TemporaryDirectory(prefix="vgjax-bench-") as tmp:
        tmp = Path(tmp)
        # The cases' own compilation cache: empty now, so w600 compiles cold and
        # cached_compile then finds exactly what w600 left there.
        cache = str(tmp / "jax-cache")
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, VGJAX_CACHE_DIR=cache)
        _w600_cases(results, env, tmp, epochs, seeds, log)
        results["scaling"] = _scaling_cases(env, tmp, scale, scale_epochs, big_epochs, log)
        if wide:
            _wide_cases(results, env, crossover_epochs, log)
            _fastroad_into(results, env, tmp, log)
            _remedies_into(results, env, tmp, log)
        log("watch: 8 seeds of a Flax MLP in one program vs seed after seed ...")
        results["watch"] = w = _run_child(["watch", 8, min(epochs, 5)], env=env)
        log(f"  {w['speedup_vs_step_loop']:.1f}x the jitted-step loop (target >= 3)")
        if recurrent_steps:
            results["recurrent"] = run_recurrent(_run_child, env, log, recurrent_steps)
        if reproduce:
            _reproduce_into(results, env, tmp, log)
    atomic_write_text(out / "benchmark.json", json.dumps(results, indent=2, sort_keys=True))
    plot_benchmark(results, out / "benchmark.png")
    return results
