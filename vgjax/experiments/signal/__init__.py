"""The signal group: theory beside measurement (``vgjax reproduce --group signal``).

Mean-field theory of deep random networks (Poole et al. 2016, Schoenholz et al. 2017,
Pennington et al. 2017) next to what vgjax measures: figure-only studies at initialisation
(``theory``, ``jacobian-spectra``, ``signal-propagation``), the trainability phase diagram (a
sweep with a σ_w² axis), and sweeps trained with the signal probe (saturated and dead units).
``reported`` names the paper an experiment follows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vgjax.config import Config
from vgjax.experiments.base import Sweep, group_report
from vgjax.experiments.signal.probed import DeadUnits, Saturation
from vgjax.experiments.signal.studies import JacobianSpectra, PhaseContrast, PhaseDiagram, \
    SignalPropagation, Theory
from vgjax.experiments.tutorial import RELU_HE, TANH_GLOROT, TANH_U

GROUP = "signal"
SOURCE = "reference"   # whom `reported` quotes (vgjax list)

HEADING = "## Signal propagation: theory beside measurement"
INTRO = ("Mean-field theory of deep random networks (Poole et al. 2016, Schoenholz et al. "
         "2017, Pennington et al. 2017) next to what vgjax measures on real nets. "
         "`vgjax reproduce --group signal` (or `vgjax run NAME`) rebuilds these sections; "
         "`vgjax reproduce` alone runs the tutorial group only.")

# The trainability phase diagram (Schoenholz et al. 2017, Fig. 5, on offline data): tanh,
# sigma_b^2 = 0.05, scikit-learn's digits (the first 600 images: 500 to train, 100 to test),
# width 64, 3 seeds, depths to 250, 1000 Adam steps (50 epochs of 20) read after 200, 400 and
# 1000 steps (PHASE_BUDGETS and the last epoch: the same runs' per-epoch accuracy).
# Orthogonal weights (gain sigma_w), not the paper's Gaussian ones: both have the same mean
# field (q*, chi_1, xi_c: the theory the diagram is drawn against), but the singular values
# of a Gaussian net's input-output Jacobian spread with depth faster (Pennington et al. 2017;
# the jacobian-spectra study), a finite-width effect the mean field does not see that bounded
# the Gaussian width-64 nets near depth 100-150 at every budget and rate we tried.
# PHASE_GAUSSIAN keeps the contrast in the results.
# Adam, not the paper's SGD: in pilot runs Keras SGD with momentum at the rates that train
# depth 40 destabilised depth 100 and trained no depth-250 net, while Adam trained both; its
# small rate because larger ones destabilised the deepest nets. The wide engine trains each
# depth in its own block (cost: runs x their own depth); sized so the whole signal group runs
# within 15 minutes on the 2-core reference machine.
PHASE_WIDTH = 64
PHASE_DEPTHS = (10, 20, 40, 70, 100, 150, 250)
PHASE_WEIGHT_VARS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.5)
PHASE_SEEDS = (0, 1, 2)
PHASE_BUDGETS = (10, 20)
PHASE = Config(activation="tanh", init="orthogonal", output_init="normal", bias_var=0.05,
               data="digits", n_samples=600, n_train=500, batch_size=25, optimizer="adam",
               lr=2e-5, epochs=50, hist_every=0)
# The same protocol with Gaussian N(0, sigma_w^2/fan_in) weights on the near-critical
# columns and the deep rows, where the two inits part.
PHASE_GAUSSIAN = replace(PHASE, init="normal")
PHASE_GAUSSIAN_DEPTHS = (100, 150, 250)
PHASE_GAUSSIAN_WEIGHT_VARS = (1.5, 1.75, 2.0)
SATURATION_PAIR = (("saturation-uniform", "tanh, U(0,1)"),
                   ("saturation-glorot", "tanh, Glorot uniform"))


def probed(config: Config) -> Config:
    """``config`` with the signal probe on (per-layer q, saturation, dead units, Jacobian)."""
    return replace(config, probes=("signal",))


EXPERIMENTS = (
    Theory("theory", "Mean-field q*, chi1, xi_c against sigma_w^2; the order-to-chaos line",
           reported="Poole et al. 2016, Schoenholz et al. 2017", group=GROUP),
    JacobianSpectra("jacobian-spectra", "Input-output Jacobian spectra at initialisation, "
                    "width 128", reported="Pennington et al. 2017", group=GROUP),
    SignalPropagation("signal-propagation", "Measured q^l and gradient norms per layer vs the "
                      "mean-field theory, tanh width 256, ordered/critical/chaotic",
                      reported="Poole et al. 2016, Schoenholz et al. 2017", group=GROUP),
    PhaseDiagram("phase-diagram", "Training accuracy over sigma_w^2 x depth on digits, tanh, "
                 "orthogonal weights, with 6 xi_c", PHASE, depths=PHASE_DEPTHS,
                 widths=(PHASE_WIDTH,), weight_vars=PHASE_WEIGHT_VARS, seeds=PHASE_SEEDS,
                 prefix="tanh_orthogonal", budgets=PHASE_BUDGETS,
                 contrast="phase-diagram-gaussian",
                 reported="Schoenholz et al. 2017: trainable to depth ~ 6 xi_c", group=GROUP),
    PhaseContrast("phase-diagram-gaussian", "phase-diagram's near-critical columns with "
                  "Gaussian weights", PHASE_GAUSSIAN, depths=PHASE_GAUSSIAN_DEPTHS,
                  widths=(PHASE_WIDTH,), weight_vars=PHASE_GAUSSIAN_WEIGHT_VARS,
                  seeds=PHASE_SEEDS, prefix="tanh_normal", budgets=PHASE_BUDGETS,
                  contrast="phase-diagram", group=GROUP),
    # trained with the signal probe on, so the saturation and dead-unit shares of every
    # hidden layer are recorded at init and per epoch
    Sweep("saturation-uniform", "5 tanh layers, U(0,1) init, signal probe on", probed(TANH_U),
          prefix="tanh_uniform", group=GROUP),
    Sweep("saturation-glorot", "5 tanh layers, Glorot uniform init, signal probe on",
          probed(TANH_GLOROT), prefix="tanh_glorot", group=GROUP),
    Saturation("saturation", "Saturated tanh units per layer over epochs, U(0,1) vs Glorot",
               uses=tuple(n for n, _ in SATURATION_PAIR),
               labels=tuple(lab for _, lab in SATURATION_PAIR), reported="figure",
               plot_title="5 hidden tanh layers of 5 units", group=GROUP),
    DeadUnits("dead-relu", "Dead ReLU units per layer, ReLU/He with 1-25 hidden layers",
              probed(RELU_HE), depths=tuple(range(1, 26)), seeds=tuple(range(10)),
              prefix="relu_he", reported="15 layers still learns, 20 no longer does",
              plot_title="ReLU/He, width 5", group=GROUP),
)


def render(out: Path) -> list[str]:
    """The group's part of ``OUT/README.md``: its heading, introduction and the section of
    each experiment present in ``out`` ([] when none is)."""
    return group_report(HEADING, INTRO, EXPERIMENTS, out)
