"""vgjax: train whole grids of small MLPs in one compiled JAX program to study vanishing and
exploding gradients.

Importing the package applies vgjax's JAX defaults for this process (one CPU device per core,
the persistent compilation cache in ``~/.cache/vgjax``; see :mod:`vgjax.runtime`) before
JAX's backends start, so a notebook gets what the ``vgjax`` command gets. Set
``VGJAX_SETUP=0`` before importing to leave JAX as it is; call :func:`setup` to move or turn
off the cache.
"""

from vgjax.runtime import setup as setup
from vgjax.runtime import auto_setup as _auto_setup

__all__ = ["setup"]

_auto_setup()
