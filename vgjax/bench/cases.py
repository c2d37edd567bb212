"""The narrow-net cases, each run in its own process by ``python -m vgjax.bench CASE ...``:
w600, train_only, latency, scale, cached_compile, ceiling. Each returns a JSON-able dict."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from vgjax.bench.flops import padded_flops, useful_flops


# Histograms every 10 epochs: the statistics a study records by default.
W600_HIST_EVERY = 10


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _compile_counter():
    import jax
    events = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda e, s, **kw: events.append(s) if e == "/jax/core/compile/backend_compile_duration"
        else None)
    return events


def case_w600(epochs: int, seeds: int, out: Path) -> dict:
    """Both W600 sweeps through the full pipeline, then the figures."""
    from vgjax import figures
    from vgjax.config import Config, Grid
    from vgjax.run.pipeline import run_sweep
    from vgjax.run.chunks import compile_plan
    from vgjax.grid.plan import make_plan

    compiles = _compile_counter()
    grid = Grid(tuple(range(seeds)), tuple(range(1, 11)), (5,))
    cfgs = {"tanh_uniform": Config(activation="tanh", init="uniform", output_init="uniform",
                                   epochs=epochs, hist_every=W600_HIST_EVERY),
            "relu_he": Config(activation="relu", init="he_uniform",
                              output_init="glorot_uniform", epochs=epochs,
                              hist_every=W600_HIST_EVERY)}
    t = {"compile_s": 0.0, "train_s": 0.0, "tensorboard_s": 0.0, "history_summary_s": 0.0,
         "figures_s": 0.0}
    start = time.perf_counter()
    for name, cfg in cfgs.items():
        res = run_sweep(cfg, grid, out / name, prefix=name, overwrite=True)
        timing = res.summary["timing"]
        t["compile_s"] += timing["compile_s"]
        t["train_s"] += timing["train_s"]
        t["tensorboard_s"] += timing["tensorboard_s"]
        t["history_summary_s"] += timing["write_s"]
        f0 = time.perf_counter()
        figures.plot_learning_curves(res.result, out / name / "curves.png", title=name)
        figures.plot_depth_study(res.result, out / name / "depth.png", title=name)
        figures.plot_layer_gradients({name: res.result}, out / name / "grads.png", title=name)
        t["figures_s"] += time.perf_counter() - f0
    total = time.perf_counter() - start
    # The same shape again (other seeds): must reuse the compiled program.
    before = len(compiles)
    grid2 = Grid(tuple(range(seeds, 2 * seeds)), grid.depths, grid.widths)
    plan = make_plan(cfgs["relu_he"], grid2)
    compile_plan(plan)
    recompiles = len(compiles) - before
    runs = 2 * len(grid.seeds) * len(grid.depths)
    useful = 2 * useful_flops(grid.depths, 5, epochs) * seeds
    import jax
    return {**t, "total_s": total, "runs": runs, "epochs": epochs,
            "devices": len(jax.devices()),
            "run_epochs_per_s": runs * epochs / t["train_s"],
            "ms_per_run_epoch": 1e3 * t["train_s"] / (runs * epochs),
            "useful_gflop": useful / 1e9,
            "padded_gflop": 2 * padded_flops(grid.depths, 5, epochs) * seeds / 1e9,
            "useful_gflop_per_s": useful / 1e9 / t["train_s"],
            "second_sweep_recompiles": recompiles, "peak_rss_mb": peak_rss_mb()}


def case_train_only(epochs: int, seeds: int) -> dict:
    """W600 training alone (no outputs), to compare device counts in separate processes."""
    import jax
    from vgjax.config import Config, Grid
    from vgjax.run.chunks import compute_chunks, new_timing
    from vgjax.grid.plan import make_plan

    grid = Grid(tuple(range(seeds)), tuple(range(1, 11)), (5,))
    train_s = compile_s = 0.0
    for act, init, out_init in (("tanh", "uniform", "uniform"),
                                ("relu", "he_uniform", "glorot_uniform")):
        cfg = Config(activation=act, init=init, output_init=out_init, epochs=epochs,
                     hist_every=W600_HIST_EVERY)
        timing = new_timing()  # each chunk's history on the host: training time only
        compute_chunks(make_plan(cfg, grid), keep=lambda arrays: {}, timing=timing)
        compile_s += timing["compile_s"]
        train_s += timing["train_s"]
    return {"devices": len(jax.devices()), "train_s": train_s, "compile_s": compile_s}


def case_latency(epochs: int) -> dict:
    """One deep-relu run: compile, then time a second call."""
    import jax
    from vgjax.config import Grid
    from vgjax.experiments import EXPERIMENTS
    from vgjax.run.chunks import compile_plan, device_data, run_chunk
    from vgjax.grid.plan import make_plan

    cfg = EXPERIMENTS["deep-relu"].config
    from dataclasses import replace
    cfg = replace(cfg, epochs=epochs, test_gradients=False)
    plan = make_plan(cfg, Grid((0,), (5,), (5,)), mesh=_one_device_mesh())
    compiled, compile_s = compile_plan(plan)
    data = device_data(plan)
    run_chunk(plan, compiled, data, 0)
    t0 = time.perf_counter()
    out = run_chunk(plan, compiled, data, 0)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t0
    return {"compile_s": compile_s, "latency_s": dt, "epochs": epochs,
            "ms_per_epoch": 1e3 * dt / epochs, "peak_rss_mb": peak_rss_mb()}


def _one_device_mesh():
    import jax
    from vgjax.grid.plan import default_mesh
    return default_mesh(jax.devices()[:1])


def case_scale(n_runs: int, epochs: int, out: Path) -> dict:
    """``n_runs`` ReLU runs (depths cycling 1-10) through the chunked pipeline."""
    from vgjax.config import Config, Grid
    from vgjax.run.pipeline import run_sweep
    from vgjax.grid.plan import make_plan

    n_seeds = max(1, n_runs // 10)
    depths = tuple(range(1, 11)) if n_runs >= 10 else (5,)
    seeds = tuple(range(n_seeds if n_runs >= 10 else n_runs))
    cfg = Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                 epochs=epochs, hist_every=W600_HIST_EVERY)
    grid = Grid(seeds, depths, (5,))
    plan = make_plan(cfg, grid)
    t0 = time.perf_counter()
    res = run_sweep(cfg, grid, out, prefix="scale", overwrite=True, tensorboard=False)
    total = time.perf_counter() - t0
    timing = res.summary["timing"]
    runs = len(res.result.runs)
    return {"runs": runs, "epochs": epochs, "chunk_size": plan.chunk_size,
            "n_chunks": plan.n_chunks, "compile_s": timing["compile_s"],
            "train_s": timing["train_s"], "total_s": total,
            "ms_per_run_epoch": 1e3 * timing["train_s"] / (runs * epochs),
            "peak_rss_mb": peak_rss_mb()}


def case_cached_compile(epochs: int, seeds: int, traced: bool = False) -> dict:
    """W600's two programs compiled again in a fresh process: with the persistent cache the
    w600 case filled, this loads them; the traced programs come from :mod:`vgjax.run.programs`
    (``traced``: they are traced and lowered again, as before that store existed)."""
    import jax
    from vgjax import runtime
    from vgjax.run import programs
    from vgjax.config import Config, Grid
    from vgjax.run.chunks import compile_plan
    from vgjax.grid.plan import make_plan

    events: list[str] = []
    jax.monitoring.register_event_listener(lambda e, **kw: events.append(e))
    # Split the seconds: tracing and lowering (never cached) vs compiling or loading.
    load_s = [0.0]
    compile_lowered = runtime.compile_lowered

    def timed(lowered, platform):
        t0 = time.perf_counter()
        try:
            return compile_lowered(lowered, platform)
        finally:
            load_s[0] += time.perf_counter() - t0
    runtime.compile_lowered = timed
    if traced:  # the store is not read (nor written): programs are traced and lowered again
        programs.load_payload = lambda key, directory=None: None
        programs.save = lambda key, exported, directory=None: bytes(exported.serialize())
    grid = Grid(tuple(range(seeds)), tuple(range(1, 11)), (5,))
    compile_s = 0.0
    for act, init, out_init in (("tanh", "uniform", "uniform"),
                                ("relu", "he_uniform", "glorot_uniform")):
        cfg = Config(activation=act, init=init, output_init=out_init, epochs=epochs,
                     hist_every=W600_HIST_EVERY)
        compile_s += compile_plan(make_plan(cfg, grid))[1]
    return {"compile_s": compile_s, "load_s": load_s[0], "lower_s": compile_s - load_s[0],
            "devices": len(jax.devices()),
            "cache_hits": events.count("/jax/compilation_cache/cache_hits"),
            "cache_misses": events.count("/jax/compilation_cache/cache_misses"),
            "cache_dir": jax.config.jax_compilation_cache_dir, "traced": traced}


def case_ceiling(n: int = 2048, repeats: int = 10) -> dict:
    """float32 GFLOP/s of an n x n matmul with XLA (all cores)."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    dt = (time.perf_counter() - t0) / repeats
    return {"n": n, "gflop_per_s": 2 * n**3 / dt / 1e9}
