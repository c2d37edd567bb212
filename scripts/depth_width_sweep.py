"""A custom depth x width sweep: ELU units with He normal init, depths 1-8 x widths 4, 8, 16.

The whole grid trains in one compiled program. Writes the seed-mean final test accuracy as a
heatmap (heatmap.png) and a Markdown table (table.md) under --out, and prints the table.

    python scripts/depth_width_sweep.py --seeds 0-29 --epochs 500 --out out/depth_width
"""

import argparse
from pathlib import Path

from vgjax import figures
from vgjax.config import Config, parse_int_list
from vgjax.result import final_metric, group_indices, seed_stats
from vgjax.io.store import atomic_write_text
from vgjax.io.tables import markdown_table
from vgjax.run.chunks import sweep

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", default="0-4", help="N, A-B or a comma list (default 0-4)")
p.add_argument("--epochs", type=int, default=100, help="default 100")
p.add_argument("--depths", default="1-8", help="hidden layers (default 1-8)")
p.add_argument("--widths", default="4,8,16", help="units per layer (default 4,8,16)")
p.add_argument("--out", default="out/depth_width", help="output directory")
a = p.parse_args()
try:
    seeds, ds, ws = (parse_int_list(n, getattr(a, n)) for n in ("seeds", "depths", "widths"))
    cfg = Config(activation="elu", init="he_normal", epochs=a.epochs, hist_every=0)
    res = sweep(cfg, seeds=seeds, depths=ds, widths=ws)
except ValueError as err:
    p.error(str(err))

out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
figures.plot_width_depth_heatmap(res, out / "heatmap.png", title="ELU / He normal")
final = final_metric(res, "test_accuracy")  # [R] each run's final test accuracy
mean = {k[:2]: seed_stats(final[i])["mean"] for k, i in group_indices(res).items()}
rows = markdown_table(["width \\ depth", *ds], ([w, *(f"{mean[d, w]:.3f}" for d in ds)] for w in ws))
atomic_write_text(out / "table.md", "\n".join(rows) + "\n")
print(f"final test accuracy, mean over {len(seeds)} seeds:", *rows, sep="\n")
