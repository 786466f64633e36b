"""``python -m jaxlearn demo``: the same as the ``jaxlearn`` console script."""

import sys

from jaxlearn.cli import main

if __name__ == "__main__":
    sys.exit(main())
