"""Run the experiments end to end: sweeps, studies, figures, and ``OUT/README.md``.

``run_experiments(names, out)`` trains every sweep-shaped experiment as one grid (through the
resumable :func:`vgjax.run.pipeline.run_sweep`), computes the figure-only studies (``theory``,
``jacobian-spectra``, ``signal-propagation``), draws the figures under ``OUT/NAME/`` and
writes a report comparing each number with what the tutorial (or the paper) reported.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from vgjax import experiments as ex
from vgjax import figures, report
from vgjax.experiments.signal import results as signal_results
from vgjax.config import Config
from vgjax.data import make_data
from vgjax.run.pipeline import run_sweep
from vgjax.experiments.signal import figures as signal_figures
from vgjax.io.tables import write_tables
from vgjax.result import SweepResult
from vgjax.io.store import safe_join, sanitize_name

TENSORBOARD_ROOT = "tensorboard"


def experiment_config(exp: ex.Experiment, epochs: int | None) -> Config:
    """The experiment's config with ``epochs`` overridden (histogram interval clipped)."""
    cfg = exp.config
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs, hist_every=min(cfg.hist_every, epochs))
    return cfg


def n_runs(names: list[str], seeds: tuple[int, ...]) -> int:
    """Runs the sweep-shaped experiments among ``names`` train."""
    total = 0
    for e in map(ex.get, names):
        if e.config is not None:
            g = e.grid(seeds)
            total += (len(g.seeds) * len(g.depths) * len(g.widths) * max(len(g.lrs), 1)
                      * max(len(g.weight_vars), 1) * max(len(g.bias_vars), 1))
    return total


def _sel(result: SweepResult, depth: int, width: int | None = None) -> np.ndarray:
    r = result.runs
    keep = r.depth == depth
    if width is not None:
        keep &= r.width == width
    return np.flatnonzero(keep)


def _figures(exp: ex.Experiment, out: Path, results: dict[str, SweepResult]) -> list[Path]:
    """Draw the figures of ``exp`` into ``out``; returns their paths."""
    figs: list[Path] = []
    res = results.get(exp.name)
    if exp.name == "dataset":
        d = make_data(Config())
        figs.append(figures.plot_dataset(np.concatenate([d.x_train, d.x_test]),
                                       np.concatenate([d.y_train, d.y_test]),
                                       out / "dataset.png", title="dataset: make_circles(noise=0.1, "
                                       "random_state=1) scaled to [-1, 1]"))
    elif exp.name in ("shallow-tanh", "deep-tanh", "deep-relu", "xavier-tanh", "adam-tanh"):
        figs.append(figures.plot_learning_curves(res, out / "learning_curves.png",
                                               title=f"{exp.name}: {exp.title}"))
    elif exp.name == "relu-depth":
        figs.append(figures.plot_depth_study({"ReLU / He": res}, out / "depth_study.png",
                                           learn_threshold=ex.LEARN_THRESHOLD,
                                           title="relu-depth: ReLU/He, width 5"))
        for depth in (15, 20):
            if depth in res.depths:
                figs.append(figures.plot_learning_curves(
                    res, out / f"learning_curves_d{depth}.png", runs=_sel(res, depth),
                    title=f"relu-depth: {depth} hidden ReLU layers"))
    elif exp.name == "gradients":
        pair = {"tanh, U(0,1)": results["deep-tanh"], "ReLU, He": results["deep-relu"]}
        write_tables(out, report.gradient_tables(*pair.values()))
        figs.append(figures.plot_layer_gradients(pair, out / "layer_gradients.png",
                    title="gradients: training steps, 5 hidden layers"))
        figs.append(figures.plot_layer_gradients(pair, out / "layer_gradients_test.png",
                    stat="test_grad_mean_abs",
                    title="gradients: on the test set at each epoch's end "
                          "(as the tutorial's callback logged)"))
        figs.append(figures.plot_gradient_profile(pair, out / "gradient_profile.png",
                    title="gradients: 5 hidden layers"))
    elif exp.name == "weight-norms":
        pair = {"tanh, U(0,1)": results["deep-tanh"], "ReLU, He": results["deep-relu"]}
        write_tables(out, report.weight_tables(*pair.values()))
        figs.append(figures.plot_weight_norms(pair, out / "weight_norms.png",
                    title="weight-norms: 5 hidden layers"))
    elif exp.name == "tanh-depth":
        study = {"tanh / U(0,1)": res}
        if "relu-depth" in results:
            study["ReLU / He"] = results["relu-depth"]
        figs.append(figures.plot_depth_study(study, out / "depth_study.png",
                                           learn_threshold=ex.LEARN_THRESHOLD,
                                           title="tanh-depth: tanh U(0,1) and ReLU He, width 5"))
    elif exp.name in SIGNAL_FIGURES:
        figs += SIGNAL_FIGURES[exp.name](exp, out, results)
    elif exp.name in STUDIES:
        figs += [p for p in STUDIES[exp.name](out) if p.suffix == ".png"]
    elif exp.name == "phase-diagram":
        figs.append(_phase_diagram(res, out))
    elif exp.name == "tanh-breadth":
        figs.append(figures.plot_width_depth_heatmap(res, out / "heatmap.png",
                    title="tanh-breadth: tanh U(0,1)"))
        figs.append(figures.plot_depth_study(res, out / "depth_study.png",
                                           learn_threshold=ex.LEARN_THRESHOLD,
                                           title="tanh-breadth: tanh U(0,1), one line per width"))
    return figs


