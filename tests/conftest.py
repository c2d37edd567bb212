"""Test-wide settings: silent rank promotion fails, and everything runs on the CPU."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
