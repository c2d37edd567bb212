"""The wide-net cases (``wide``, ``crossover``): the wide engine against the batched-matmul
ceiling of its layer shape, and the fast/wide engine crossover behind ``engine="auto"``."""

from __future__ import annotations

import time

from vgjax.bench.cases import peak_rss_mb
from vgjax.bench.flops import padded_flops, useful_flops


# (name, depths, width, seeds, target fraction of the batched-matmul ceiling)
WIDE_CASES = (("W-wide", (4, 8, 16, 32), 128, 8, 0.5),
              ("w256-d16", (16,), 256, 4, 0.6),
              ("w512-d16", (16,), 512, 4, 0.6))


WIDE_EPOCHS = 20


CROSSOVER_WIDTHS = (5, 10, 15, 20, 25)


def batched_matmul_gflops(runs: int, width: int, batch: int = 32, layers: int = 32,
                          repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of ``layers`` chained ``tanh([R, B, P] x [R, P, P])``
    (one minibatch step's layer shape, batched over runs), with the run axis sharded over
    every device as a sweep shards it: the ceiling the wide engine is measured against."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec
    from vgjax.grid.plan import default_mesh
    mesh = default_mesh()
    runs = -(-runs // mesh.devices.size) * mesh.devices.size

    def chain(h, k):
        return jax.lax.scan(lambda h, k: (jnp.tanh(jnp.einsum("rbp,rpq->rbq", h, k)), None),
                            h, k)[0]

    h = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (runs, batch, width)),
                       NamedSharding(mesh, PartitionSpec("runs")))
    k = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (layers, runs, width, width))
                       / width ** 0.5, NamedSharding(mesh, PartitionSpec(None, "runs")))
    f = jax.jit(chain).lower(h, k).compile()
    f(h, k).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(h, k).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * runs * batch * width * width * layers / best / 1e9


def time_grid(config, grid, engine: str = "auto") -> dict:
    """Compile and train ``grid`` chunk by chunk (no outputs written): seconds and plan
    (the engines, chunks, programs (width groups) and the first group's depth blocks)."""
    from vgjax.run.chunks import compute_chunks, new_timing
    from vgjax.grid.plan import make_plan
    plan = make_plan(config, grid, engine=engine)
    timing = new_timing()
    compute_chunks(plan, keep=lambda arrays: {}, timing=timing)
    return {"engine": plan.engine, "chunk_size": plan.chunk_size, "n_chunks": plan.n_chunks,
            "groups": len(plan.groups), "n_blocks": plan.groups[0].n_blocks,
            "compile_s": timing["compile_s"], "train_s": timing["train_s"]}


def case_wide(depths: tuple[int, ...], width: int, seeds: int, epochs: int) -> dict:
    """A wide grid (tanh, Glorot uniform, all statistics) with the automatic engine, and the
    batched-matmul ceiling of its layer shape measured before and after it (best of both)."""
    from vgjax.config import Config, Grid
    cfg = Config(activation="tanh", init="glorot_uniform", epochs=epochs)
    runs = len(depths) * seeds
    ceiling = batched_matmul_gflops(runs, width)
    r = time_grid(cfg, Grid(tuple(range(seeds)), tuple(depths), (width,)))
    ceiling = max(ceiling, batched_matmul_gflops(runs, width))
    useful = useful_flops(depths, width, epochs) * seeds
    padded = padded_flops(depths, width, epochs) * seeds
    return {**r, "depths": list(depths), "width": width, "seeds": seeds, "epochs": epochs,
            "runs": runs, "useful_gflop": useful / 1e9, "padded_gflop": padded / 1e9,
            "useful_gflop_per_s": useful / 1e9 / r["train_s"],
            "ceiling_gflop_per_s": ceiling,
            "ceiling_fraction": useful / 1e9 / r["train_s"] / ceiling,
            "peak_rss_mb": peak_rss_mb()}


def case_crossover(width: int, epochs: int, seeds: int = 30) -> dict:
    """The tanh-breadth shape at one width, trained by the fast and by the wide engine."""
    from dataclasses import replace
    from vgjax.config import Grid
    from vgjax.experiments.tutorial import TANH_U
    cfg = replace(TANH_U, epochs=epochs)
    grid = Grid(tuple(range(seeds)), tuple(range(1, 11)), (width,))
    out = {"width": width, "epochs": epochs, "runs": 10 * seeds}
    for engine in ("fast", "wide"):
        r = time_grid(cfg, grid, engine)
        out[engine] = {"compile_s": r["compile_s"], "train_s": r["train_s"],
                       "ms_per_run_epoch": 1e3 * r["train_s"] / (10 * seeds * epochs)}
    return out
