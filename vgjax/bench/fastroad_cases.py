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

The ``adam`` pair also has a PyTorch peer (:func:`case_fastroad_torch`, its own process):
the same nets as ``torch.func`` vmap ensembles with ``torch.optim.Adam``, so "W-wide Adam
>= 2x faster than torch.func Adam" (:data:`TORCH_TARGET_SPEEDUP`) is measured in the same
run. The target is on equal outputs: the peer also records every net's training and test
loss and accuracy at initialisation and after every epoch, as vgjax's history does (and
Keras's ``fit`` with validation data); its time without them is reported beside it.
"""

from __future__ import annotations

import time
from dataclasses import replace

# name -> target: the off-road grid trains in at most this many times the road's time
FASTROAD_PAIRS = {"adam": 1.5, "gelu": 1.5, "swish": 1.5, "probe": 1.5, "w600_adam": 1.5}
FASTROAD_EPOCHS = 20
W600_EPOCHS = 100
# torch.func ensemble with Adam / vgjax's W-wide with Adam, at least
TORCH_TARGET_SPEEDUP = 2.0


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


def train_seconds(config, grid, repeats: int) -> dict:
    """Compile ``grid`` once, then the best of ``repeats`` trainings of all its chunks
    (seconds, outputs fetched to the host), with the plan's engine, programs and devices."""
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
    return {"engine": plan.engine, "programs": len(plan.groups),
            "devices": int(plan.mesh.devices.size), "runs": len(plan.runs),
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
        out["road"].append(train_seconds(road, grid, repeats))
        out["off"].append(train_seconds(off, grid, repeats))
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
        if pair == "adam":
            r["torch"] = t = run_child(["fastroad_torch", "adam", e], env=env)
            # the target is on equal outputs: vgjax's time includes its history's curves
            t["speedup"] = (t["torch_curves_s"] / r["off_train_s"] if t["torch_curves_s"]
                            else None)
            t["train_only_speedup"] = (t["torch_train_s"] / r["off_train_s"]
                                       if t["torch_train_s"] else None)
            t["target_speedup"] = TORCH_TARGET_SPEEDUP
            if t["speedup"] is not None:
                log(f"  torch.func Adam ensemble {t['torch_curves_s']:.1f} s with the same "
                    f"curves ({t['torch_train_s']:.1f} s without): W-wide Adam "
                    f"{t['speedup']:.2f}x faster (target >= {TORCH_TARGET_SPEEDUP}x)")
    return rows


# ----------------------------------------------------------------------------------------
# the PyTorch peer of the ``adam`` pair: what a PyTorch user writes for an ensemble

TORCH_OPTIMIZERS = ("adam", "sgd")


def torch_ensemble_s(torch, optimizer: str, epochs: int, seeds: int, depths, width: int,
                     x, y, batch_size: int, lr: float, momentum: float,
                     curves: tuple | None = None) -> float:
    """Seconds to train W-wide's nets as ``torch.func`` vmap ensembles: per depth, the
    ``seeds`` nets (``nn.Sequential`` of Linear + Tanh, Glorot-uniform kernels, zero biases,
    one logit) stacked with ``stack_module_state``, one ``vmap(grad(loss))`` per minibatch
    (each net its own shuffle of ``x`` [N, 2], ``y`` [N]; the last partial batch kept, as
    Keras does) and one ``torch.optim.Adam`` (or SGD with ``momentum``) step over the
    stacked parameters: both are elementwise, so that is each net's own optimizer. Timed
    after one untimed step per depth (PyTorch's first-call setup).

    ``curves``: ``(x_test [M, 2], y_test [M])`` to also record what vgjax's history holds
    for every net at initialisation and after every epoch, as Keras's ``fit`` with
    ``validation_data`` does: the loss and accuracy on the training and the test points
    (one batched forward of all N + M points per epoch, without gradients)."""
    import copy
    from torch import nn
    from torch.func import functional_call, grad, stack_module_state, vmap

    def net(depth):
        layers, fan_in = [], x.shape[1]
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.Tanh()]
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        for m in layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        return nn.Sequential(*layers)

    n = x.shape[0]
    steps = -(-n // batch_size)
    total = 0.0
    for depth in depths:
        torch.manual_seed(depth)
        models = [net(depth) for _ in range(seeds)]
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")

        def loss(p, b, xb, yb):
            logits = functional_call(base, (p, b), (xb,))[:, 0]
            return nn.functional.binary_cross_entropy_with_logits(logits, yb)

        grads = vmap(grad(loss))
        leaves = list(params.values())
        opt = (torch.optim.Adam(leaves, lr=lr) if optimizer == "adam"
               else torch.optim.SGD(leaves, lr=lr, momentum=momentum))

        def step(idx):
            g = grads(params, buffers, x[idx], y[idx])
            for k, v in params.items():
                v.grad = g[k]
            opt.step()

        if curves is not None:   # record() exists only then
            x_all, y_all = torch.cat((x, curves[0])), torch.cat((y, curves[1]))
            logits_all = vmap(lambda p, b: functional_call(base, (p, b), (x_all,))[:, 0])
            history = torch.zeros(epochs + 1, 4, seeds)

            def record(e):
                with torch.no_grad():
                    z = logits_all(params, buffers)                             # [S, N+M]
                    ce = nn.functional.binary_cross_entropy_with_logits(
                        z, y_all.expand_as(z), reduction="none")
                    hit = ((z > 0).float() == y_all).float()
                    history[e] = torch.stack((ce[:, :n].mean(1), ce[:, n:].mean(1),
                                              hit[:, :n].mean(1), hit[:, n:].mean(1)))

        step(torch.stack([torch.randperm(n)[:batch_size] for _ in range(seeds)]))  # untimed
        t0 = time.perf_counter()
        if curves is not None:
            record(0)
        for e in range(epochs):
            order = torch.stack([torch.randperm(n) for _ in range(seeds)])      # [S, N]
            for s in range(steps):
                step(order[:, s * batch_size:(s + 1) * batch_size])
            if curves is not None:
                record(e + 1)
        total += time.perf_counter() - t0
    return total


def case_fastroad_torch(optimizer: str, epochs: int) -> dict:
    """The ``adam`` pair's grid (W-wide: tanh Glorot, its depths x width x seeds on the
    tutorial's circles) trained as ``torch.func`` vmap ensembles with ``optimizer``
    (:func:`torch_ensemble_s`), in this process; torch_train_s None without PyTorch."""
    if optimizer not in TORCH_OPTIMIZERS:
        raise ValueError(f"optimizer: {optimizer!r} is not allowed; allowed: "
                         f"{', '.join(TORCH_OPTIMIZERS)}")
    try:
        import torch
    except ImportError:
        return {"torch_train_s": None, "torch_curves_s": None, "torch_version": None,
                "torch_threads": None}
    from vgjax.bench.wide_cases import WIDE_CASES
    from vgjax.config import Config
    from vgjax.data import make_data
    _, depths, width, seeds, _ = WIDE_CASES[0]
    cfg = Config(activation="tanh", init="glorot_uniform", epochs=epochs)
    d = make_data(cfg)
    x, y = torch.from_numpy(d.x_train), torch.from_numpy(d.y_train)
    lr = 0.001 if optimizer == "adam" else cfg.lr
    run = lambda curves: torch_ensemble_s(  # noqa: E731
        torch, optimizer, epochs, seeds, depths, width, x, y, cfg.batch_size, lr,
        cfg.momentum, curves)
    s = run(None)
    s_curves = run((torch.from_numpy(d.x_test), torch.from_numpy(d.y_test)))
    return {"optimizer": optimizer, "epochs": epochs, "torch_train_s": s,
            "torch_curves_s": s_curves, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}
