"""The recurrent cells against the nets Flax builds directly (nn.RNN over nn.SimpleCell,
nn.LSTMCell, nn.GRUCell with the same weights; stacked nets as nn.RNN layers in sequence),
masking included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgjax.recurrent import cells as rc

N, D, C, B, T_MAX = 8, 3, 2, 4, 12


def _spec(init, scale, forget_bias=1.0, bias_var=0.1):
    return rc.InitSpec(jnp.int32(rc.INITS.index(init)), jnp.float32(scale),
                       jnp.float32(forget_bias), jnp.float32(bias_var))


def _flax_params(cell: str, p: rc.LayerParams) -> dict:
    blocks = lambda w, k: w[..., k * N:(k + 1) * N]
    if cell == "rnn":
        return {"i": {"kernel": p.wx, "bias": p.b}, "h": {"kernel": p.wh}}
    if cell == "lstm":
        # Flax puts the bias on the recurrent Dense; the sum is the same.
        return {**{f"i{g}": {"kernel": blocks(p.wx, k)} for k, g in enumerate("ifgo")},
                **{f"h{g}": {"kernel": blocks(p.wh, k), "bias": blocks(p.b, k)}
                   for k, g in enumerate("ifgo")}}
    return {**{f"i{g}": {"kernel": blocks(p.wx, k), "bias": blocks(p.b, k)}
               for k, g in enumerate("rzn")},
            "hr": {"kernel": blocks(p.wh, 0)}, "hz": {"kernel": blocks(p.wh, 1)},
            "hn": {"kernel": blocks(p.wh, 2), "bias": p.bh}}


FLAX_CELLS = {"rnn": lambda act, **kw: nn.SimpleCell(N, activation_fn=act, **kw),
              "lstm": lambda act, **kw: nn.LSTMCell(N, **kw),
              "gru": lambda act, **kw: nn.GRUCell(N, **kw)}


@pytest.mark.parametrize("cell,activation,init,scale", [
    ("rnn", "tanh", "normal", 1.5), ("rnn", "relu", "identity", 1.0),
    ("lstm", "tanh", "orthogonal", 1.0),
    ("gru", "tanh", "normal", 1.0)])
def test_a_run_is_the_net_flax_builds_with_the_same_weights(cell, activation, init, scale):
    key = jax.random.PRNGKey(3)
    p = rc.init_cell(key, cell, n_inputs=D, width=N, n_outputs=C, spec=_spec(init, scale))
    if cell == "gru":  # a nonzero candidate bias, so its placement is checked too
        p = p._replace(bh=jax.random.normal(jax.random.PRNGKey(9), (N,)))
    xs = jax.random.normal(jax.random.PRNGKey(4), (T_MAX, B, D))
    lengths = (T_MAX, 7)
    got = jax.jit(jax.vmap(lambda n: rc.run(cell, activation, p, xs, n).h))(jnp.array(lengths))
    act = rc.activation_fn(activation)
    rnn = nn.RNN(FLAX_CELLS[cell](act), return_carry=True)
    flax_run = jax.jit(lambda n: rnn.apply({"params": {"cell": _flax_params(cell, p)}},
                                           jnp.swapaxes(xs, 0, 1), seq_lengths=jnp.full((B,), n)))
    for k, length in enumerate(lengths):
        carry, ys = flax_run(length)
        final = carry[1] if cell == "lstm" else carry
        np.testing.assert_allclose(got[k, :length], np.swapaxes(ys, 0, 1)[:length],
                                   rtol=2e-5, atol=2e-6)
        # masked steps hold the carry: the last state is the one after step `length`
        np.testing.assert_allclose(got[k, -1], final, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(rc.readout(p, got[k, -1]), final @ p.wo + p.bo[None],
                                   rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cell,layers", [("rnn", 2), ("lstm", 3), ("gru", 3)])
def test_a_stacked_net_is_flax_rnn_layers_with_the_same_weights(cell, layers):
    """Loss and every parameter's gradient of an L-layer net against L nn.RNN layers in
    sequence and a Dense readout of the top one, inside and past a run's length."""
    p = rc.init_cell(jax.random.PRNGKey(5), cell, n_inputs=D, width=N, n_outputs=C,
                     spec=_spec("orthogonal", 1.1), layers=layers)
    assert rc.n_layers(p) == layers and p.upper.wx.shape == (layers - 1, N, N * rc.GATES[cell])
    if cell == "gru":   # nonzero candidate biases in every layer, so their places are checked
        p = p._replace(bh=jnp.linspace(-0.5, 0.5, N),
                       upper=p.upper._replace(bh=jnp.linspace(0.3, -0.2, (layers - 1) * N)
                                              .reshape(layers - 1, N)))
    xs = jax.random.normal(jax.random.PRNGKey(6), (T_MAX, B, D))
    target = jax.random.normal(jax.random.PRNGKey(7), (T_MAX, B, C))
    length = 9
    inside = (jnp.arange(T_MAX) < length)[:, None, None]

    def ours(q):
        out = rc.readout(q, rc.run(cell, "tanh", q, xs, length).h)
        return jnp.sum(jnp.where(inside, jnp.square(out - target), 0.0)) / (length * B)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):                                    # x [B, T, D]
            for i in range(layers):   # cells built here: their parameters sit at Net's top
                x = nn.RNN(FLAX_CELLS[cell](nn.tanh, name=f"cell{i}"))(
                    x, seq_lengths=jnp.full((B,), length))
            return nn.Dense(C, name="out")(x)

    def to_flax(q):   # linear: it maps a gradient of ours onto Flax's gradient too
        return {**{f"cell{i}": _flax_params(cell, rc.layer(q, i))
                   for i in range(layers)}, "out": {"kernel": q.wo, "bias": q.bo}}

    def theirs(fp):
        out = jnp.swapaxes(Net().apply({"params": fp}, jnp.swapaxes(xs, 0, 1)), 0, 1)
        return jnp.sum(jnp.where(inside, jnp.square(out - target), 0.0)) / (length * B)

    loss, grads = jax.jit(jax.value_and_grad(ours))(p)
    want_loss, want_grads = jax.jit(jax.value_and_grad(theirs))(to_flax(p))
    np.testing.assert_allclose(loss, want_loss, rtol=2e-5)
    got = to_flax(grads)
    assert jax.tree.structure(got) == jax.tree.structure(want_grads)
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        w = dict(jax.tree_util.tree_leaves_with_path(want_grads))[path]
        assert float(jnp.max(jnp.abs(w))) > 0, path        # every parameter gets a gradient
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-6, err_msg=str(path))


