"""``python -m vgjax.cli``: the same as the ``vgjax`` console script."""

import sys

from vgjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
