"""The options the subcommands share, and the Config and Grid fields they give."""

from __future__ import annotations

import argparse

from vgjax.config import (ACTIVATIONS, DATASETS, INITIALISERS, LOSSES, NORMS, OPTIMIZERS,
                          PROBES, RESIDUALS, Config, check_choice, parse_float_list,
                          parse_residual)


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"vgjax: error: {message}\n")


def add_protocol_args(p: argparse.ArgumentParser, *, defaults: Config | None = None) -> None:
    """The flags of every :class:`Config` field (defaults: ``defaults``, else ``Config()``)."""
    d = defaults or Config()
    p.add_argument("--activation", default=d.activation, metavar="NAME",
                   help=f"hidden activation: {', '.join(ACTIVATIONS)} (default {d.activation})")
    p.add_argument("--init", default=d.init, metavar="NAME",
                   help=f"hidden kernel initialiser: {', '.join(INITIALISERS)} (default {d.init})")
    p.add_argument("--output-init", default=d.output_init, metavar="NAME",
                   help="output kernel initialiser (default: same as --init)")
    p.add_argument("--optimizer", default=d.optimizer, metavar="NAME",
                   help=f"{' or '.join(OPTIMIZERS)} (default {d.optimizer})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    p.add_argument("--momentum", type=float, default=d.momentum,
                   help=f"SGD momentum in [0, 1) (default {d.momentum})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"minibatch size, 1..n_train (default {d.batch_size})")
    p.add_argument("--noise", type=float, default=d.noise,
                   help=f"make_circles noise, >= 0 (default {d.noise})")
    p.add_argument("--hist-every", type=int, default=d.hist_every,
                   help=f"histograms every N epochs, 0 = off (default {d.hist_every})")
    p.add_argument("--test-gradients", action="store_true",
                   help="also record each epoch's gradients on the test set")
    p.add_argument("--data", default=d.data_name, metavar="NAME",
                   help=f"data set: {', '.join(DATASETS)} (default {d.data_name})")
    p.add_argument("--loss", default=None, metavar="NAME",
                   help=f"{' or '.join(LOSSES)} (default: bce for two classes, else softmax_ce)")
    p.add_argument("--weight-var", default=None, metavar="LIST",
                   help="sigma_w^2 > 0, a comma list (several values: a grid axis); kernels "
                        "have variance sigma_w^2/fan_in with --init normal or "
                        "symmetric_uniform, other initialisers get gain sqrt(sigma_w^2) "
                        f"(default {d.weight_var})")
    p.add_argument("--bias-var", default=None, metavar="LIST",
                   help="sigma_b^2 >= 0, a comma list (several values: a grid axis); biases "
                        f"drawn N(0, sigma_b^2), 0 keeps zero biases (default {d.bias_var})")
    p.add_argument("--residual", default=None, metavar="LIST",
                   help="residual connections h + alpha * F(h) for the hidden layers after the "
                        f"first: {', '.join(RESIDUALS)} (alpha = 1/sqrt(depth); rezero: a "
                        "learnable alpha from 0) or a fixed alpha > 0; a comma list (several "
                        f"values: a grid axis, one program per width group) (default "
                        f"{d.residual})")
    p.add_argument("--norm", default=None, metavar="LIST",
                   help=f"normalisation of the pre-activations: {', '.join(NORMS)} (LayerNorm, "
                        f"BatchNorm); a comma list (several values: a grid axis) (default "
                        f"{d.norm})")
    p.add_argument("--probe", default=None, metavar="LIST",
                   help=f"probes to record while training, a comma list of: {', '.join(PROBES)} "
                        "(per-layer q, saturation, dead units, input-output Jacobian; "
                        "plain MLPs only; default: none)")


def variance_axes(args: argparse.Namespace) -> tuple[dict, dict]:
    """(Config fields, Grid fields) of --weight-var/--bias-var: one value sets the config,
    several make a grid axis."""
    cfg, grid = {}, {}
    for flag, field in (("weight_var", "weight_var"), ("bias_var", "bias_var")):
        text = getattr(args, flag, None)
        if text is None:
            continue
        values = parse_float_list(flag, text)
        if len(values) == 1:
            cfg[field] = values[0]
        else:
            grid[field + "s"] = values
    return cfg, grid


def architecture_axes(args: argparse.Namespace) -> tuple[dict, dict]:
    """(Config fields, Grid fields) of --residual/--norm: one value sets the config, several
    make a grid axis (``residuals``, ``norms``); each value checked (one-line ValueError)."""
    cfg, grid = {}, {}
    for flag, field in (("residual", "residual"), ("norm", "norm")):
        text = getattr(args, flag, None)
        if text is None:
            continue
        values = tuple(part.strip() for part in text.split(","))
        if flag == "residual":
            values = tuple(parse_residual(v) for v in values)
        else:
            for v in values:
                check_choice("norm", v, NORMS)
        if len(values) == 1:
            cfg[field] = values[0]
        else:
            grid[field + "s"] = values
    return cfg, grid


def config_from(args: argparse.Namespace) -> Config:
    """The :class:`Config` the protocol flags give (checked as it is built)."""
    return Config(activation=args.activation, init=args.init, output_init=args.output_init,
                  optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                  epochs=args.epochs, batch_size=args.batch_size, noise=args.noise,
                  hist_every=args.hist_every, test_gradients=args.test_gradients,
                  data=args.data, loss=args.loss, probes=_probes(args),
                  **architecture_axes(args)[0], **variance_axes(args)[0])


def run_prefix(config: Config) -> str:
    """The default TensorBoard run-name prefix of a sweep: activation and init, then the
    config's architecture where it is not the plain MLP (``tanh_uniform_res0.5_batchnorm``;
    architecture axes are named per run instead, :func:`vgjax.io.tensorboard.run_dir_names`)."""
    prefix = f"{config.activation}_{config.init}"
    if config.residual != "none":
        prefix += f"_res{config.residual:g}" if isinstance(config.residual, float) \
            else f"_{config.residual}"
    if config.norm != "none":
        prefix += f"_{config.norm}norm"
    return prefix


def _probes(args: argparse.Namespace) -> tuple[str, ...]:
    """--probe's comma list (names are checked by config validation)."""
    text = getattr(args, "probe", None)
    return () if text is None else tuple(part.strip() for part in text.split(","))


def add_output_args(p: argparse.ArgumentParser, *, overwrite_help: str) -> None:
    """Options every training subcommand shares: chunking, TensorBoard, overwriting."""
    p.add_argument("--chunk-size", type=int, default=None,
                   help="runs per compiled call (default: chosen from memory)")
    p.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard logs")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Where compiled programs are kept between processes (see vgjax.runtime)."""
    p.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache: a directory, or 'off' (default: "
                   "$VGJAX_CACHE_DIR, else $XDG_CACHE_HOME/vgjax/jax or ~/.cache/vgjax/jax)")


def add_distribution_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``vgjax sweep`` that spread one sweep over processes or machines."""
    g = p.add_argument_group("beyond one machine (see the docs: guides/distributed)")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="array jobs: compute only shard I of N (0 <= I < N) into the shared "
                   "--out; then 'vgjax merge OUT' (or this command without --shard)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-process JAX: address of process 0 (with --num-processes, "
                   "--process-id)")
    g.add_argument("--num-processes", type=int, default=None, help="multi-process JAX: N")
    g.add_argument("--process-id", type=int, default=None,
                   help="multi-process JAX: this process, 0..N-1")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each chunk as a Ray task: 'auto', HOST:PORT, or no value for "
                   "a local Ray instance (pip install 'vgjax[ray]')")
