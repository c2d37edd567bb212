"""Test-wide settings: silent rank promotion fails, everything runs on the CPU (compiled at
LLVM optimisation level 0: see TEST_XLA_FLAGS), and no test reads or writes a persistent
compilation cache it did not make itself.

The vgjax processes the tests start (CLI, scripts, shards) share one compilation cache that
this session creates empty and removes at its end: a program that several of them run (the
same sweep in a reference and in its shards, say) compiles once. Tests still pass cold,
since the first process compiles; the test process itself keeps the cache off, as some
tests count its compilations. A test that needs its own cache sets it in the child's
environment (``JAX_COMPILATION_CACHE_DIR`` or ``VGJAX_CACHE_DIR``), which wins.

The package is imported here, before any test starts JAX's backends, so the tests run with
vgjax's CPU defaults as a user gets them (one device per core, or ``JAX_NUM_CPU_DEVICES``
when set: the ``devices`` tests are run under 8 devices and under 1 that way before a
release, docs/guides/setup.md).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite checks behaviour, not speed (that is `vgjax bench`'s job, at XLA's defaults), and
# nearly all of its time is XLA:CPU compiling small programs, most of it in LLVM's backend
# passes. Level 0 of those passes cuts the suite's time by about a third; the numbers do not
# change (no fast-math reassociation at any level: float results are the same, and every
# equality the tests assert is between programs compiled alike). Processes the tests start
# inherit it; the 1-device run of the ``devices`` tests before a release is at XLA's default
# level (3), so that is tested too.
# An explicit ``xla_backend_optimization_level`` in XLA_FLAGS wins.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def optimization_flags() -> str:
    """This session's optimisation-level XLA_FLAGS entries: for a child process whose
    XLA_FLAGS a test sets itself (to choose its device count), so it compiles alike."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                    if "optimization_level" in f)


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
