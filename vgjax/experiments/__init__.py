"""The tutorial's experiments, its five extensions and the signal-propagation studies, as
named configurations.

Each sweep-shaped experiment is one grid (one compiled program) of seeds x depths x widths
(x learning rates x sigma_w^2 x sigma_b^2 where it names those axes). ``gradients`` and
``weight-norms`` train nothing of their own: they read the ``deep-tanh`` and ``deep-relu``
sweeps (which record test-set gradients, as the tutorial's Keras callback did) and draw their
figures. Figure-only studies (``theory``, ``jacobian-spectra``, ``signal-propagation``)
compute at initialisation and train nothing.

Experiments come in groups: ``tutorial`` (what ``vgjax reproduce`` runs by default) and
``signal`` (theory beside measurement, issue #12; ``vgjax reproduce --group signal``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vgjax.config import Config, Grid, check_choice
# A run "learns" when it did not diverge and its final test accuracy is >= 0.7 (chance is
# 0.5; the tutorial's working models reach 0.82-0.84 and its failing one 0.47). Defined
# once, in vgjax.result; re-exported because the experiments are judged by it.
from vgjax.result import LEARN_THRESHOLD  # noqa: F401

# Histograms every 25 epochs (20 per run) keep the TensorBoard logs of a whole reproduction
# to a few GB; `vgjax sweep --hist-every 1` gives the tutorial's every-epoch histograms.
_HIST_EVERY = 25

GROUPS = ("tutorial", "signal")

TANH_U = Config(activation="tanh", init="uniform", output_init="uniform", hist_every=_HIST_EVERY)
RELU_HE = Config(activation="relu", init="he_uniform", output_init="glorot_uniform",
                 hist_every=_HIST_EVERY)

# The trainability phase diagram (Schoenholz et al. 2017, Fig. 5, on offline data): tanh,
# Gaussian N(0, sigma_w^2/fan_in) weights, sigma_b^2 = 0.05, on scikit-learn's digits (the
# first 600 images: 500 to train, 100 to test), Adam (Schoenholz et al. also train with
# RMSProp) for 8 epochs of 20 steps. One seed: sized to run in about 20 minutes on the 2-core
# reference machine (results/README.md gives the measured time); the vmap engine computes
# every run to the grid's largest depth, so the cost is runs x 60 layers.
PHASE_WIDTH = 64
PHASE_DEPTHS = tuple(range(6, 61, 6))
PHASE_WEIGHT_VARS = tuple(round(1.0 + 0.25 * i, 4) for i in range(13))
PHASE = Config(activation="tanh", init="normal", output_init="normal", bias_var=0.05,
               data="digits", n_samples=600, n_train=500, batch_size=25, optimizer="adam",
               lr=0.001, epochs=8, hist_every=0)


def _probed(config: Config) -> Config:
    """``config`` with the signal probe on (per-layer q, saturation, dead units, Jacobian)."""
    return Config(**{**config.to_dict(), "probes": ("signal",)})


@dataclass(frozen=True)
class Experiment:
    """One named experiment.

    config: the protocol (None for figure-only experiments); depths, widths: the grid (the
    seeds come from the command line); prefix: TensorBoard run-name prefix; reported: the
    tutorial's words; reported_acc: its (train, test) accuracy where it gives numbers;
    uses: experiments whose results this one reads; figures: the PNG files it draws into
    ``OUT/NAME/``, in the order the report shows them; lrs, weight_vars, bias_vars: optional
    grid axes (empty: the config's single value); group: one of :data:`GROUPS`.
    """

    name: str
    title: str
    config: Config | None = None
    depths: tuple[int, ...] = (5,)
    widths: tuple[int, ...] = (5,)
    prefix: str = ""
    reported: str = "–"
    reported_acc: tuple[float, float] | None = None
    uses: tuple[str, ...] = field(default=())
    figures: tuple[str, ...] = ("learning_curves.png",)
    lrs: tuple[float, ...] = field(default=())
    weight_vars: tuple[float, ...] = field(default=())
    bias_vars: tuple[float, ...] = field(default=())
    group: str = "tutorial"
    # Fixed seeds of an expensive grid (None: the command line's --seeds).
    seeds: tuple[int, ...] | None = None

    def grid(self, seeds: tuple[int, ...]) -> Grid:
        """The experiment's grid: its own seeds if it fixes them, else ``seeds``."""
        return Grid(tuple(self.seeds if self.seeds is not None else seeds), self.depths, self.widths, self.lrs, self.weight_vars,
                    self.bias_vars)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("dataset", "The two-circles data set (1000 points, noise 0.1)",
               reported="figure", figures=("dataset.png",)),
    Experiment("shallow-tanh", "1 hidden layer of 5 tanh units, U(0,1) init",
               config=TANH_U, depths=(1,), prefix="tanh_uniform",
               reported="Train 0.816, Test 0.816", reported_acc=(0.816, 0.816)),
    Experiment("deep-tanh", "5 hidden tanh layers, U(0,1) init",
               config=Config(**{**TANH_U.to_dict(), "test_gradients": True}), depths=(5,),
               prefix="tanh_uniform", reported="Train 0.530, Test 0.468 (fails)",
               reported_acc=(0.530, 0.468)),
    Experiment("deep-relu", "5 hidden ReLU layers, He uniform init, Glorot output",
               config=Config(**{**RELU_HE.to_dict(), "test_gradients": True}), depths=(5,),
               prefix="relu_he", reported="Train 0.836, Test 0.840",
               reported_acc=(0.836, 0.840)),
    Experiment("relu-depth", "ReLU/He with 1-25 hidden layers", config=RELU_HE,
               depths=tuple(range(1, 26)), prefix="relu_he",
               reported="15 layers still learns, 20 no longer does",
               figures=("depth_study.png", "learning_curves_d15.png", "learning_curves_d20.png")),
    Experiment("gradients", "Per-layer gradients of deep-tanh vs deep-relu",
               reported="tanh first layer ~0.05-0.1, ReLU first layer ~0.2-0.4, "
                        "output layer most active", uses=("deep-tanh", "deep-relu"),
               figures=("layer_gradients.png", "layer_gradients_test.png", "gradient_profile.png")),
    Experiment("xavier-tanh", "5 tanh layers, Glorot (Xavier) uniform init (extension 1)",
               config=Config(**{**TANH_U.to_dict(), "init": "glorot_uniform",
                                "output_init": "glorot_uniform"}),
               depths=(5,), prefix="tanh_glorot"),
    Experiment("adam-tanh", "5 tanh layers, U(0,1) init, Adam lr 0.001 (extension 2)",
               config=Config(**{**TANH_U.to_dict(), "optimizer": "adam", "lr": 0.001}),
               depths=(5,), prefix="tanh_uniform_adam"),
    Experiment("weight-norms", "L1 norm of each layer's kernel per epoch, tanh vs ReLU "
               "(extension 3)", uses=("deep-tanh", "deep-relu"), figures=("weight_norms.png",)),
    Experiment("tanh-depth", "tanh U(0,1) with 1-10 hidden layers (extension 4)",
               config=TANH_U, depths=tuple(range(1, 11)), prefix="tanh_uniform",
               figures=("depth_study.png",)),
    Experiment("tanh-breadth", "tanh U(0,1), widths 5-25 x 1-10 hidden layers (extension 5)",
               config=TANH_U, depths=tuple(range(1, 11)), widths=(5, 10, 15, 20, 25),
               prefix="tanh_uniform", figures=("heatmap.png", "depth_study.png")),
    # ---- signal propagation: theory beside measurement (issue #12)
    Experiment("theory", "Mean-field q*, chi1, xi_c against sigma_w^2; the order-to-chaos line",
               reported="Poole et al. 2016, Schoenholz et al. 2017", group="signal",
               figures=("mean_field.png", "order_chaos.png")),
    Experiment("jacobian-spectra", "Input-output Jacobian spectra at initialisation, width 128",
               reported="Pennington et al. 2017", group="signal",
               figures=("spectra.png", "mean_sq.png")),
    Experiment("signal-propagation", "Measured q^l and gradient norms per layer vs the "
               "mean-field theory, tanh width 256, ordered/critical/chaotic",
               reported="Poole et al. 2016, Schoenholz et al. 2017", group="signal",
               figures=("q_per_layer.png", "grad_per_layer.png")),
    Experiment("phase-diagram", "Training accuracy over sigma_w^2 x depth on digits, tanh, "
               "with 6 xi_c", config=PHASE, depths=PHASE_DEPTHS, widths=(PHASE_WIDTH,),
               weight_vars=PHASE_WEIGHT_VARS, seeds=(0,), prefix="tanh_normal",
               reported="Schoenholz et al. 2017: trainable to depth ~ 6 xi_c", group="signal",
               figures=("phase_diagram.png",)),
    # trained with the signal probe on (vmap engine), so the saturation and dead-unit shares
    # of every hidden layer are recorded at init and per epoch (issue #12).
    Experiment("saturation-uniform", "5 tanh layers, U(0,1) init, signal probe on",
               config=_probed(TANH_U), depths=(5,), prefix="tanh_uniform", group="signal", figures=()),
    Experiment("saturation-glorot", "5 tanh layers, Glorot uniform init, signal probe on",
               config=_probed(Config(**{**TANH_U.to_dict(), "init": "glorot_uniform",
                                        "output_init": "glorot_uniform"})),
               depths=(5,), prefix="tanh_glorot", group="signal", figures=()),
    Experiment("saturation", "Saturated tanh units per layer over epochs, U(0,1) vs Glorot",
               uses=("saturation-uniform", "saturation-glorot"), reported="figure",
               group="signal", figures=("saturation.png",)),
    Experiment("dead-relu", "Dead ReLU units per layer, ReLU/He with 1-25 hidden layers",
               config=_probed(RELU_HE), depths=tuple(range(1, 26)), seeds=tuple(range(10)),
               prefix="relu_he", group="signal",
               reported="15 layers still learns, 20 no longer does",
               figures=("dead_units.png",)),
]}


def in_group(group: str) -> list[str]:
    """Names of the experiments of ``group`` (one of :data:`GROUPS`, or ``"all"``)."""
    check_choice("group", group, GROUPS + ("all",))
    return [n for n, e in EXPERIMENTS.items() if group in ("all", e.group)]


def get(name: str) -> Experiment:
    """The experiment called ``name``; ``ValueError`` with a suggestion otherwise."""
    check_choice("experiment", name, tuple(EXPERIMENTS))
    return EXPERIMENTS[name]


def dependencies(names: list[str]) -> list[str]:
    """``names`` plus the experiments they read, in an order where each comes after those."""
    order: list[str] = []
    for name in names:
        for dep in get(name).uses:
            if dep not in order:
                order.append(dep)
        if name not in order:
            order.append(name)
    return order
