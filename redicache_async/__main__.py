"""``python -m redicache_async COMMAND``: ``demo`` shows the cache at work on real processes;
``status`` shows what a namespace holds in Redis; ``server`` runs a server for development."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import demo, status_report
from .testing import dev_server

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m redicache_async",
        description="redicache_async: a two-level asyncio cache over Redis.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help=(
            "many processes, one cold key: one fetch; a regeneration seen everywhere; "
            "builders that survive their leader's death"
        ),
        description=(
            "Start a server (unless --url is given) and worker processes that all ask for one "
            "cold key at once; print how many fetches ran, how long callers waited, and how "
            "fast a regeneration reached the other processes' local layers. Then three "
            "CacheBuilder processes share one registration: the leader is SIGKILLed, the next "
            "one SIGTERMed; print the takeover times, and check that a reader never saw an "
            "empty or partial target."
        ),
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.main)
    server_parser = commands.add_parser(
        "server", help=dev_server.HELP, description=dev_server.DESCRIPTION
    )
    dev_server.add_arguments(server_parser)
    server_parser.set_defaults(handler=dev_server.main)
    status_parser = commands.add_parser(
        "status",
        help="what a namespace holds: cached keys and TTLs, locks, builders and their leaders",
        description=(
            "Read one namespace from Redis (never writing) and print its cached keys with "
            "their TTLs, the write locks held (fetches running), every builder registration "
            "with its leader, last build and last error, and the builders' targets."
        ),
    )
    status_report.add_arguments(status_parser)
    status_parser.set_defaults(handler=status_report.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
