"""A linen CNN of your own on scikit-learn's digits: plain vs residual blocks, seeds averaged.

Each variant trains all its seeds in one program (vgjax.watch) and writes summary.json,
history.npz and TensorBoard logs under --out/<variant>; prints, per variant, the final
gradient norm of the first and the last conv kernel (seed mean ± std): where it vanishes.

    python scripts/flax_cnn_digits.py --seeds 0-7 --epochs 20 --out out/flax_cnn
"""

import argparse
from pathlib import Path

import flax.linen as nn
import optax
from vgjax import watch
from vgjax.config import parse_int_list


class CNN(nn.Module):
    blocks: int
    residual: bool

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(8, (3, 3))(x.reshape(-1, 8, 8, 1)))
        for _ in range(self.blocks):
            f = nn.tanh(nn.Conv(8, (3, 3))(h))
            h = h + f if self.residual else f
        return nn.Dense(10)(h.mean(axis=(1, 2)))


p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", default="0-7", help="N, A-B or a comma list (default 0-7)")
p.add_argument("--epochs", type=int, default=20, help="default 20")
p.add_argument("--blocks", type=int, default=8, help="conv blocks after the stem (default 8)")
p.add_argument("--out", default="out/flax_cnn", help="output directory")
a = p.parse_args()
for variant in ("plain", "residual"):
    try:
        res = watch.train(CNN(a.blocks, variant == "residual"), "digits", seeds=parse_int_list(
            "seeds", a.seeds), optimizer=optax.sgd(0.05, momentum=0.9), epochs=a.epochs,
            batch_size=64, hist_every=max(1, a.epochs // 4), out=Path(a.out) / variant)
    except ValueError as err:
        p.error(str(err))
    norms = res.final("grad_norm")  # [seeds, paths]: last epoch before any divergence
    convs = [q for q in res.paths if q.startswith("Conv_") and q.endswith("/kernel")]
    for q in (convs[0], convs[-1]):
        g = norms[:, res.paths.index(q)]
        print(f"{variant:<8} {q:<14} gradient norm {g.mean():.3g} ± {g.std():.2g} "
              f"({len(g)} seeds)")
