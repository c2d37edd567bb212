"""The ``watch`` case: S seeds of a user's Flax model in one program (:mod:`vgjax.watch`)
against S sequential single-seed runs of the same jitted step.

The model is a linen MLP on digits (64 -> 64 -> 64 -> 10, ReLU, SGD with momentum, batch
64, gradient statistics of every path each step). Three timings, compilation excluded:

* ``one_program_s``: every seed in the one compiled program of :func:`vgjax.watch.train`;
* ``step_loop_s``: seed after seed, the same engine's step (:attr:`Engine.step`: loss,
  gradients, update, per-path sums) jitted alone and called per minibatch from Python, with
  the jitted evaluation after each epoch: how a Flax training script runs a seed;
* ``one_seed_program_s``: seed after seed, the one-program road with a single seed on one
  device (the same program shape, S = 1).
"""

from __future__ import annotations

import resource
import time


def _model():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(2):
                x = nn.relu(nn.Dense(64)(x))
            return nn.Dense(10)(x)

    return MLP()


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def case_watch(seeds: int = 8, epochs: int = 5, repeats: int = 2) -> dict:
    """Seconds of the three roads (best of ``repeats``) and the speed-ups of the one program.

    Returns one_program_s, step_loop_s, one_seed_program_s, speedup_vs_step_loop
    (target >= 3), speedup_vs_one_seed_program, compile_s of the one program, and the shape.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh

    from vgjax.engines.loop import DeviceData
    from vgjax.watch import api
    from vgjax.watch.engine import RunSpec

    kw = dict(optimizer=optax.sgd(0.05, momentum=0.9), epochs=epochs, batch_size=64,
              hist_every=0)
    prep = api.prepare(_model(), "digits", seeds=range(seeds), **kw)
    t0 = time.perf_counter()
    program = prep.compile()
    compile_s = time.perf_counter() - t0
    data = api.device_data(prep)
    jax.block_until_ready(api.run_chunk(prep, program, 0, data))  # warm
    one_program = _best(lambda: api.run_chunk(prep, program, 0, data), repeats)

    engine = prep.engine
    init = jax.jit(engine.init)
    minibatches = jax.jit(engine.minibatches)
    step = jax.jit(lambda state, batch, ctx, acc: engine.step(state, batch, ctx, acc, False))
    evaluate = jax.jit(engine.evaluate)
    host = DeviceData(*(jnp.asarray(a) for a in prep.data))
    n_paths = len(prep.meta["paths"])

    def one_seed(r: int):
        spec = RunSpec(jnp.asarray(prep.specs.key[r]), jnp.asarray(prep.specs.lr[r]))
        setup = init(spec, host)
        state = setup.state
        for epoch in range(epochs):
            idx, weight = minibatches(setup.ctx, epoch)
            acc = (jnp.zeros(n_paths), jnp.zeros(n_paths), None)
            for s in range(idx.shape[0]):
                state, acc = step(state, (idx[s], weight[s]), setup.ctx, acc)
            out = evaluate(state, setup.ctx)
        return jax.block_until_ready(out)

    one_seed(0)  # compiles the jitted pieces
    step_loop = _best(lambda: [one_seed(r) for r in range(seeds)], repeats)

    single = Mesh(np.array(jax.devices()[:1]), ("runs",))
    singles = [api.prepare(_model(), "digits", seeds=(s,), mesh=single, **kw)
               for s in range(seeds)]
    single_program = singles[0].compile()  # one shape: every seed's program is this one
    single_data = api.device_data(singles[0])
    jax.block_until_ready(api.run_chunk(singles[0], single_program, 0, single_data))
    one_seed_program = _best(lambda: [api.run_chunk(p, single_program, 0, single_data)
                                      for p in singles], repeats)
    return {"seeds": seeds, "epochs": epochs, "devices": len(jax.devices()),
            "steps_per_epoch": int(-(-prep.data.x_train.shape[0] // 64)),
            "compile_s": compile_s, "one_program_s": one_program, "step_loop_s": step_loop,
            "one_seed_program_s": one_seed_program,
            "speedup_vs_step_loop": step_loop / one_program,
            "speedup_vs_one_seed_program": one_seed_program / one_program,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
