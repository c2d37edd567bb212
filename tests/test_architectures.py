"""Residual connections and normalisation: runs of a padded grid, trained by the Step, against
the same nets built directly with Flax layers (nn.Dense, nn.LayerNorm, nn.BatchNorm) and
trained with optax; the config and CLI checks; the engine choice."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vgjax.config import Config, Grid, parse_residual
from vgjax.model import (BN_MOMENTUM, NORM_EPS, ExactMLP, to_exact_batch_stats,
                         to_exact_params)
from vgjax.step import Batch, make_step

KEY = jax.random.PRNGKey(3)
D, P = 4, 6                               # the grid's padded depth and width
RUNS = ((3, 5), (2, 4))                   # (depth, width) of the runs trained side by side
LR, EPOCHS = 0.1, 2
# 10 examples in batches of 4: the third batch has 2 real examples and 2 of weight 0
X = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (10, 2)), np.float32)
Y = (X[:, 0] * X[:, 1] > 0).astype(np.float32)
X_TEST = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (7, 2)), np.float32)
BATCHES = ((0, 4), (4, 8), (8, 10))

# (residual, norm, activation): a fixed alpha with LayerNorm, ReZero with BatchNorm (one
# compiled program each; 1/sqrt(depth) is checked on the forward pass below)
CASES = [(0.5, "layer", "tanh"), ("rezero", "batch", "relu")]


def _padded_batches():
    """[S, 4] indices and weights of the epoch's batches (the short one padded)."""
    idx = np.zeros((len(BATCHES), 4), np.int32)
    w = np.zeros((len(BATCHES), 4), np.float32)
    for s, (a, b) in enumerate(BATCHES):
        idx[s, :b - a], w[s, :b - a] = np.arange(a, b), 1.0
    return jnp.asarray(idx), jnp.asarray(w)


def _train_grid(config: Config):
    """Both runs of RUNS in one padded (D, P) program: init, EPOCHS x BATCHES steps of
    Step.train_step, then the test logits in evaluation mode. One compilation."""
    step = make_step(config, max_depth=D, p=P)
    idx, w = _padded_batches()
    x, y = jnp.asarray(X), jnp.asarray(Y)

    def one_run(depth, width):
        state = step.init(KEY, depth, width)
        start = state

        def body(state, b):
            state, out = step.train_step(state, Batch(x[b[0]], y[b[0]], b[1]))
            return state, out.loss
        state, losses = jax.lax.scan(body, state, (jnp.tile(idx, (EPOCHS, 1)),
                                                   jnp.tile(w, (EPOCHS, 1))))
        logits = step.apply(state.params, jnp.asarray(X_TEST), depth, width,
                            state.batch_stats)
        return start, state, losses, logits

    depths = jnp.array([d for d, _ in RUNS])
    widths = jnp.array([wd for _, wd in RUNS])
    return jax.jit(jax.vmap(one_run))(depths, widths)


def _train_flax(config: Config, start_params, depth: int, width: int):
    """The same run built with Flax layers (ExactMLP: nn.Dense, nn.LayerNorm, nn.BatchNorm
    with Keras's momentum and epsilon) and trained by optax's SGD; the short batch is just
    its real examples. One compiled program (the steps unrolled)."""
    exact = ExactMLP(depth=depth, width=width, activation=config.activation,
                     residual=config.residual, norm=config.norm)
    shapes = jax.eval_shape(exact.init, jax.random.PRNGKey(0), X[:4])
    params = to_exact_params(start_params, depth, width)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(shapes["params"])
    # Flax's initial running averages: mean 0, var 1
    stats = None
    if "batch_stats" in shapes:
        stats = {k: {"mean": np.zeros(width, np.float32), "var": np.ones(width, np.float32)}
                 for k in shapes["batch_stats"]}
        assert jax.tree.structure(stats) == jax.tree.structure(shapes["batch_stats"])
    tx = optax.sgd(LR, momentum=config.momentum)

    def loss_fn(p, stats, xb, yb):
        if stats is None:
            logits, new = exact.apply({"params": p}, xb, train=True), None
        else:
            logits, upd = exact.apply({"params": p, "batch_stats": stats}, xb, train=True,
                                      mutable=["batch_stats"])
            new = upd["batch_stats"]
        return optax.sigmoid_binary_cross_entropy(logits, yb).mean(), new

    @jax.jit
    def train_step(params, stats, opt, xb, yb):
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, xb, yb)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), stats, opt, loss

    opt, losses = tx.init(params), []
    for _ in range(EPOCHS):
        for a, b in BATCHES:
            params, stats, opt, loss = train_step(params, stats, opt, X[a:b], Y[a:b])
            losses.append(loss)
    variables = {"params": params} | ({} if stats is None else {"batch_stats": stats})
    logits = jax.jit(lambda v: exact.apply(v, X_TEST, train=False))(variables)
    return jax.device_get((params, stats, np.stack(losses), logits))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def trained(request):
    residual, norm, act = request.param
    config = Config(activation=act, init="glorot_uniform", lr=LR, momentum=0.9,
                    bias_var=0.05, residual=residual, norm=norm)
    return config, jax.device_get(_train_grid(config))


