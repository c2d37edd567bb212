"""Test-wide settings: silent rank promotion fails, and everything runs on the CPU."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# As the CLI does: YNNPACK fusions are several times slower on these tiny tensors.
if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_experimental_ynn_fusion_type=").strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
