"""The ``recurrent`` case: a grid of (tanh RNN, LSTM, GRU) x T in {50, 100, 200} x 8 seeds at
width 64 trained on the adding problem in one compiled program
(:func:`vgjax.recurrent.grid.run_grid`), against what a PyTorch user writes: a loop over the
same 72 runs, each its own ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear`` trained by
``torch.optim.Adam`` on batches of its own length (no padding), same batch size, steps and
learning rate.

Both sides time training only, each in its own process: JAX's compile is reported beside it,
and the PyTorch loop first trains one run per cell untimed. JAX's training also holds the
grid's two evaluations (at initialisation and at the end: test loss, gradient flow through
time, λ₁), which the loop does not do. PyTorch is optional (``pip install torch``); without
it the peer's fields are None.

``vgjax bench --only recurrent`` runs both (:func:`run_recurrent`) into ``benchmark.json``;
:func:`render_recurrent` is its line of the report's table.
"""

from __future__ import annotations

import time

CELLS = ("rnn", "lstm", "gru")
LENGTHS = (50, 100, 200)
SEEDS = 8
WIDTH = 64
BATCH = 32
LR = 1e-3
TARGET_SPEEDUP = 3.0
STEPS = 20   # Adam steps per run: the PyTorch loop's 72 runs take minutes on 2 cores


def run_recurrent(run_child, env: dict, log, steps: int = STEPS) -> dict:
    """Both sides, each in a child process (``run_child(args, env)`` -> its JSON): the JAX
    grid's fields, the peer's, and ``speedup`` = PyTorch / JAX training seconds (None
    without PyTorch) beside ``target_speedup``."""
    log(f"recurrent: (tanh RNN, LSTM, GRU) x T {LENGTHS} x {SEEDS} seeds, {steps} steps, "
        "one JAX program ...")
    r = run_child(["recurrent", steps], env=env)
    log(f"  train {r['jax_train_s']:.1f} s, compile {r['jax_compile_s']:.1f} s")
    log("recurrent: the same runs as a PyTorch loop, run after run ...")
    r.update(run_child(["recurrent_torch", steps], env=env))
    t = r["torch_train_s"]
    r["speedup"] = t / r["jax_train_s"] if t else None
    r["target_speedup"] = TARGET_SPEEDUP
    log(f"  {t:.1f} s: {r['speedup']:.2f}x" if t else "  PyTorch is not installed")
    return r


def render_recurrent(r: dict) -> list[str]:
    """The report's line for the recurrent case (a benchmark.json's ``recurrent``)."""
    head = (f"Recurrent grid ({'/'.join(r['cells'])} x T {'/'.join(map(str, r['lengths']))} x "
            f"{r['seeds']} seeds, width {r['width']}, batch {r['batch']}, {r['steps']} Adam "
            f"steps, adding problem): one JAX program trains in {r['jax_train_s']:.1f} s "
            f"(compile {r['jax_compile_s']:.1f} s)")
    if r.get("speedup") is None:
        return [head + "; PyTorch not installed, no peer."]
    ok = "met" if r["speedup"] >= r["target_speedup"] else "missed"
    return [head + f"; a PyTorch loop over the same {r['runs']} runs (nn.RNN/nn.LSTM/nn.GRU, "
            f"torch {r['torch_version']}, {r['torch_threads']} threads) {r['torch_train_s']:.1f} s"
            f", so vgjax is {r['speedup']:.2f}x faster (>= {r['target_speedup']:g}x: {ok})"]


def case_recurrent(steps: int) -> dict:
    """Train the grid for ``steps`` Adam steps in JAX, one compiled program."""
    import optax
    from vgjax.recurrent import grid as rg
    from vgjax.recurrent import tasks as rt
    runs = [rg.RunSpec(c, t, s) for c in CELLS for t in LENGTHS for s in range(SEEDS)]
    spec = rg.TrainSpec(task=rt.make_task("adding"), width=WIDTH, batch_size=BATCH,
                        steps=steps, eval_every=steps, test_size=BATCH, flow_examples=1,
                        optimizer=optax.adam(LR))
    res = rg.run_grid(runs, spec)
    return {"runs": len(runs), "steps": steps, "width": WIDTH, "batch": BATCH,
            "lengths": list(LENGTHS), "cells": list(CELLS), "seeds": SEEDS,
            "jax_compile_s": res.compile_s, "jax_train_s": res.train_s}


def case_recurrent_torch(steps: int) -> dict:
    """The same runs as a PyTorch per-run loop (its own process: PyTorch's and XLA's thread
    pools are not mixed); torch_train_s None without PyTorch."""
    try:
        import torch
    except ImportError:
        return {"torch_train_s": None, "torch_version": None, "torch_threads": None}
    return {"torch_train_s": torch_loop(steps), "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def _adding_batch(torch, gen, length: int, batch: int):
    # The adding problem (vgjax.recurrent.tasks): one marker in each half, target their sum.
    values = torch.rand(batch, length, generator=gen)
    half = length // 2
    p1 = torch.randint(0, half, (batch,), generator=gen)
    p2 = torch.randint(half, length, (batch,), generator=gen)
    markers = torch.zeros(batch, length)
    markers[torch.arange(batch), p1] = 1.0
    markers[torch.arange(batch), p2] = 1.0
    return torch.stack([values, markers], dim=-1), (values * markers).sum(dim=1, keepdim=True)


def torch_train(torch, cell: str, length: int, seed: int, steps: int) -> float:
    """One run as a PyTorch user trains it; returns the last training loss."""
    nn = torch.nn
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layer = {"rnn": lambda: nn.RNN(2, WIDTH, nonlinearity="tanh", batch_first=True),
             "lstm": lambda: nn.LSTM(2, WIDTH, batch_first=True),
             "gru": lambda: nn.GRU(2, WIDTH, batch_first=True)}[cell]()
    head = nn.Linear(WIDTH, 1)
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), lr=LR)
    loss = torch.zeros(())
    for _ in range(steps):
        x, y = _adding_batch(torch, gen, length, BATCH)
        hs, _ = layer(x)
        loss = torch.mean((head(hs[:, -1]) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def torch_loop(steps: int) -> float:
    """Seconds for the per-run PyTorch loop over every (cell, T, seed), after a warm-up."""
    import torch
    for cell in CELLS:
        torch_train(torch, cell, LENGTHS[0], 0, 2)
    t0 = time.perf_counter()
    for cell in CELLS:
        for length in LENGTHS:
            for seed in range(SEEDS):
                torch_train(torch, cell, length, seed, steps)
    return time.perf_counter() - t0