def _saturation_figures(exp: ex.Experiment, out: Path,
                        results: dict[str, SweepResult]) -> list[Path]:
    pair = {"tanh, U(0,1)": results["saturation-uniform"],
            "tanh, Glorot uniform": results["saturation-glorot"]}
    write_tables(out, signal_results.saturation_tables(pair))
    return [signal_figures.plot_saturation(pair, out / "saturation.png",
                                    title="saturation: 5 hidden tanh layers of 5 units")]


def _dead_relu_figures(exp: ex.Experiment, out: Path,
                       results: dict[str, SweepResult]) -> list[Path]:
    res = results[exp.name]
    write_tables(out, signal_results.dead_tables(res))
    return [signal_figures.plot_dead_units(res, out / "dead_units.png",
                                    title="dead-relu: ReLU/He, width 5")]


# The signal group's figure hooks (issue #12): each writes its tables.json and PNG.
SIGNAL_FIGURES = {"saturation": _saturation_figures, "dead-relu": _dead_relu_figures}


def _theory(out: Path) -> list[Path]:
    from vgjax.experiments.signal.theory_studies import write_theory
    return write_theory(out)


def _spectra(out: Path) -> list[Path]:
    from vgjax.experiments.signal.theory_studies import write_spectra
    return write_spectra(out)


def _signal(out: Path) -> list[Path]:
    from vgjax.experiments.signal.propagation import write
    return write(out)


# Figure-only studies: each writes its PNGs, data and tables.json into OUT/NAME/.
STUDIES: dict[str, Callable[[Path], list[Path]]] = {
    "theory": _theory, "jacobian-spectra": _spectra, "signal-propagation": _signal}


def _phase_diagram(res: SweepResult, out: Path) -> Path:
    """The phase-diagram heatmap with the theory's 6 ξ_c, and its table."""
    from vgjax.experiments.signal.phase import theory_curve, table
    cfg = res.config
    tw, xi, crit = theory_curve(cfg.bias_var, cfg.activation,
                                np.unique(np.asarray(res.runs.weight_var, np.float64)))
    write_tables(out, {"markdown": table(res, tw, xi, crit)})
    return figures.plot_phase_diagram(
        res, out / "phase_diagram.png", tw, xi, critical_weight_var=crit,
        title=f"phase-diagram: {cfg.activation}, width {res.widths[0]}, σ_b² = "
              f"{cfg.bias_var:g}, {cfg.data_name}, {cfg.optimizer} lr {cfg.lr:g}, "
              f"{cfg.epochs} epochs of {cfg.n_train} points")


def run_experiments(names: list[str], out: str | Path, *, seeds: tuple[int, ...],
                    epochs: int | None = None, overwrite: bool = False,
                    tensorboard: bool = True, chunk_size: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_start: Callable[[str], None] | None = None) -> dict[str, list[Path]]:
    """Run ``names`` (plus the experiments they read) into ``out``; returns figures per name.

    Every experiment writes ``OUT/NAME/`` (summary.json, history.npz and PNGs for sweeps,
    PNGs and tables.json for derived ones) and TensorBoard logs under
    ``OUT/tensorboard/NAME/``. Re-running resumes finished chunks. At the end
    ``OUT/README.md`` is rebuilt from every experiment in ``OUT`` (see :mod:`vgjax.report`),
    so the experiments not run now keep their rows and figures.
    """
    order = ex.dependencies(list(names))
    exps = [ex.get(n) for n in order]
    for e in exps:  # a bad epochs or seeds fails here, before anything is written:
        if e.config is not None:  # a Config and a Grid check their fields when built
            experiment_config(e, epochs)
            e.grid(seeds)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file; allowed: a directory path")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, SweepResult] = {}
    figures: dict[str, list[Path]] = {}
    for e in exps:
        if on_start is not None:
            on_start(e.name)
        exp_dir = safe_join(out, sanitize_name(e.name))
        if e.config is not None:
            logdir = out / TENSORBOARD_ROOT / sanitize_name(e.name)
            if overwrite and logdir.exists():
                shutil.rmtree(logdir)
            res = run_sweep(experiment_config(e, epochs), e.grid(seeds),
                            exp_dir, overwrite=overwrite, chunk_size=chunk_size,
                            tensorboard=tensorboard, prefix=e.prefix, logdir=logdir,
                            learn_threshold=ex.LEARN_THRESHOLD, progress=progress)
            results[e.name] = res.result
        else:
            exp_dir.mkdir(parents=True, exist_ok=True)
        for stale in e.figures:  # a figure this run does not redraw must not outlive it
            (exp_dir / stale).unlink(missing_ok=True)
        figures[e.name] = _figures(e, exp_dir, results)
    report.write_report(out)
    return figures
