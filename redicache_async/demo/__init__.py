"""``python -m redicache_async demo``: the mission, shown on real processes and a real server.

This module parses the demo's options and runs its two parts one after the other on one server
(started for the demo unless ``--url`` names one): :mod:`.stampede` (many processes, one cold
key, one fetch; a regeneration seen everywhere) and :mod:`.builders` (CacheBuilder processes
whose leader is killed, and a reader that never sees an empty or partial target). Their worker
processes are in :mod:`.stampede_worker` and :mod:`.builder_worker`, started through this
package's ``__main__``; :mod:`.processes` is how parent and workers talk.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .builders import run_builder_demo
from .processes import DemoError
from .stampede import run_demo

__all__ = ["add_arguments", "main", "run_builder_demo", "run_demo"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="processes (default 4, min 2)")
    parser.add_argument(
        "--callers", type=int, default=50, help="coroutines per process (default 50)"
    )
    parser.add_argument(
        "--fetch-seconds", type=float, default=0.5, help="how long a fetch takes (default 0.5)"
    )
    parser.add_argument("--url", help="use this Redis instead of starting a server for the demo")


async def _both_parts(url: str, options: dict[str, Any], *, started_server: bool = False) -> int:
    status = await run_demo(url, started_server=started_server, **options)
    print()
    return await run_builder_demo(url) or status


def main(args: argparse.Namespace) -> int:
    if args.workers < 2 or args.callers < 1 or not 0 <= args.fetch_seconds <= 60:
        print(
            "error: need --workers >= 2, --callers >= 1 and 0 <= --fetch-seconds <= 60",
            file=sys.stderr,
        )
        return 2
    options: dict[str, Any] = {
        "workers": args.workers,
        "callers": args.callers,
        "fetch_seconds": args.fetch_seconds,
    }
    try:
        if args.url:
            return asyncio.run(_both_parts(args.url, options))
        from redicache_async.testing import RedisServer

        with RedisServer() as server:
            return asyncio.run(_both_parts(server.url, options, started_server=True))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
