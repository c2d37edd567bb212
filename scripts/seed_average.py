"""Seed-average one custom config: sigmoid units, Glorot uniform init, 6 hidden layers of 5.

All seeds train in one compiled program (one ``vgjax.run.chunks.sweep`` call). Writes the
seed-mean learning curve with a ±1 std band (learning_curves.png) and the per-layer gradient
profile (gradient_profile.png) under --out; prints the final test accuracy, mean ± std.

    python scripts/seed_average.py --seeds 0-29 --epochs 500 --out out/seed_average
"""

import argparse
from pathlib import Path

from vgjax import figures
from vgjax.config import Config, parse_int_list
from vgjax.result import final_metric, seed_stats
from vgjax.run.chunks import sweep

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", default="0-9", help="N, A-B or a comma list (default 0-9)")
p.add_argument("--epochs", type=int, default=100, help="default 100")
p.add_argument("--depth", type=int, default=6, help="hidden layers (default 6)")
p.add_argument("--out", default="out/seed_average", help="output directory")
a = p.parse_args()
try:
    cfg = Config(activation="sigmoid", init="glorot_uniform", epochs=a.epochs, hist_every=0)
    res = sweep(cfg, seeds=parse_int_list("seeds", a.seeds), depths=(a.depth,), widths=(5,))
except ValueError as err:
    p.error(str(err))

out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
name = f"sigmoid / Glorot uniform, {a.depth} hidden layers of 5"
figures.plot_learning_curves(res, out / "learning_curves.png", title=name)
figures.plot_gradient_profile({name: res}, out / "gradient_profile.png",
                            epochs=(1, a.epochs // 10, a.epochs // 2, a.epochs))
acc = final_metric(res, "test_accuracy")  # [R]: last epoch before any divergence
st = seed_stats(acc)
print(f"final test accuracy over {len(acc)} seeds: {st['mean']:.3f} ± {st['std']:.3f}")
