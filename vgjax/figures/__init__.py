"""Matplotlib figures of sweep results, made on the host from NumPy arrays (never imports jax).

One module per figure kind: :mod:`~vgjax.figures.dataset`, :mod:`~vgjax.figures.curves`
(learning curves), :mod:`~vgjax.figures.layers` (a per-layer statistic over epochs: gradients,
weight norms), :mod:`~vgjax.figures.profile` (gradients across layers),
:mod:`~vgjax.figures.depth` (depth study), :mod:`~vgjax.figures.heatmap` (width x depth),
:mod:`~vgjax.figures.phase` (σ_w² x depth trainability with 6 ξ_c),
:mod:`~vgjax.figures.propagation` (signal propagation at initialisation beside theory);
:mod:`~vgjax.figures.common` holds what they share.

Every ``plot_*`` function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, no
global state, no display needed), writes it as a PNG through :mod:`vgjax.io.store`'s atomic
writer and returns the :class:`~pathlib.Path` written; the matching ``make_*`` function returns
the Figure itself, for tests and notebooks.

Shapes follow :mod:`vgjax.result`: runs ``R``, epochs ``E``, layers ``L = D + 1`` (index
``i < D`` is hidden layer ``i + 1``, index ``D`` is the output layer). Final values, "learns",
seed statistics and configs are :mod:`vgjax.result`'s (``final_metric``, ``learns``,
``seed_stats``, ``group_indices``): statistics over seeds skip non-finite entries (absent
layers, epochs from the one in which a run diverged); a curve with no finite value at all is
not drawn, and nothing here raises on NaN data.
"""

from vgjax.figures.common import describe, save_png
from vgjax.figures.curves import make_learning_curves, plot_learning_curves
from vgjax.figures.dataset import make_dataset, plot_dataset
from vgjax.figures.depth import make_depth_study, plot_depth_study
from vgjax.figures.heatmap import make_heatmap, plot_width_depth_heatmap
from vgjax.figures.layers import make_layer_stat, plot_layer_gradients, plot_weight_norms
from vgjax.figures.phase import make_phase_diagram, plot_phase_diagram
from vgjax.figures.profile import make_gradient_profile, plot_gradient_profile

__all__ = [
    "describe", "save_png",
    "make_dataset", "make_depth_study", "make_gradient_profile", "make_heatmap",
    "make_layer_stat", "make_learning_curves", "make_phase_diagram",
    "plot_dataset", "plot_depth_study", "plot_gradient_profile",
    "plot_layer_gradients", "plot_learning_curves", "plot_phase_diagram",
    "plot_weight_norms", "plot_width_depth_heatmap",
]
