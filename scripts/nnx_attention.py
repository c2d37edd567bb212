"""An nnx attention block of your own on digits (8 rows of 8 pixels as 8 tokens), two lrs.

All seeds and learning rates train in one program (vgjax.watch); the attention output is
perturbed, so its gradient is recorded beside the parameters'. Writes summary.json,
history.npz and TensorBoard logs under --out; prints every path's final gradient norm.

    python scripts/nnx_attention.py --seeds 0-7 --epochs 20 --out out/nnx_attention
"""

import argparse

import optax
from flax import nnx
from vgjax import watch
from vgjax.config import parse_int_list


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dim: int = 16):
        self.embed = nnx.Linear(8, dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=False,
                                           rngs=rngs)
        self.head = nnx.Linear(dim, 10, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x.reshape(-1, 8, 8))
        h = h + self.perturb("attention", self.attn(h))
        return self.head(h.mean(axis=1))


p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", default="0-7", help="N, A-B or a comma list (default 0-7)")
p.add_argument("--epochs", type=int, default=20, help="default 20")
p.add_argument("--out", default="out/nnx_attention", help="output directory")
a = p.parse_args()
try:
    res = watch.train(lambda rngs: Block(rngs), "digits", optimizer=optax.adam,
                      lrs=(1e-3, 1e-2), seeds=parse_int_list("seeds", a.seeds),
                      epochs=a.epochs, batch_size=64, hist_every=0, out=a.out)
except ValueError as err:
    p.error(str(err))
norms = res.final("grad_norm")  # [runs, paths]
for lr in res.lrs:
    runs = res.runs.lr == lr
    acc = res.final("test_accuracy")[runs]
    print(f"lr {lr:g}: final test accuracy {acc.mean():.3f} ± {acc.std():.3f}")
    for i, q in enumerate(res.paths):
        g = norms[runs, i]
        print(f"  {q:<22} gradient norm {g.mean():.3g} ± {g.std():.2g}")
