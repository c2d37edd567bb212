"""The tutorial's two-circles data set from scikit-learn, as float32 arrays."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.datasets import make_circles
from sklearn.preprocessing import MinMaxScaler

from vgjax.config import Config


class Data(NamedTuple):
    """Train and test split.

    x_train: [n_train, 2] float32, y_train: [n_train] float32 in {0, 1};
    x_test: [n_samples - n_train, 2], y_test: [n_samples - n_train].
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_data(config: Config) -> Data:
    """Generate ``make_circles`` points, scale all of them to [-1, 1], then split.

    As in the tutorial, the scaler is fitted on all ``n_samples`` points before the split and
    the first ``n_train`` points are the training set.
    """
    x, y = make_circles(n_samples=config.n_samples, noise=config.noise,
                        random_state=config.data_seed)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x)
    x = x.astype(np.float32)
    y = y.astype(np.float32)
    n = config.n_train
    return Data(x[:n], y[:n], x[n:], y[n:])
