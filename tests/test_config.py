"""Config validation and range parsing: every bad value gets a one-line error naming it."""

import math

import pytest

from vgjax.config import Config, Grid, parse_float_list, parse_int_list, validate, validate_grid


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
def test_validate_rejects(fields, name):
    with pytest.raises(ValueError) as err:
        validate(Config(**fields))
    msg = str(err.value)
    assert msg.startswith(f"{name}:") and "\n" not in msg
    assert repr(list(fields.values())[0]) in msg or str(list(fields.values())[0]) in msg


def test_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        validate(Config(activation="tahn"))


def test_defaults_are_the_tutorial_protocol():
    c = validate(Config())
    assert (c.optimizer, c.lr, c.momentum, c.epochs, c.batch_size) == ("sgd", 0.01, 0.9, 500, 32)
    assert (c.n_samples, c.noise, c.data_seed, c.n_train) == (1000, 0.1, 1, 500)
    assert c.steps_per_epoch == 16
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("grid, name", [
    (Grid(depths=()), "depths"),
    (Grid(depths=(0,)), "depths"),
    (Grid(depths=(-2,)), "depths"),
    (Grid(widths=(0,)), "widths"),
    (Grid(seeds=(-1,)), "seeds"),
    (Grid(seeds=(2**31,)), "seeds"),
    (Grid(seeds=(1, 1)), "seeds"),
    (Grid(lrs=(0.0,)), "lrs"),
])
def test_validate_grid_rejects(grid, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        validate_grid(grid)
