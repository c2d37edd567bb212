"""Exploding gradients: ReLU / He uniform, 10 hidden layers, over a learning-rate axis.

Seeds x learning rates train in one compiled program. Prints per learning rate each seed's
diverged_epoch (-1: never) and final test accuracy, and plots the first hidden layer's
gradient norm over epochs, dotted where runs diverge (--out/grad_norm_layer1.png).
Width 32: at width 5, big steps kill every ReLU unit instead of overflowing.

    python scripts/lr_explosion.py --seeds 0-9 --epochs 100 --out out/lr_explosion
"""

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vgjax.config import Config, parse_float_list, parse_int_list
from vgjax.figures import save_png
from vgjax.result import final_metric
from vgjax.run.chunks import sweep

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", default="0-4", help="N, A-B or a comma list (default 0-4)")
p.add_argument("--epochs", type=int, default=50, help="default 50")
p.add_argument("--lrs", default="0.001,0.01,0.1,1.0,3.0", help="comma list of learning rates")
p.add_argument("--width", type=int, default=32, help="units per hidden layer (default 32)")
p.add_argument("--out", default="out/lr_explosion", help="output directory")
a = p.parse_args()
try:
    cfg = Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                 epochs=a.epochs, hist_every=0)
    res = sweep(cfg, seeds=parse_int_list("seeds", a.seeds), depths=(10,), widths=(a.width,),
                lrs=parse_float_list("lrs", a.lrs))
except ValueError as err:
    p.error(str(err))

runs, acc = res.runs, final_metric(res, "test_accuracy")  # NaN: diverged in epoch 1
ax = Figure(figsize=(7.5, 4.5), layout="tight").add_subplot(
    yscale="log", xlabel="epoch", ylabel="‖∂L/∂W‖₂ of hidden layer 1 (epoch mean)")
for k, lr in enumerate(res.lrs):
    i = np.flatnonzero(runs.lr == np.float32(lr))
    div = runs.diverged_epoch[i]
    print(f"lr {lr:<6g} diverged_epoch {div.tolist()}  final test accuracy "
          + " ".join(f"{x:.3f}" for x in acc[i]))
    ax.plot(np.arange(1, a.epochs + 1), res.history["grad_norm"][i, :, 0].T, color=f"C{k}",
            lw=1, marker=".", ms=3)
    ax.vlines(div[div > 0], 0, 1, transform=ax.get_xaxis_transform(), color=f"C{k}", ls=":")
    ax.plot([], [], color=f"C{k}", label=f"lr {lr:g}: {np.sum(div > 0)} of {div.size} diverged")
ax.legend(fontsize="small")
save_png(ax.figure, Path(a.out) / "grad_norm_layer1.png")  # atomic, like every vgjax file
