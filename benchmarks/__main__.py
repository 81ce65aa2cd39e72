"""``python -m benchmarks [--smoke]``: the hot paths (:mod:`benchmarks.hot_path`), then a
builder rebuild (:mod:`benchmarks.builder_rebuild`), each against a server of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import builder_rebuild, hot_path

PARTS = ("hot-path", "rebuild")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of redicache_async: the hot paths, then a builder rebuild.",
    )
    parser.add_argument("--smoke", action="store_true", help="a few small rounds (seconds; CI)")
    parser.add_argument("--only", choices=PARTS, help="run one part only")
    parser.add_argument(
        "--url", help="an existing server to use (default: start one on a free port)"
    )
    hot = parser.add_argument_group("hot path")
    hot.add_argument("--rounds", type=int, help="measured rounds (default 25; smoke 3)")
    hot.add_argument("--batch", type=int, help="calls per batch (default 1000; smoke 100)")
    rebuild = parser.add_argument_group("rebuild")
    rebuild.add_argument("--rebuild-rounds", type=int, help="measured rounds (default 5; smoke 2)")
    rebuild.add_argument("--items", type=int, help="items per build (default 100000; smoke 5000)")
    return parser.parse_args(argv)


def _options(**values: object) -> list[str]:
    """Command-line options for a part's own ``main``, from the values that were given."""
    options: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            options.append(flag)
        elif value is not None and value is not False:
            options += [flag, str(value)]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    common = _options(smoke=args.smoke, url=args.url)
    status = 0
    if args.only in (None, "hot-path"):
        status = hot_path.main([*common, *_options(rounds=args.rounds, batch=args.batch)])
    if args.only in (None, "rebuild"):
        if args.only is None:
            print()
        rebuild_options = _options(rounds=args.rebuild_rounds, items=args.items)
        status = builder_rebuild.main([*common, *rebuild_options]) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