def _run(tree, r):
    return None if tree is None else jax.tree.map(lambda a: a[r], tree)


def test_grid_runs_equal_flax_nets(trained):
    """The losses, final parameters (kernels, biases, norm scale/offset, ReZero's alpha),
    BatchNorm running averages and evaluation logits of the run of depth 3 < D and width 5
    < P, trained beside another run, equal the Flax net's."""
    config, (start, state, losses, logits) = trained
    for r, (depth, width) in enumerate(RUNS[:1]):
        params, stats, ref_losses, ref_logits = _train_flax(config, _run(start.params, r),
                                                            depth, width)
        np.testing.assert_allclose(losses[r], ref_losses, rtol=2e-5, atol=1e-6)
        ours = to_exact_params(_run(state.params, r), depth, width)["params"]
        for path, a, b in zip(jax.tree_util.tree_leaves_with_path(ours),
                              jax.tree.leaves(ours), jax.tree.leaves(params)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6, err_msg=str(path[0]))
        if config.norm == "batch":
            got = to_exact_batch_stats(_run(state.batch_stats, r), depth, width)
            for a, b in zip(jax.tree.leaves(got["batch_stats"]), jax.tree.leaves(stats)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(logits[r], ref_logits, rtol=1e-4, atol=2e-5)


def test_absent_layers_and_units_stay_untouched(trained):
    """Layers a run lacks and its padding units keep their initial values: the extra
    parameters get zero gradient and BatchNorm's running averages do not move there."""
    config, (start, state, _, _) = trained
    for r, (depth, width) in enumerate(RUNS):
        for name in ("norm_scale", "norm_offset", "kernels", "biases"):
            a, b = np.asarray(state.params[name][r]), np.asarray(start.params[name][r])
            np.testing.assert_array_equal(a[depth:], b[depth:])
            np.testing.assert_array_equal(a[:, width:], b[:, width:])
        if config.residual == "rezero":
            alpha = np.asarray(state.params["res_alpha"][r])
            assert np.all(alpha[depth:] == 0) and alpha[0] == 0   # layer 0: no branch
            assert np.all(alpha[1:depth] != 0)                    # ReZero's alphas learn
        if config.norm == "batch":
            for k, init in (("mean", 0.0), ("var", 1.0)):
                s = np.asarray(state.batch_stats[k][r])
                assert np.all(s[depth:] == init) and np.all(s[:, width:] == init)
                assert np.all(s[:depth, :width] != init)


def test_inv_sqrt_depth_forward_equals_flax_net():
    """alpha = 1/sqrt(depth) of each run (not of the padded stack): runs of depths 3 and 2
    in a stack of D = 4 equal their Flax nets (one compiled forward pass)."""
    config = Config(activation="tanh", init="glorot_uniform", bias_var=0.05,
                    residual="inv_sqrt_depth")
    step = make_step(config, max_depth=D, p=P)

    @jax.jit
    def forward(d, w):
        params = step.init(KEY, d, w).params
        return params, step.apply(params, jnp.asarray(X), d, w)

    for depth, width in RUNS:
        params, logits = jax.device_get(forward(depth, width))
        exact = to_exact_params(params, depth, width)
        ref = jax.jit(lambda p: (
            ExactMLP(depth=depth, width=width, activation="tanh",
                     residual="inv_sqrt_depth").apply(p, X),
            ExactMLP(depth=depth, width=width, activation="tanh").apply(p, X)))(exact)
        np.testing.assert_allclose(logits, ref[0], rtol=1e-5, atol=1e-6)
        assert not np.allclose(logits, ref[1])                 # the residual counts


def test_keras_constants():
    # Keras's BatchNormalization(momentum=0.99, epsilon=1e-3), LayerNormalization(1e-3)
    assert (BN_MOMENTUM, NORM_EPS) == (0.99, 1e-3)


@pytest.mark.parametrize("fields, message", [
    (dict(residual="skip"), "residual: unknown value 'skip'"),
    (dict(residual=0.0), "residual: 0.0 is out of range"),
    (dict(residual=True), "residual: True is neither a name nor a number"),
    (dict(norm="group"), "norm: unknown value 'group'"),
    (dict(norm="layer", probes=("signal",)), "probes: ['signal'] read the plain MLP"),
])
def test_bad_architectures_are_refused(fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        Config(**fields)
    assert "\n" not in str(e.value)


def test_architecture_fields_round_trip_and_stay_out_of_plain_manifests():
    assert "residual" not in Config().to_dict() and "norm" not in Config().to_dict()
    c = Config(residual=1, norm="batch")
    assert c.residual == 1.0 and Config.from_dict(c.to_dict()) == c
    assert c.to_dict()["residual"] == 1.0 and c.to_dict()["norm"] == "batch"
    assert parse_residual("rezero") == "rezero" and parse_residual("0.25") == 0.25
    with pytest.raises(ValueError, match="residual: -1.0 is out of range"):
        parse_residual("-1")


def test_the_fast_engine_refuses_architectures():
    from vgjax.engines import check_engine, choose_engine
    from vgjax.grid.plan import default_mesh
    mesh = default_mesh(jax.devices()[:1])
    for config in (Config(residual="rezero"), Config(norm="layer"), Config(norm="batch")):
        assert choose_engine(config, 16, mesh) == "wide"
        assert choose_engine(config, 4, mesh) == "wide"      # the fast engine's widths
        with pytest.raises(ValueError, match="engine: 'fast' trains the plain MLP"):
            check_engine(config, "fast")
        check_engine(config, "wide")
        check_engine(config, "vmap")
    assert choose_engine(Config(), 4, mesh) == "fast"


def test_cli_sweep_trains_architectures_and_shows_them(tmp_path, capsys):
    """``vgjax sweep --residual none,rezero --norm batch``: one norm for the sweep, the
    residual a grid axis (one program, the wide engine; evaluation reads the running
    averages). The summary records both, the TensorBoard run names and ``vgjax show`` name
    each run's architecture, and the training loss falls."""
    import json

    from vgjax import cli
    out = tmp_path / "out"
    argv = ["sweep", "--activation", "relu", "--residual", "none,rezero", "--norm", "batch",
            "--depths", "2", "--widths", "4", "--seeds", "0", "--epochs", "3",
            "--hist-every", "0", "--lr", "0.05", "--out", str(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["norm"] == "batch" and "residual" not in summary["config"]
    assert summary["grid"]["residuals"] == ["none", "rezero"] and "norms" not in summary["grid"]
    assert [(r["residual"], r["norm"]) for r in summary["runs"]] == [("none", "batch"),
                                                                     ("rezero", "batch")]
    assert [g["residual"] for g in summary["groups"]] == ["none", "rezero"]
    names = sorted(p.parent.name + "/" + p.name for p in (out / "tensorboard").glob("*/seed*"))
    assert names == ["relu_he_uniform_batchnorm_d02_w04_resnone/seed00",
                     "relu_he_uniform_batchnorm_d02_w04_resrezero/seed00"]
    capsys.readouterr()
    assert cli.main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "architecture: norm batch" in shown and "residual" in shown and "rezero" in shown
    assert not any(r["diverged"] for r in summary["runs"])
    with np.load(out / "history.npz", allow_pickle=False) as z:
        loss = z["train_loss"]
        assert z["run_residual"].tolist() == ["none", "rezero"]
    assert np.all(np.isfinite(loss)) and np.all(loss[:, -1] < loss[:, 0])


@pytest.mark.parametrize("argv, message", [
    (["--residual", "none,skip"], "residual: unknown value 'skip'"),
    (["--residual", "1,0"], "residual: 0.0 is out of range"),
    (["--norm", "layer,group"], "norm: unknown value 'group'"),
    (["--norm", "layer,layer"], "norms: ['layer', 'layer'] has duplicates"),
    (["--residual", "1,1.0"], "residuals: [1.0, 1.0] has duplicates"),
])
def test_bad_architecture_axes_are_refused_in_one_line(tmp_path, capsys, argv, message):
    from vgjax import cli
    out = tmp_path / "out"
    assert cli.main(["sweep", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_architecture_axes_round_trip_and_stay_out_of_plain_manifests():
    assert "residuals" not in Grid().to_dict() and "norms" not in Grid().to_dict()
    g = Grid(residuals=("none", 1, "rezero"), norms=("layer",))
    assert g.residuals == ("none", 1.0, "rezero") and Grid.from_dict(g.to_dict()) == g
    assert g.n_runs == 3
    with pytest.raises(ValueError, match="residuals: -1.0 is out of range") as e:
        Grid(residuals=(-1,))
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------
# The wide engine: residual and normalised runs inside one grid of every architecture, against
# the reference engine (jax.grad of the Step, itself checked against Flax above).

MIXED = dict(seeds=(0,), depths=(2, 3), widths=(4, 6),
             residuals=("none", 0.5, "inv_sqrt_depth", "rezero"), norms=("none", "layer", "batch"))


def _mixed_config(**kw) -> Config:
    # 40 training points in batches of 16: the third batch is short (8 real examples), so
    # BatchNorm's statistics over the real examples only are checked too
    return Config(activation="tanh", init="glorot_uniform", lr=0.05, bias_var=0.05, epochs=1,
                  hist_every=0, n_samples=60, n_train=40, batch_size=16, **kw)


def _engines_agree(wide, ref, *, rtol=1e-4, atol=1e-6):
    for k, v in ref.history.items():
        if k.endswith("_hist"):   # a count may cross a bucket edge by rounding
            assert np.abs(wide.history[k].astype(np.int64) - v).sum() <= 4, k
        else:
            np.testing.assert_allclose(wide.history[k], v, rtol=rtol, atol=atol, err_msg=k)
    assert sorted(wide.params) == sorted(ref.params)
    for k, v in ref.params.items():
        np.testing.assert_allclose(wide.params[k], v, rtol=rtol, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def mixed():
    """The mixed grid (12 architectures x 2 depths x 2 widths) trained by the wide engine
    (counting the programs compiled) and by the reference engine, fused SGD."""
    from vgjax.grid.plan import make_plan
    from vgjax.run import chunks
    from vgjax.run.chunks import sweep
    config = _mixed_config()
    before = chunks._compile.cache_info().misses
    wide = sweep(config, engine="wide", keep_params=True, **MIXED)
    compiled = chunks._compile.cache_info().misses - before
    ref = sweep(config, engine="vmap", keep_params=True, **MIXED)
    plan = make_plan(config, Grid(**MIXED))
    return wide, ref, compiled, plan


def test_wide_engine_equals_the_reference_in_a_mixed_grid(mixed):
    """Every history array and final parameter (kernels, biases, norm scale and offset,
    ReZero's alphas, BatchNorm's running averages) of all 48 runs equal the reference
    engine's to float32 rounding."""
    wide, ref, _, _ = mixed
    _engines_agree(wide, ref)
    a = wide.params["res_alpha"][wide.runs.residual == "rezero"]
    assert np.all(a[:, 0] == 0) and np.all(a[:, 1] != 0)   # layer 1 has no branch; 2 learns
    bn = wide.runs.norm == "batch"
    assert np.all(wide.params["batch_var"][bn][:, 0, :4] != 1.0)        # running averages moved
    assert np.all(wide.params["batch_var"][~bn] == 1.0)                 # ... only with BatchNorm


def test_a_mixed_grid_is_one_program_per_width_group(mixed):
    wide, _, compiled, plan = mixed
    assert plan.engine == "wide" and compiled == len(plan.groups) == 1
    assert plan.features == (True, True, True, True)
    names = {(r, n) for r, n in zip(wide.runs.residual.tolist(), wide.runs.norm.tolist())}
    assert len(names) == 12 and ("0.5", "layer") in names
    # the architectures are told apart: they differ where they should
    loss = wide.history["train_loss"][:, 0]
    deep = wide.runs.depth == 3
    plain = deep & (wide.runs.residual == "none") & (wide.runs.norm == "none")
    assert len(set(np.round(loss[deep], 6))) > 6 and plain.sum() == 2


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "optax"])
def test_wide_engine_equals_the_reference_with_adam_and_optax(optimizer):
    """Fused Keras Adam and an optax transformation applied to the gradient pytree. Adam
    without BatchNorm: biases in front of BatchNorm have zero gradient up to rounding,
    which Adam's normalised step turns into steps of size lr in any direction."""
    from vgjax.run.chunks import sweep
    if optimizer == "adam":
        config, grid = _mixed_config(optimizer="adam"), dict(MIXED, norms=("none", "layer"))
    else:
        tx = lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr, momentum=0.9))
        config, grid = _mixed_config(optimizer=tx), MIXED
    wide = sweep(config, engine="wide", keep_params=True, **grid)
    ref = sweep(config, engine="vmap", keep_params=True, **grid)
    _engines_agree(wide, ref)
