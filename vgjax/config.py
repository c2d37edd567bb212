"""One frozen, validated configuration for a sweep, and the parsing of integer ranges.

A :class:`Config` or :class:`Grid` checks every field when it is built (``__post_init__``,
so also after ``dataclasses.replace``): a bad value fails at once, before anything is compiled
or written, with a one-line ``ValueError`` naming the field, the value and what is allowed.
Callables are only checked for their kind here; tracing them on tiny shapes is the step's job
(:func:`vgjax.step.check_parts`, which :func:`vgjax.grid.plan.make_plan` calls before
compiling), so this module needs no JAX.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from vgjax.data import ArrayData, as_array_data, data_dims

ACTIVATIONS = ("tanh", "relu", "sigmoid", "elu", "selu", "gelu", "leaky_relu", "linear")
# "normal" (N(0, sigma_w^2 / fan_in)) and "symmetric_uniform" (same variance) are the
# variance-scaling schemes of signal-propagation studies; "random_walk" is Sussillo & Abbott's
# N(0, g^2 / fan_in) with an activation-dependent gain g; the rest are Keras's.
INITIALISERS = (
    "uniform",
    "he_uniform",
    "glorot_uniform",
    "lecun_normal",
    "he_normal",
    "glorot_normal",
    "lecun_uniform",
    "orthogonal",
    "normal",
    "symmetric_uniform",
    "random_walk",
)
# Sussillo & Abbott's random-walk gain is known for these activations only
# (vgjax.model.random_walk_gain).
RANDOM_WALK_ACTIVATIONS = ("linear", "relu", "tanh")
# Residual connections (Config.residual, Grid.residuals): off, alpha = 1/sqrt(depth), ReZero's
# learnable alpha initialised to 0; a positive number is a fixed alpha. Normalisation of the
# pre-activations (Config.norm, Grid.norms). Per-run values of a grid (vgjax.model.Arch).
RESIDUALS = ("none", "inv_sqrt_depth", "rezero")
NORMS = ("none", "layer", "batch")
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("bce", "softmax_ce")
DATASETS = ("circles", "moons", "digits")
# Probes recorded during training (by every engine; plain MLPs only): "signal" = per-layer
# q^l, saturation and dead units per epoch and at init, and the input-output Jacobian at
# histogram epochs.
PROBES = ("signal",)
# Objects (callables, optax transformations, arrays) are recorded in JSON by a description
# that starts with this; such a config can be loaded and shown but not trained again.
CUSTOM = "custom:"

MAX_DEPTH = 256
MAX_WIDTH = 1024
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Config:
    """Everything that defines a sweep except the grid of seeds, depths and widths.

    The defaults are the tutorial's Keras protocol: SGD(lr=0.01, momentum=0.9), batch 32,
    500 epochs, ``make_circles(1000, noise=0.1, random_state=1)`` scaled to [-1, 1], first
    500 points for training.

    Pluggable parts take a name or an object:

    * ``activation``: a name of :data:`ACTIVATIONS` or any JAX-traceable callable
      ``[...] -> [...]`` (e.g. ``jax.nn.swish``);
    * ``optimizer``: ``"sgd"`` (Keras SGD with ``momentum``), ``"adam"`` (Keras's Adam,
      :func:`vgjax.step.keras_adam`), an ``optax.GradientTransformation`` (then the learning
      rate is its own and ``lr``/``lrs`` are not used), or a factory ``lr ->
      GradientTransformation`` (the ``lrs`` grid axis works: ``lr`` may be traced);
    * ``loss``: ``None`` (binary cross-entropy for two classes, softmax cross-entropy for
      more), ``"bce"``, ``"softmax_ce"`` or a callable ``(logits [B] or [B, C], labels [B])
      -> per-example loss [B]``;
    * ``data``: ``"circles"``, ``"moons"``, ``"digits"`` or arrays ``(x_train [N, F],
      y_train [N], x_test [M, F], y_test [M])``; with arrays, ``n_train`` and ``n_samples``
      are taken from them.

    ``weight_var`` (sigma_w^2 > 0) and ``bias_var`` (sigma_b^2 >= 0) set the initial scale
    (see :func:`vgjax.model.init_params`); :class:`Grid` can make each a per-run axis.

    ``residual`` and ``norm`` choose the architecture of the hidden layers
    (:class:`vgjax.model.MaskedMLP`; :class:`Grid` can make each a per-run axis):
    ``residual`` "none" (the plain MLP), a fixed branch scale alpha > 0, "inv_sqrt_depth"
    (alpha = 1/sqrt(depth)) or "rezero" (a learnable alpha per block, initialised to 0):
    every hidden layer after the first is ``h + alpha * phi(Norm(W h + b))``; ``norm``
    "none", "layer" (LayerNorm) or "batch" (BatchNorm) on the pre-activations. The wide and
    vmap engines train them (the fast engine the plain MLP only).
    """

    activation: str | Callable = "relu"
    init: str = "he_uniform"
    # None means "the same as ``init``" (the tutorial's tanh models); its ReLU models use
    # Keras's default, glorot_uniform, for the output layer.
    output_init: str | None = None
    optimizer: Any = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    epochs: int = 500
    batch_size: int = 32
    n_samples: int = 1000
    noise: float = 0.1
    data_seed: int = 1
    n_train: int = 500
    # Kernel histograms (gradients and weights) every ``hist_every`` epochs; 0 turns them off.
    hist_every: int = 10
    # Also compute each epoch's gradients on the test set, as the tutorial's callback did.
    test_gradients: bool = False
    loss: str | Callable | None = None
    data: Any = "circles"
    weight_var: float = 1.0
    bias_var: float = 0.0
    # Probes recorded during training (names from PROBES; empty = none, the default). Static:
    # a probe adds work to the compiled program, so it keys the compile cache.
    probes: tuple[str, ...] = ()
    residual: str | float = "none"
    norm: str = "none"

    def __post_init__(self):
        if isinstance(self.probes, (list, tuple)):  # JSON lists; a tuple keeps it hashable
            object.__setattr__(self, "probes", tuple(self.probes))
        if isinstance(self.residual, int) and not isinstance(self.residual, bool):
            object.__setattr__(self, "residual", float(self.residual))  # 1 and 1.0: one config
        # Arrays become a hashable, content-addressed ArrayData (the compile cache keys on
        # the config), and fix n_train / n_samples.
        arrays = as_array_data(self.data)
        if arrays is not None:
            object.__setattr__(self, "data", arrays)
            object.__setattr__(self, "n_train", arrays.n_train)
            object.__setattr__(self, "n_samples", arrays.n_train + arrays.n_test)
        _check_config(self)

    @property
    def resolved_output_init(self) -> str:
        """The output layer's initialiser, with ``None`` resolved to ``init``."""
        return self.init if self.output_init is None else self.output_init

    @property
    def plain_architecture(self) -> bool:
        """The plain MLP (no residual connections, no normalisation): what the fast engine
        implements."""
        return self.residual == "none" and self.norm == "none"

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; Keras keeps the final partial batch."""
        return -(-self.n_train // self.batch_size)

    @property
    def data_name(self) -> str:
        """The data set's name, or ``arrays:<digest>`` for user arrays."""
        return describe(self.data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields; objects are recorded by :func:`describe`.

        ``probes`` appears only when some are on (as a list), ``residual`` and ``norm`` only
        when not "none", so the manifests and summaries of sweeps without them are the same
        as before the fields existed (a resumed or rerun experiment compares equal to its
        committed files).
        """
        optional = ("probes", "residual", "norm")
        d = {f.name: describe(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name not in optional}
        if self.probes:
            d["probes"] = list(self.probes)
        for name in ("residual", "norm"):
            if getattr(self, name) != "none":
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


def hist_epochs(config: Config) -> list[int]:
    """1-based epochs that carry histograms: every ``hist_every``-th epoch ([H] list).

    A host-side fact of a config: sweep, pipeline and the result writers read it here.
    """
    if config.hist_every == 0:
        return []
    return list(range(config.hist_every, config.epochs + 1, config.hist_every))


@dataclass(frozen=True)
class Grid:
    """The runs of a sweep: the product seeds x depths x widths x lrs x weight_vars x bias_vars
    x residuals x norms.

    ``lrs`` empty means every run uses ``Config.lr``; a non-empty tuple adds a learning-rate
    axis (useful to study exploding gradients in one program). Likewise ``weight_vars``,
    ``bias_vars``, and the architecture axes ``residuals`` (values of ``Config.residual``)
    and ``norms`` (of ``Config.norm``): plain, residual and normalised runs of one width
    group are one compiled program.
    """

    seeds: tuple[int, ...] = (0,)
    depths: tuple[int, ...] = (1,)
    widths: tuple[int, ...] = (5,)
    lrs: tuple[float, ...] = field(default=())
    # Optional sigma_w^2 and sigma_b^2 axes; empty means the config's single value.
    weight_vars: tuple[float, ...] = field(default=())
    bias_vars: tuple[float, ...] = field(default=())
    # Optional architecture axes; empty means the config's single residual / norm.
    residuals: tuple[str | float, ...] = field(default=())
    norms: tuple[str, ...] = field(default=())

    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON lists; a tuple keeps the grid hashable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if isinstance(self.residuals, tuple):  # 1 and 1.0: one branch scale
            object.__setattr__(self, "residuals", tuple(
                float(r) if isinstance(r, int) and not isinstance(r, bool) else r
                for r in self.residuals))
        _check_grid(self)

    @property
    def n_runs(self) -> int:
        """Number of runs: the product of the axes' lengths (an empty axis counts once)."""
        return math.prod(max(1, len(getattr(self, f.name))) for f in dataclasses.fields(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the lists; ``residuals`` and ``norms`` only when not
        empty, so the manifests of sweeps without them are as before the axes existed."""
        return {k: list(v) for k, v in dataclasses.asdict(self).items()
                if v or k not in ("residuals", "norms")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Grid":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"grid: unknown field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


def describe(value: Any) -> Any:
    """A JSON-able description of a config value: itself for plain values, ``arrays:<digest>``
    for user arrays, ``custom:<module.name>`` for callables and optax transformations."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, ArrayData):
        return value.name
    fn = getattr(value, "func", value)  # functools.partial
    name = getattr(fn, "__qualname__", None) or type(value).__qualname__
    return f"{CUSTOM}{getattr(fn, '__module__', None) or type(value).__module__}.{name}"


def _suggest(value: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"{name}: unknown value {value!r}{_suggest(value, allowed)}; "
            f"allowed: {', '.join(allowed)}"
        )


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is an integer in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not an integer")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}: {value} is out of range; allowed: integers {rng}")


def check_float(name: str, value: Any, *, lo: float, lo_open: bool, hi: float | None = None,
                 hi_open: bool = True) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is a finite number in the interval
    from ``lo`` to ``hi`` (open or closed at each end; no ``hi``: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {value!r} is not a number")
    v = float(value)
    bad = not math.isfinite(v) or (v <= lo if lo_open else v < lo)
    if hi is not None:
        bad = bad or (v >= hi if hi_open else v > hi)
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        allowed = f"finite numbers in {left}{lo}, {hi if hi is not None else 'inf'}{right}"
        raise ValueError(f"{name}: {value!r} is out of range; allowed: {allowed}")


def _check_object(name: str, value: Any, names: tuple[str, ...], what: str) -> None:
    """A name from ``names``, a loaded description of an object, or a callable."""
    if isinstance(value, str):
        if value.startswith(CUSTOM) or value.startswith("arrays:"):
            return  # a loaded config: fine to show; training it again is refused in step.py
        check_choice(name, value, names)
    elif not (callable(value) or hasattr(value, "update")):  # optax transformations
        raise ValueError(f"{name}: {value!r} is neither a name nor {what}; allowed: "
                         f"{', '.join(names)} or {what}")


def _check_config(config: Config) -> None:
    """Check every field of ``config`` (from ``Config.__post_init__``); one-line ``ValueError``.

    User arrays are checked for matching lengths, finite values and at least two classes;
    callables for their kind only (see the module docstring).
    """
    _check_object("activation", config.activation, ACTIVATIONS, "a JAX-traceable callable")
    check_choice("init", config.init, INITIALISERS)
    if config.output_init is not None:
        check_choice("output_init", config.output_init, INITIALISERS)
    if config.init == "random_walk" and config.activation not in RANDOM_WALK_ACTIVATIONS:
        raise ValueError(f"init: 'random_walk' has no gain for activation "
                         f"{describe(config.activation)!r}; allowed: activation "
                         f"{', '.join(RANDOM_WALK_ACTIVATIONS)}, or another init")
    _check_object("optimizer", config.optimizer, OPTIMIZERS,
                  "an optax.GradientTransformation or a factory lr -> GradientTransformation")
    if config.loss is not None:
        _check_object("loss", config.loss, LOSSES, "a callable (logits, labels) -> [B] loss")
    if not isinstance(config.data, ArrayData):
        if not isinstance(config.data, str):
            raise ValueError(f"data: {config.data!r} is not allowed; allowed: "
                             f"{', '.join(DATASETS)} or arrays (x_train, y_train, x_test, y_test)")
        if not config.data.startswith("arrays:"):
            check_choice("data", config.data, DATASETS)
    else:  # before the sizes: n_train and n_samples come from the arrays
        config.data.validate()
    check_float("weight_var", config.weight_var, lo=0.0, lo_open=True)
    check_float("bias_var", config.bias_var, lo=0.0, lo_open=False)
    check_float("lr", config.lr, lo=0.0, lo_open=True)
    check_float("momentum", config.momentum, lo=0.0, lo_open=False, hi=1.0)
    check_int("epochs", config.epochs, 1, 10**7)
    check_int("n_samples", config.n_samples, 2)
    check_int("n_train", config.n_train, 1, config.n_samples - 1)
    check_int("batch_size", config.batch_size, 1, config.n_train)
    check_float("noise", config.noise, lo=0.0, lo_open=False)
    check_int("data_seed", config.data_seed, 0, MAX_SEED)
    check_int("hist_every", config.hist_every, 0, 10**7)
    if not isinstance(config.test_gradients, bool):
        raise ValueError(f"test_gradients: {config.test_gradients!r} is not a boolean")
    if not isinstance(config.probes, tuple):
        raise ValueError(f"probes: {config.probes!r} is not a list of names; allowed: a list "
                         f"of {', '.join(PROBES)}")
    for name in config.probes:
        check_choice("probe", name, PROBES)
    if len(set(config.probes)) != len(config.probes):
        raise ValueError(f"probes: {list(config.probes)} has duplicates; give each name once")
    _check_architecture(config)
    if config.data == "digits":
        check_int("n_samples", config.n_samples, 2, 1797)  # the size of sklearn's digits
    if config.loss == "bce" and not (isinstance(config.data, str) and config.data.startswith("arrays:")):
        n_classes = data_dims(config)[1]
        if n_classes > 2:
            raise ValueError(f"loss: 'bce' needs two classes, the data has {n_classes}; "
                             f"allowed: 'softmax_ce' or a callable")


def _check_architecture(config: Config) -> None:
    """``residual``: a name of :data:`RESIDUALS` or a finite number > 0; ``norm``: one of
    :data:`NORMS`; the signal probe reads the plain MLP's layers, so it needs both off."""
    r = config.residual
    check_residual("residual", r)
    check_choice("norm", config.norm, NORMS)
    if config.probes and not config.plain_architecture:
        raise ValueError(f"probes: {list(config.probes)} read the plain MLP's layers, not "
                         f"residual={r!r} norm={config.norm!r}; allowed: no probes, or "
                         f"residual 'none' and norm 'none'")


def check_residual(name: str, r: Any) -> None:
    """Raise a one-line ``ValueError`` unless ``r`` is a name of :data:`RESIDUALS` or a
    finite number > 0 (a fixed branch scale)."""
    if isinstance(r, str):
        check_choice(name, r, RESIDUALS)
    elif isinstance(r, bool) or not isinstance(r, (int, float)):
        raise ValueError(f"{name}: {r!r} is neither a name nor a number; allowed: "
                         f"{', '.join(RESIDUALS)} or a branch scale > 0")
    else:
        check_float(name, r, lo=0.0, lo_open=True)


def residual_label(r: "str | float") -> str:
    """A residual value as text (the run table's, TensorBoard's): the name, or the fixed
    branch scale as ``%g`` (``"1"``, ``"0.5"``); :func:`parse_residual` reads it back."""
    return r if isinstance(r, str) else f"{float(r):g}"


def parse_residual(text: str) -> str | float:
    """A ``--residual`` value: a name of :data:`RESIDUALS` or a number (a fixed alpha),
    checked; one-line ``ValueError`` otherwise."""
    try:
        value: str | float = float(text)
    except ValueError:
        value = text
    if isinstance(value, str):
        check_choice("residual", value, RESIDUALS)
    else:
        check_float("residual", value, lo=0.0, lo_open=True)
    return value


def _check_grid(grid: Grid) -> None:
    """Check the grid's lists (from ``Grid.__post_init__``): non-empty, integers in range,
    no duplicates."""
    for f in dataclasses.fields(grid):
        if not isinstance(getattr(grid, f.name), tuple):
            raise ValueError(f"{f.name}: {getattr(grid, f.name)!r} is not a list; allowed: a "
                             "tuple or list of numbers")
    for name, values, lo, hi in (
        ("seeds", grid.seeds, 0, MAX_SEED),
        ("depths", grid.depths, 1, MAX_DEPTH),
        ("widths", grid.widths, 1, MAX_WIDTH),
    ):
        if len(values) == 0:
            raise ValueError(f"{name}: the list is empty; give at least one value")
        for v in values:
            check_int(name, v, lo, hi)
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: {list(values)} has duplicates; give each value once")
    for name, values, lo_open in (("lrs", grid.lrs, True), ("weight_vars", grid.weight_vars, True),
                                  ("bias_vars", grid.bias_vars, False)):
        for v in values:
            check_float(name, v, lo=0.0, lo_open=lo_open)
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: {list(values)} has duplicates; give each value once")
    for r in grid.residuals:
        check_residual("residuals", r)
    for n in grid.norms:
        check_choice("norms", n, NORMS)
    for name, values in (("residuals", grid.residuals), ("norms", grid.norms)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: {list(values)} has duplicates; give each value once")


def parse_int_list(name: str, text: str) -> tuple[int, ...]:
    """Parse ``"N"``, ``"A-B"`` (inclusive) or comma lists of those, e.g. ``"1-3,7"``.

    Returns a tuple of ints in the order given. Raises ``ValueError`` naming ``name`` on
    malformed input such as ``"5-1"``, ``"a-b"``, ``"1--3"`` or ``""``.
    """
    allowed = "N, A-B with A <= B, or a comma list of those (e.g. 1-10 or 0,2,4)"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: empty value {text!r}; allowed: {allowed}")
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        pieces = part.split("-")
        try:
            if len(pieces) == 1:
                out.append(int(pieces[0]))
                continue
            if len(pieces) != 2 or not pieces[0] or not pieces[1]:
                raise ValueError
            a, b = int(pieces[0]), int(pieces[1])
        except ValueError:
            raise ValueError(f"{name}: malformed range {part!r} in {text!r}; allowed: {allowed}") from None
        if a > b:
            raise ValueError(f"{name}: range {part!r} runs backwards; allowed: {allowed}")
        if b - a > 1_000_000:
            raise ValueError(f"{name}: range {part!r} is too long; allowed: at most 1000001 values")
        out.extend(range(a, b + 1))
    return tuple(out)


def parse_float_list(name: str, text: str) -> tuple[float, ...]:
    """Parse a comma list of floats such as ``"0.01,0.1,1"``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: empty value {text!r}; allowed: a comma list of numbers")
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"{name}: malformed list {text!r}; allowed: a comma list of numbers") from None
