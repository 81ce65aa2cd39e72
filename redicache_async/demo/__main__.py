"""``python -m redicache_async.demo``: the demo on its own, and how its worker processes start.

With ``--worker JSON`` or ``--builder-worker JSON`` (hidden options, given only by the demo's
parent process) it runs one worker process of the first or the second part and exits with its
status; without them it runs the whole demo, as ``python -m redicache_async demo`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import add_arguments, main
from .builder_worker import builder_worker_main
from .stampede_worker import worker_main


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redicache_async.demo")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--builder-worker", metavar="JSON", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.builder_worker is not None:
        return builder_worker_main(args.builder_worker)
    return main(args)


if __name__ == "__main__":
    sys.exit(_cli())
