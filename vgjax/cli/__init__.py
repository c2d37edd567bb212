"""The ``vgjax`` command line: parse, call the library, print. Bad input exits 2 in one line.

``parser`` builds the argument parser (one function per subcommand) from the shared option
groups of ``options``; the handlers live in ``sweep`` (sweep, its distributed variants,
merge) and ``commands`` (show, list, run/reproduce, bench, theory); ``output`` prints the
progress bar and the results tables.
"""

from __future__ import annotations

import sys
from typing import Sequence

from vgjax import runtime
from vgjax.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vgjax`` console script; returns the exit code.

    ``import vgjax`` has already applied the JAX defaults (:mod:`vgjax.runtime`), the same
    as for the Python API; ``--compile-cache`` only moves or turns off the cache.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a supervised child
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "compile_cache", None) is not None:
        off = args.compile_cache.strip().lower() in ("off", "none", "")
        runtime.setup(cache_dir=None if off else args.compile_cache)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"vgjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vgjax: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
