"""The tutorial group: the tutorial's experiments and its five extensions (``vgjax
reproduce``).

Each sweep-shaped experiment is one grid (one compiled program) of seeds x depths x widths.
``gradients`` and ``weight-norms`` train nothing of their own: they read the ``deep-tanh``
and ``deep-relu`` sweeps (which record test-set gradients, as the tutorial's Keras callback
did) and draw their figures. ``reported`` quotes the tutorial.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vgjax.config import Config
from vgjax.experiments.tutorial import report
from vgjax.experiments.tutorial.experiments import (Breadth, Curves, Dataset, DepthStudy,
                                                    Gradients, WeightNorms)

GROUP = "tutorial"
SOURCE = "tutorial"   # whom `reported` quotes (vgjax list)

# Histograms every 25 epochs (20 per run) keep the TensorBoard logs of a whole reproduction
# to a few GB; `vgjax sweep --hist-every 1` gives the tutorial's every-epoch histograms.
HIST_EVERY = 25

TANH_U = Config(activation="tanh", init="uniform", output_init="uniform", hist_every=HIST_EVERY)
RELU_HE = Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                 hist_every=HIST_EVERY)
TANH_GLOROT = replace(TANH_U, init="glorot_uniform", output_init="glorot_uniform")
# the two sweeps `gradients` and `weight-norms` read, as (figure label, table label)
PAIR = (("deep-tanh", ("tanh, U(0,1)", "tanh")), ("deep-relu", ("ReLU, He", "ReLU")))

EXPERIMENTS = (
    Dataset("dataset", "The two-circles data set (1000 points, noise 0.1)", reported="figure",
            group=GROUP),
    Curves("shallow-tanh", "1 hidden layer of 5 tanh units, U(0,1) init", TANH_U, depths=(1,),
           prefix="tanh_uniform", reported="Train 0.816, Test 0.816", group=GROUP),
    Curves("deep-tanh", "5 hidden tanh layers, U(0,1) init",
           replace(TANH_U, test_gradients=True), prefix="tanh_uniform",
           reported="Train 0.530, Test 0.468 (fails)", group=GROUP),
    Curves("deep-relu", "5 hidden ReLU layers, He uniform init, Glorot output",
           replace(RELU_HE, test_gradients=True), prefix="relu_he",
           reported="Train 0.836, Test 0.840", group=GROUP),
    DepthStudy("relu-depth", "ReLU/He with 1-25 hidden layers", RELU_HE,
               depths=tuple(range(1, 26)), prefix="relu_he",
               reported="15 layers still learns, 20 no longer does",
               figures=("depth_study.png", "learning_curves_d15.png",
                        "learning_curves_d20.png"),
               label="ReLU / He", plot_title="ReLU/He, width 5", curve_depths=(15, 20),
               units="ReLU",
               reported_depths=((15, "learns"), (20, "no longer learns")), group=GROUP),
    Gradients("gradients", "Per-layer gradients of deep-tanh vs deep-relu",
              reported="tanh first layer ~0.05-0.1, ReLU first layer ~0.2-0.4, output layer "
                       "most active",
              uses=tuple(n for n, _ in PAIR), labels=tuple(lab for _, lab in PAIR),
              depth_note="5 hidden layers",
              heading="gradients: mean |dL/dW| per layer, averaged over epochs", group=GROUP),
    Curves("xavier-tanh", "5 tanh layers, Glorot (Xavier) uniform init (extension 1)",
           TANH_GLOROT, prefix="tanh_glorot", group=GROUP),
    Curves("adam-tanh", "5 tanh layers, U(0,1) init, Adam lr 0.001 (extension 2)",
           replace(TANH_U, optimizer="adam", lr=0.001), prefix="tanh_uniform_adam",
           group=GROUP),
    WeightNorms("weight-norms", "L1 norm of each layer's kernel per epoch, tanh vs ReLU "
                "(extension 3)", uses=tuple(n for n, _ in PAIR),
                labels=tuple(lab for _, lab in PAIR), depth_note="5 hidden layers",
                heading="weight-norms (extension 3): seed-mean L1 norm of each kernel",
                group=GROUP),
    DepthStudy("tanh-depth", "tanh U(0,1) with 1-10 hidden layers (extension 4)", TANH_U,
               depths=tuple(range(1, 11)), prefix="tanh_uniform", label="tanh / U(0,1)",
               plot_title="tanh U(0,1) and ReLU He, width 5",
               compare=("relu-depth", "ReLU / He"), group=GROUP),
    Breadth("tanh-breadth", "tanh U(0,1), widths 5-25 x 1-10 hidden layers (extension 5)",
            TANH_U, depths=tuple(range(1, 11)), widths=(5, 10, 15, 20, 25),
            prefix="tanh_uniform", plot_title="tanh U(0,1)",
            heading="tanh-breadth (extension 5): final test accuracy (share that learns)",
            group=GROUP),
)


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md`` (:mod:`vgjax.experiments.tutorial.report`)."""
    return report.render(EXPERIMENTS, out)
