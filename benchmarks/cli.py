"""What every part's command line shares: ``--smoke`` and ``--url``, and a server to run on."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["on_server", "part_main", "part_parser"]

T = TypeVar("T")


def part_parser(module: str, description: str, *, smoke: str) -> argparse.ArgumentParser:
    """A parser for ``python -m benchmarks.<module>`` with ``--smoke`` (``smoke`` says what it
    shortens to) and ``--url``; the part adds its own options."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=description)
    parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--url", help="an existing server (default: start one on a free port)")
    return parser


def on_server(url: str | None, measure: Callable[[str], T]) -> T:
    """``measure(url)``; without a URL, against a server started for it on a free port."""
    if url:
        return measure(url)
    from redicache_async.testing import RedisServer

    with RedisServer() as server:
        return measure(server.url)


def part_main(
    module: str, description: str, *, smoke: str, run: Callable[..., object]
) -> Callable[..., int]:
    """The ``main`` of a part whose command line is only ``--smoke`` and ``--url``: it calls
    ``run(url, smoke=...)`` on that server (or on one started for it)."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = part_parser(module, description, smoke=smoke).parse_args(argv)
        on_server(args.url, lambda url: run(url, smoke=args.smoke))
        return 0

    return main
