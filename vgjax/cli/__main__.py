"""``python -m vgjax.cli``: the same as the ``vgjax`` console script."""

import sys

from vgjax.cli import main

sys.exit(main())