def test_a_deeper_net_keeps_the_first_layer_and_readout_of_a_single_layer_one():
    # layers 2..L draw from their own keys, so depth is a grid axis over the same layer 1
    spec = _spec("normal", 1.0, bias_var=0.0)
    one = rc.init_cell(jax.random.PRNGKey(1), "lstm", n_inputs=D, width=N, n_outputs=C,
                       spec=spec)
    three = rc.init_cell(jax.random.PRNGKey(1), "lstm", n_inputs=D, width=N, n_outputs=C,
                         spec=spec, layers=3)
    assert one.upper is None and rc.n_layers(one) == 1
    for a, b in zip(one[:6], three[:6]):
        np.testing.assert_array_equal(a, b)
    # every layer is initialised by the run's spec: forget bias 1 in each LSTM layer
    np.testing.assert_array_equal(np.asarray(three.upper.b).reshape(2, 4, N)[:, 1], 1.0)
    assert not np.array_equal(three.upper.wh[0], three.upper.wh[1])


def test_initialisers_have_the_stated_statistics():
    n = 128
    init = jax.jit(lambda spec: rc.init_cell(jax.random.PRNGKey(0), "lstm", n_inputs=2,
                                             width=n, n_outputs=1, spec=spec))
    for init_name, scale in (("normal", 0.8), ("orthogonal", 1.3), ("identity", 0.9)):
        p = init(_spec(init_name, scale, forget_bias=1.0, bias_var=0.0))
        block = np.asarray(p.wh[:, n:2 * n], np.float64)
        if init_name == "normal":  # N^2 = 16384 draws: the variance to ~1 % (3 sigma 3.3 %)
            assert abs(block.var() * n / scale - 1) < 0.04
        elif init_name == "orthogonal":
            np.testing.assert_allclose(block.T @ block, scale ** 2 * np.eye(n), atol=2e-5)
        else:
            np.testing.assert_array_equal(block, scale * np.eye(n, dtype=np.float32))
        b = np.asarray(p.b).reshape(4, n)
        np.testing.assert_array_equal(b, np.array([0, 1, 0, 0])[:, None] * np.ones(n))
    limit = np.sqrt(6 / (2 + n))
    assert np.abs(np.asarray(p.wx)).max() <= limit and np.abs(np.asarray(p.wx)).max() > 0.95 * limit


def test_orthogonal_is_jaxs_initializer_without_lapack():
    # the same matrix as jax.nn.initializers.orthogonal from the same key (Q with diag(R) > 0
    # is unique), computed with no library call in the program (cells.orthogonal says why)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    got = jax.jit(jax.vmap(lambda k: rc.orthogonal(k, 64)))(keys)
    for k, q in zip(keys, np.asarray(got, np.float64)):
        want = np.asarray(jax.nn.initializers.orthogonal()(k, (64, 64), jnp.float32))
        np.testing.assert_allclose(q, want, atol=2e-5)
        np.testing.assert_allclose(q.T @ q, np.eye(64), atol=2e-5)
    hlo = jax.jit(jax.vmap(lambda k: rc.orthogonal(k, 64))).lower(keys).as_text()
    assert "custom_call" not in hlo


def test_unknown_cell_is_refused_in_one_line():
    with pytest.raises(ValueError, match="cell: 'lstn' is not known; allowed: rnn, lstm, gru"):
        rc.init_cell(jax.random.PRNGKey(0), "lstn", n_inputs=1, width=2, n_outputs=1,
                     spec=_spec("normal", 1.0))
