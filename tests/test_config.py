"""Config and Grid check their fields when built, and range parsing: every bad value gets a
one-line error naming it."""

import math

import pytest

import dataclasses
import itertools

from vgjax.config import Config, Grid, parse_float_list, parse_int_list


@pytest.mark.parametrize("text, expected", [
    ("5", (5,)),
    ("1-4", (1, 2, 3, 4)),
    ("0,2,4", (0, 2, 4)),
    ("1-3,7", (1, 2, 3, 7)),
    (" 3 ", (3,)),
])
def test_parse_int_list(text, expected):
    assert parse_int_list("depths", text) == expected


@pytest.mark.parametrize("text", ["", "5-1", "a-b", "1--3", "1-", "-3", "1,,2", "x", "1.5"])
def test_parse_int_list_rejects(text):
    with pytest.raises(ValueError) as err:
        parse_int_list("depths", text)
    msg = str(err.value)
    assert msg.startswith("depths:") and "\n" not in msg and "allowed" in msg


def test_parse_float_list():
    assert parse_float_list("lrs", "0.01,1") == (0.01, 1.0)
    with pytest.raises(ValueError, match="lrs"):
        parse_float_list("lrs", "0.1,abc")


BAD_CONFIGS = [
    ({"epochs": 0}, "epochs"),
    ({"epochs": -3}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 501}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -0.1}, "lr"),
    ({"lr": math.nan}, "lr"),
    ({"lr": math.inf}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"noise": -0.5}, "noise"),
    ({"activation": "relu6"}, "activation"),
    ({"init": "he"}, "init"),
    ({"output_init": "xavier"}, "output_init"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"n_train": 1000}, "n_train"),
    ({"hist_every": -1}, "hist_every"),
    ({"hist_every": 10**8}, "hist_every"),
    ({"epochs": 2.5}, "epochs"),
]


@pytest.mark.parametrize("fields, name", BAD_CONFIGS)
def test_config_rejects_when_built(fields, name):
    with pytest.raises(ValueError) as err:
        Config(**fields)
    msg = str(err.value)
    assert msg.startswith(f"{name}:") and "\n" not in msg
    assert repr(list(fields.values())[0]) in msg or str(list(fields.values())[0]) in msg


def test_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        Config(activation="tahn")


def test_defaults_are_the_tutorial_protocol():
    c = Config()
    assert (c.optimizer, c.lr, c.momentum, c.epochs, c.batch_size) == ("sgd", 0.01, 0.9, 500, 32)
    assert (c.n_samples, c.noise, c.data_seed, c.n_train) == (1000, 0.1, 1, 500)
    assert c.steps_per_epoch == 16
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("fields, name", BAD_CONFIGS[:4])
def test_replace_checks_the_variant(fields, name):
    """dataclasses.replace builds a new Config, so a bad variant fails there too."""
    with pytest.raises(ValueError, match=f"^{name}:"):
        dataclasses.replace(Config(), **fields)


@pytest.mark.parametrize("fields, name", [
    ({"depths": ()}, "depths"),
    ({"depths": (0,)}, "depths"),
    ({"depths": (-2,)}, "depths"),
    ({"widths": (0,)}, "widths"),
    ({"seeds": (-1,)}, "seeds"),
    ({"seeds": (2**31,)}, "seeds"),
    ({"seeds": (1, 1)}, "seeds"),
    ({"lrs": (0.0,)}, "lrs"),
    ({"depths": 3}, "depths"),
])
def test_grid_rejects_when_built(fields, name):
    with pytest.raises(ValueError, match=f"^{name}:") as err:
        Grid(**fields)
    assert "\n" not in str(err.value)


def test_grid_from_dict_and_n_runs():
    g = Grid.from_dict({"seeds": [0, 1], "depths": [1, 2, 3], "widths": [5], "lrs": [],
                        "weight_vars": [1.0, 2.0], "bias_vars": []})
    assert g.seeds == (0, 1) and hash(g) == hash(Grid.from_dict(g.to_dict()))
    axes = [v or [None] for v in g.to_dict().values()]  # empty axis: the config's value
    assert g.n_runs == len(list(itertools.product(*axes))) == 12
    with pytest.raises(ValueError, match="^grid: unknown"):
        Grid.from_dict({"seed": [0]})
