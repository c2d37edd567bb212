"""Test-wide settings: silent rank promotion fails, everything runs on the CPU, and no test
reads or writes a persistent compilation cache it did not make itself.

The vgjax processes the tests start (CLI, scripts, shards) share one compilation cache that
this session creates empty and removes at its end: a program that several of them run (the
same sweep in a reference and in its shards, say) compiles once. Tests still pass cold,
since the first process compiles; the test process itself keeps the cache off, as some
tests count its compilations. A test that needs its own cache sets it in the child's
environment (``JAX_COMPILATION_CACHE_DIR`` or ``VGJAX_CACHE_DIR``), which wins.

The package is imported here, before any test starts JAX's backends, so the tests run with
vgjax's CPU defaults as a user gets them (one device per core, or ``JAX_NUM_CPU_DEVICES``
when set: CI runs some modules under 1 and 8 devices that way).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A warm cache would hide compilations (some tests count them) and must not be the user's:
# vgjax's cache is off here and in every subprocess; JAX's own setting is dropped too.
os.environ["VGJAX_CACHE_DIR"] = "off"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

import jax  # noqa: E402

import vgjax  # noqa: E402,F401  (applies the CPU defaults before the backends start)

jax.config.update("jax_numpy_rank_promotion", "raise")

# Only now, with this process set up without a cache: the children's shared one.
_CHILD_CACHE = tempfile.mkdtemp(prefix="vgjax-test-cache-")
atexit.register(shutil.rmtree, _CHILD_CACHE, ignore_errors=True)
os.environ["VGJAX_CACHE_DIR"] = _CHILD_CACHE
