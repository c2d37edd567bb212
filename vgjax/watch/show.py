"""What ``vgjax show OUT`` prints for a watched model, from its summary.json alone (no JAX
imported): the groups table and each path's final gradient norm."""

from __future__ import annotations

from pathlib import Path

from vgjax.io.outdir import SUMMARY_NAME, read_format_summary, summary_format

SUMMARY_FORMAT = "vgjax.watch"
SUMMARY_VERSION = 1


def is_watch_dir(out) -> bool:
    """Whether ``OUT/summary.json`` is a watched model's (not a sweep's)."""
    return summary_format(out) == SUMMARY_FORMAT


def read_summary(out) -> dict:
    """``OUT/summary.json`` of a watched model, checked (one-line ``ValueError``)."""
    s = read_format_summary(out, SUMMARY_FORMAT, SUMMARY_VERSION, "a watched model")
    p = Path(out) / SUMMARY_NAME
    for key, kind in (("runs", list), ("groups", list), ("paths", list), ("settings", dict)):
        if not isinstance(s.get(key), kind):
            raise ValueError(f"results: {str(p)!r} lacks a valid {key!r} entry")
    return s


def show(out, *, layers: bool = True) -> None:
    """``vgjax show OUT`` for a watched model: the groups table (per lr: seeds, final train
    and test accuracy as seed mean +- std, share that learns) and, with ``layers``, each
    path's final gradient norm (seed mean +- std) from input to output."""
    s = read_summary(out)
    fmt = lambda st: "n/a" if st["mean"] is None else f"{st['mean']:.3f} ± {st['std']:.3f}"
    print(f"{s['model']['kind']} model {s['model']['name']}: {len(s['paths'])} parameter "
          f"paths, {s['settings']['data']}")
    print(f"{'lr':>8} {'seeds':>5}  {'train acc':>15}  {'test acc':>15}  learn")
    for g in s["groups"]:
        lr = "own" if g["lr"] is None else f"{g['lr']:.4g}"
        print(f"{lr:>8} {g['n_seeds']:>5}  {fmt(g['final_train_accuracy']):>15}  "
              f"{fmt(g['final_test_accuracy']):>15}  {g['share_learn']:.2f}")
    n_div = sum(bool(r["diverged"]) for r in s["runs"])
    print(f"{s['n_runs']} runs, {s['settings']['epochs']} epochs, {n_div} diverged")
    if not layers:
        return
    width = max(len(p) for p in s["paths"] + s["act_paths"])
    for key, paths in (("final_grad_norm", s["paths"]), ("final_act_grad_norm", s["act_paths"])):
        if not paths:
            continue
        print(f"{key.removeprefix('final_')} (seed mean ± std), input to output")
        for g in s["groups"]:
            if len(s["groups"]) > 1:
                print(f"  lr {g['lr']:.4g}")
            st = g[key]
            for p, m, sd in zip(paths, st["mean"], st["std"]):
                cell = "n/a" if m is None else f"{m:.3g} ± {sd:.2g}"
                print(f"  {p:<{width}}  {cell}")
