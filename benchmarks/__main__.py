"""``python -m benchmarks [--smoke]``: see :mod:`benchmarks.hot_path`."""

from __future__ import annotations

import sys

from .hot_path import main

if __name__ == "__main__":
    sys.exit(main())
