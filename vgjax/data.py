"""Data sets as float32 arrays: the tutorial's two circles, moons, scikit-learn's digits, or
any arrays a user passes.

Labels are float32 class indices (0/1 for two classes, 0..C-1 for C classes); inputs are
float32 [N, F]. Everything is offline: digits ships inside scikit-learn.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from vgjax.config import Config

# (input width F, classes C) of the built-in data sets, known without generating them.
BUILTIN_DIMS = {"circles": (2, 2), "moons": (2, 2), "digits": (64, 10)}


class Data(NamedTuple):
    """Train and test split.

    x_train: [n_train, F] float32, y_train: [n_train] float32 class indices;
    x_test: [n_samples - n_train, F], y_test: [n_samples - n_train].
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class ArrayData:
    """User arrays as a config value: hashable and equal by content (a SHA-256 digest), so a
    config holding them keys the compile cache like any other.

    Iterates as ``(x_train, y_train, x_test, y_test)`` like :class:`Data`. Checked by
    :meth:`validate` (called when a :class:`vgjax.config.Config` holding them is built), not on
    construction.
    """

    def __init__(self, x_train, y_train, x_test, y_test):
        self.arrays = Data(*(np.asarray(a) for a in (x_train, y_train, x_test, y_test)))
        h = hashlib.sha256()
        for a in self.arrays:
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        self.digest = h.hexdigest()

    name = property(lambda self: f"arrays:{self.digest[:16]}")
    n_train = property(lambda self: int(self.arrays.y_train.shape[0]) if self.arrays.y_train.ndim else 0)
    n_test = property(lambda self: int(self.arrays.y_test.shape[0]) if self.arrays.y_test.ndim else 0)

    def __iter__(self):
        return iter(self.arrays)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ArrayData) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"ArrayData({self.name}, shapes={[a.shape for a in self.arrays]})"

    def validate(self) -> None:
        """One-line ``ValueError`` for mismatched lengths or widths, non-finite values, labels
        that are not class indices 0..C-1, or fewer than two classes."""
        xtr, ytr, xte, yte = self.arrays
        for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(f"data: x_{name} {x.shape} and y_{name} {y.shape} do not match; "
                                 f"allowed: x [N, F] and y [N] with N >= 1")
            for a, what in ((x, f"x_{name}"), (y, f"y_{name}")):
                if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
                    raise ValueError(f"data: {what} holds NaN/Inf or non-numbers; allowed: "
                                     f"finite numbers")
            if np.any(y != np.round(y)) or np.any(y < 0):
                raise ValueError(f"data: y_{name} holds {y[(y != np.round(y)) | (y < 0)][0]!r}; "
                                 f"allowed: class indices 0, 1, ..., C-1")
        if xtr.shape[1] != xte.shape[1]:
            raise ValueError(f"data: x_train has {xtr.shape[1]} features, x_test "
                             f"{xte.shape[1]}; allowed: the same width")
        classes = np.unique(ytr)
        if classes.size < 2:
            raise ValueError(f"data: y_train has a single class {classes.tolist()}; allowed: "
                             f"at least two classes")

    def dims(self) -> tuple[int, int]:
        """(input width F, number of classes C = largest label + 1)."""
        xtr, ytr, _, yte = self.arrays
        return int(xtr.shape[1]), int(max(ytr.max(), yte.max())) + 1


def as_array_data(value: Any) -> ArrayData | None:
    """``value`` as :class:`ArrayData` when it is a 4-sequence of arrays, else None."""
    if isinstance(value, ArrayData):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 4:
        try:
            return ArrayData(*value)
        except (TypeError, ValueError):
            return None
    return None


def data_dims(config: "Config") -> tuple[int, int]:
    """(input width F, number of classes C) of the config's data, without generating it."""
    if isinstance(config.data, ArrayData):
        return config.data.dims()
    if config.data not in BUILTIN_DIMS:  # "arrays:<digest>" of a loaded config
        raise ValueError(f"data: {config.data!r} describes the user arrays of a loaded config "
                         f"and cannot be rebuilt from its name; allowed: pass the arrays")
    return BUILTIN_DIMS[config.data]


def make_data(config: "Config") -> Data:
    """The config's data set as float32 arrays, split into train and test.

    * ``circles`` (the tutorial's): ``make_circles(n_samples, noise, random_state=data_seed)``;
    * ``moons``: ``make_moons(n_samples, noise, random_state=data_seed)``;
      both scaled to [-1, 1] with the scaler fitted on all points before the split, as in
      the tutorial, and the first ``n_train`` points are the training set;
    * ``digits``: scikit-learn's 8x8 digit images (64 pixels scaled to [0, 1], 10 classes),
      the first ``n_samples`` of the 1797 in their shipped order, the first ``n_train`` for
      training;
    * arrays: as given (inputs and labels cast to float32).
    """
    if isinstance(config.data, ArrayData):
        return Data(*(a.astype(np.float32) for a in config.data.arrays))
    from sklearn import datasets
    from sklearn.preprocessing import MinMaxScaler

    if config.data == "digits":
        d = datasets.load_digits()
        x, y = d.data[: config.n_samples] / 16.0, d.target[: config.n_samples]
    else:
        make = datasets.make_circles if config.data == "circles" else datasets.make_moons
        x, y = make(n_samples=config.n_samples, noise=config.noise, random_state=config.data_seed)
        x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x)
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    n = config.n_train
    return Data(x[:n], y[:n], x[n:], y[n:])
