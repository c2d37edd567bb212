"""Compatibility names for code written before the figures package: new code imports
:mod:`vgjax.figures` (one module per figure kind) and takes ``final_metric`` and
``group_indices`` from :mod:`vgjax.result`, their one home. Nothing is defined here."""

from vgjax.figures import (describe, plot_dataset, plot_depth_study,  # noqa: F401
                           plot_gradient_profile, plot_layer_gradients, plot_learning_curves,
                           plot_weight_norms, plot_width_depth_heatmap)
from vgjax.result import final_metric, group_indices  # noqa: F401
