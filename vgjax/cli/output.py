"""What the CLI prints: the progress bar and the results tables."""

from __future__ import annotations

from typing import Callable


def progress_bar(total: int, desc: str):
    """A tqdm bar counting ``total`` runs, labelled ``desc``."""
    from tqdm import tqdm
    # delay: the bar first appears after 0.5 s, so an error raised at once (a bad --out) is
    # the only line on a terminal's stderr, not a half-drawn bar plus the error.
    return tqdm(total=total, desc=desc, unit="run", disable=None, dynamic_ncols=True, delay=0.5)


def on_progress(bar) -> Callable[[int], None]:
    """run_sweep's progress callback for ``bar``: 0 means the output directory is ready (draw
    the bar now, before compiling); n > 0 means n more runs finished."""
    return lambda n: bar.update(n) if n else bar.refresh()


def print_groups(summary: dict) -> None:
    """The summary's groups table: per config, the seeds' final accuracies and learn share."""
    from vgjax.result import GROUP_FIELDS
    fmt = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    # sigma_w^2 / sigma_b^2 / architecture columns only for sweeps with that axis
    fields = [f for f in GROUP_FIELDS
              if f not in ("weight_var", "bias_var", "residual", "norm")
              or summary["grid"].get(f + "s")]
    arch = {k: summary["config"][k] for k in ("residual", "norm") if k in summary["config"]}
    if arch:  # recorded only when not the plain MLP (Config.to_dict)
        print("architecture: " + ", ".join(f"{k} {v}" for k, v in arch.items()))
    print(" ".join(f"{f:>8}" for f in fields) + f" {'seeds':>5}  {'train acc':>15}  "
          f"{'test acc':>15}  learn")
    for g in summary["groups"]:
        print(" ".join(f"{cell(g[f]):>8}" for f in fields)
              + f" {g['n_seeds']:>5}  {fmt(g['final_train_accuracy']):>15}  "
              f"{fmt(g['final_test_accuracy']):>15}  {g['share_learn']:.2f}")


# show --layers: (history array, what it is); the signal probe's rows only when recorded.
_LAYER_TABLES = (("grad_mean_abs", "final mean |dL/dW| per layer"),
                 ("signal_saturation", "final saturated share (|φ′| < 0.05) per hidden layer"),
                 ("signal_dead", "final dead-unit share per hidden layer"))


def print_layers(result) -> None:
    """Per config and layer: seed mean of the final mean |dL/dW| (needs history.npz), and
    of the saturated and dead shares when the signal probe recorded them."""
    for stat, what in _LAYER_TABLES:
        if stat in result.history:
            _print_layer_table(result, stat, what)


def _print_layer_table(result, stat: str, what: str) -> None:
    import numpy as np

    from vgjax.result import final_metric, group_indices, seed_stats
    final = final_metric(result, stat)  # [R, L] (or [R, D]: hidden layers only)
    n_layers = final.shape[1]
    names = [f"h{i + 1}" for i in range(n_layers)]
    if n_layers == result.n_layers:
        names[-1] = "out"
    print(f"{what} (seed mean; '-' where the config lacks the layer)")
    print(f"{'config':>22}  " + " ".join(f"{n:>9}" for n in names))
    for key, idx in group_indices(result).items():
        mean = seed_stats(final[idx])["mean"]
        cells = ["-" if not np.isfinite(v) else f"{v:.3g}" for v in mean]
        label = ",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in key)
        print(f"{label:>22}  " + " ".join(f"{c:>9}" for c in cells))
