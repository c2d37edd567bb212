"""Signal propagation at initialisation: measured q^l and per-layer gradient norms beside the
mean-field theory, one panel per phase (ordered, critical, chaotic).

Input: the JSON-able dict of :func:`vgjax.experiments.signal.propagation.compute` (per phase: ``q_mean``,
``q_std``, ``q_theory`` [depth]; ``g2_ratio_mean``, ``g2_ratio_std``, ``g2_ratio_theory``,
``g2_ratio_chi1`` [depth]). Host-only (NumPy and matplotlib).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure

from vgjax.figures.common import new_figure, save_png, suptitle

MEASURED_COLOR, THEORY_COLOR, CHI1_COLOR = "#1f77b4", "black", "#d62728"


def _setting(data: dict) -> str:
    return (f"{data['activation']}, width {data['width']}, depth {data['depth']}, "
            f"σ_b² = {data['bias_var']:g}, {len(data['seeds'])} seeds, "
            f"digits training points (mean x² = {data['q0_mean']:.3f})")


def make_q_per_layer(data: dict) -> Figure:
    """q^l against layer: seed mean ± std of the measurement and the q-map from q⁰."""
    phases = data["phases"]
    fig, axes = new_figure(len(phases))
    for ax, (name, p) in zip(axes, phases.items()):
        layers = np.arange(1, len(p["q_mean"]) + 1)
        m, s = np.asarray(p["q_mean"]), np.asarray(p["q_std"])
        ax.fill_between(layers, m - s, m + s, color=MEASURED_COLOR, alpha=0.25, lw=0)
        ax.plot(layers, m, "o", ms=3, color=MEASURED_COLOR, label="measured (mean ± std)")
        ax.plot(layers, p["q_theory"], "-", color=THEORY_COLOR, lw=1.2,
                label="theory: q-map from q⁰")
        ax.axhline(p["q_star"], color="grey", ls=":", lw=1, label=f"q* = {p['q_star']:.3f}")
        ax.set(title=f"{name}: σ_w² = {p['weight_var']:.3f}, χ₁ = {p['chi1']:.3f}",
               xlabel="layer l", ylabel="q^l = mean h_l²")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    suptitle(fig, "signal-propagation: pre-activation second moment per layer — "
             + _setting(data))
    return fig


def make_grad_per_layer(data: dict) -> Figure:
    """‖∂ℓ/∂W^l‖² / ‖∂ℓ/∂W^L‖² against layer (log scale): measurement, the theory on the
    q-trajectory, and χ₁^{L−l}."""
    phases = data["phases"]
    fig, axes = new_figure(len(phases))
    for ax, (name, p) in zip(axes, phases.items()):
        layers = np.arange(1, len(p["g2_ratio_mean"]) + 1)
        m, s = np.asarray(p["g2_ratio_mean"]), np.asarray(p["g2_ratio_std"])
        lo = np.where(m - s > 0, m - s, m / 10)
        ax.fill_between(layers, lo, m + s, color=MEASURED_COLOR, alpha=0.25, lw=0)
        ax.plot(layers, m, "o", ms=3, color=MEASURED_COLOR, label="measured (mean ± std)")
        ax.plot(layers, p["g2_ratio_theory"], "-", color=THEORY_COLOR, lw=1.2,
                label="theory on the q-trajectory")
        ax.plot(layers, p["g2_ratio_chi1"], "--", color=CHI1_COLOR, lw=1,
                label="χ₁^(L−l)")
        ax.set(yscale="log", title=f"{name}: σ_w² = {p['weight_var']:.3f}, χ₁ = {p['chi1']:.3f}",
               xlabel="layer l", ylabel="‖∂ℓ/∂W^l‖² / ‖∂ℓ/∂W^L‖²")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    suptitle(fig, "signal-propagation: squared gradient norm per layer, relative to the last "
             "hidden layer (per point, averaged) — " + _setting(data))
    return fig


def plot_q_per_layer(data: dict, path: Union[str, os.PathLike]) -> Path:
    """Write :func:`make_q_per_layer` as a PNG; returns its path."""
    return save_png(make_q_per_layer(data), path)


def plot_grad_per_layer(data: dict, path: Union[str, os.PathLike]) -> Path:
    """Write :func:`make_grad_per_layer` as a PNG; returns its path."""
    return save_png(make_grad_per_layer(data), path)
