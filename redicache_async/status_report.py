"""``python -m redicache_async status``: print what a namespace holds in Redis, for operators.

It connects the way the application does (a URL; ``--cluster`` for a Redis Cluster seed;
``--sentinel`` and ``--service`` behind Sentinel), reads with :func:`~.status.read_status`
and prints a report, or JSON with ``--json``. Exit status: 0 on success, 1 when Redis could
not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from .errors import OUTAGES, REDIS_FAILURES, describe_error
from .status import NamespaceStatus, read_status

__all__ = ["add_arguments", "main", "render"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default="redis://127.0.0.1:6379",
        help="the server (a cluster node with --cluster); default: %(default)s",
    )
    parser.add_argument("--namespace", required=True, help="the namespace the application uses")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", action="store_true", help="--url is a node of a Redis Cluster")
    where.add_argument(
        "--sentinel",
        action="append",
        metavar="HOST:PORT",
        help="a Sentinel to ask for the master (repeatable; needs --service)",
    )
    parser.add_argument("--service", help="the master's name in Sentinel")
    parser.add_argument(
        "--limit",
        type=int,
        default=200,
        help="entries listed per section at most; default: %(default)s",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per Redis call; default: %(default)s"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a report")


def main(args: argparse.Namespace) -> int:
    if args.sentinel and not args.service:
        print("status: --sentinel needs --service (the master's name)", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("status: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(_read(args))
    except (*OUTAGES, *REDIS_FAILURES) as exc:
        print(f"status: could not read {_where(args)}: {describe_error(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(status), indent=2))
    else:
        print(render(status, where=_where(args), now=time.time()), end="")
    return 0


async def _read(args: argparse.Namespace) -> NamespaceStatus:
    timeouts = {"socket_timeout": args.timeout, "socket_connect_timeout": args.timeout}
    closers: list[Callable[[], Any]] = []
    client: Any
    if args.cluster:
        client = RedisCluster.from_url(args.url, **timeouts)
    elif args.sentinel:
        addresses = [_address(text) for text in args.sentinel]
        sentinel = Sentinel(addresses, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call, unused-ignore]
        client = sentinel.master_for(args.service, **timeouts)
        closers.extend(node.aclose for node in sentinel.sentinels)
    else:
        client = aioredis.Redis.from_url(args.url, **timeouts)
    try:
        return await read_status(client, args.namespace, limit=args.limit)
    finally:
        await client.aclose()
        for close in closers:
            await close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"status: --sentinel {text!r} is not HOST:PORT")
    return host, int(port)


def _where(args: argparse.Namespace) -> str:
    if args.sentinel:
        return f"service {args.service!r} via Sentinel {', '.join(args.sentinel)}"
    url: str = args.url
    parts = urlsplit(url)
    if parts.password is not None:  # never print a secret
        netloc = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    shown: str = urlunsplit(parts)
    return f"cluster {shown}" if args.cluster else shown


# -- the report ------------------------------------------------------------------------------


def render(status: NamespaceStatus, *, where: str, now: float) -> str:
    """The report ``status`` prints: one section per kind of entry, ages against ``now``."""
    out = [f"namespace {status.namespace!r} on {where}, at {_clock(now)}"]
    if status.truncated:
        out.append("(some sections are cut short: raise --limit to see everything)")

    out.append(_heading("cached keys", len(status.keys)))
    out += _table(
        ("KEY", "TTL", "WRITTEN", "SIZE"),
        [
            (k.key, _ttl(k.ttl), _ago(k.written_at, now), _bytes(k.size))
            if not k.outdated
            else (k.key, _ttl(k.ttl), "older layout: read as a miss", "-")
            for k in status.keys
        ],
    )

    out.append(_heading("write locks held (a fetch is running)", len(status.locks)))
    out += _table(("KEY", "EXPIRES IN"), [(lock.key, _ttl(lock.ttl)) for lock in status.locks])

    out.append(_heading("builder registrations", len(status.registrations)))
    for reg in status.registrations:
        out.append(f"  {reg.name}")
        if reg.leader is not None:
            out.append(f"    leader      {reg.leader}, since {_ago(reg.elected_at, now)}")
            out.append(f"    lease       {_ttl(reg.lease_ttl)} left; fencing epoch {reg.epoch}")
        else:
            out.append("    leader      none: no instance holds the lease")
        interval = (
            "-" if reg.refresh_interval is None else f"every {_duration(reg.refresh_interval)}"
        )
        out.append(f"    refresh     {interval}; targets {', '.join(reg.targets) or '-'}")
        if reg.last_built_at is not None:
            took = "" if reg.last_duration is None else f", took {_duration(reg.last_duration)}"
            out.append(f"    last build  {_ago(reg.last_built_at, now)}{took}")
        else:
            out.append("    last build  never")
        out.append(f"    builds      {reg.builds} ok, {reg.failures} failed")
        if reg.last_error is not None:
            out.append(f"    last error  {_ago(reg.last_error_at, now)}: {reg.last_error}")

    out.append(_heading("builder targets", len(status.targets)))
    out += _table(
        ("KEY", "TYPE", "ITEMS", "REGISTRATION", "SWAPPED"),
        [
            (
                t.key,
                t.type or "-",
                "-" if t.size is None else str(t.size),
                t.registration or "-",
                _ago(t.swapped_at, now),
            )
            for t in status.targets
        ],
    )
    events = "none" if status.events is None else f"{status.events} entries"
    out.append(f"\nevent stream (replayed by reconnecting listeners): {events}")
    return "\n".join(out) + "\n"


def _heading(title: str, count: int) -> str:
    return f"\n{title}: {count}" if count else f"\n{title}: none"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    return f"{_clock(timestamp)} ({_duration(max(0.0, now - timestamp))} ago)"


def _ttl(seconds: float | None) -> str:
    return "never expires" if seconds is None else _duration(seconds)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"
