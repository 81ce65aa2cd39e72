"""What readers cost Redis and themselves as they grow: 1 to 8 reader processes, each reading
a set of warm keys through :meth:`CacheClient.get <redicache_async.CacheClient.get>` at a paced
rate, with the local layer on (hits stay in the process) and off (every read goes to Redis).

For each number of readers and each mode, every reader starts at one shared
``time.monotonic()`` moment and reads for a fixed time at its pace; the parent reads the
server's CPU (``INFO cpu``: ``used_cpu_sys + used_cpu_user``) before and after, and each reader
reports its own CPU time (``time.process_time``) over its reads. The curves: Redis CPU and
the readers' CPU (both in % of one core) against the number of readers. A reader that cannot
keep its pace (the machine is saturated) says so in the table's "reads/s" column: the curves
are what the machine could do, not what was asked.

Reader processes are started once, at the largest count; a point uses the first ``n`` of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from redicache_async import CacheClient

from .cli import on_server, part_parser
from .cold_key import START_TIMEOUT, Message, Worker, emit, stdin_reader
from .hot_path import VALUE
from .results import Curve, Finding, Series, Table

__all__ = ["Settings", "main", "run"]

PART = "readers"
KEYS = 100
#: How often a reader wakes up to do its share of reads.
TICK_SECONDS = 0.01
MODES = {"on": "local layer on", "off": "local layer off"}


@dataclass(frozen=True)
class Settings:
    readers: tuple[int, ...]
    rate: int
    """Reads per second asked of each reader."""
    seconds: float


SMOKE = Settings(readers=(1, 2), rate=500, seconds=0.6)
FULL = Settings(readers=(1, 2, 4, 6, 8), rate=1000, seconds=3.0)


# -- a reader process ------------------------------------------------------------------------


async def _reader(url: str, namespace: str) -> None:
    orders = await stdin_reader()
    r = aioredis.Redis.from_url(url)
    try:
        async with (
            CacheClient(r, namespace=namespace) as local,
            CacheClient(r, namespace=namespace, local_max_entries=0) as remote,
        ):
            clients = {"on": local, "off": remote}
            for client in clients.values():  # the local layer warm, the connection made
                for i in range(KEYS):
                    if await client.get(f"k{i}") is None:
                        raise AssertionError(f"k{i} has no value")
            emit({"ready": os.getpid()})
            while line := await orders.readline():
                order = json.loads(line)
                emit(await _read(clients[order["mode"]], order))
    finally:
        await r.aclose()


async def _read(cache: CacheClient, order: Message) -> Message:
    """``order["rate"]`` reads a second from ``order["at"]`` for ``order["seconds"]``, in ticks."""
    rate, at, seconds = order["rate"], order["at"], order["seconds"]
    per_tick = max(1, round(rate * TICK_SECONDS))
    get = cache.get
    before = cache.stats()
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    cpu = time.process_time()
    end = at + seconds
    reads = 0
    tick = at
    while (now := time.monotonic()) < end:
        if now < tick:
            await asyncio.sleep(tick - now)
        for _ in range(per_tick):
            await get(f"k{reads % KEYS}")
            reads += 1
        tick += TICK_SECONDS
    cpu = time.process_time() - cpu
    after = cache.stats()
    return {
        "reads": reads,
        "cpu": cpu,
        "wall": time.monotonic() - at,
        "redis_hits": after.redis_hits - before.redis_hits,
        "local_hits": after.local_hits - before.local_hits,
    }


# -- the parent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    readers: int
    mode: str
    reads: int
    wall: float
    redis_cpu: float
    readers_cpu: float
    redis_hits: int
    local_hits: int

    @property
    def reads_per_second(self) -> float:
        return self.reads / self.wall


async def _redis_cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(url: str, settings: Settings) -> list[Point]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    r = aioredis.Redis.from_url(url)
    workers: list[Worker] = []
    points: list[Point] = []
    try:
        async with CacheClient(r, namespace=namespace) as writer:
            for i in range(KEYS):
                await writer.set(f"k{i}", VALUE)
        for _ in range(max(settings.readers)):
            workers.append(
                await Worker.start(
                    "benchmarks.scale_readers", "--url", url, "--namespace", namespace
                )
            )
        for worker in workers:
            await worker.receive(START_TIMEOUT)
        for count in settings.readers:
            for mode in MODES:
                points.append(await _point(r, workers[:count], mode, settings))
    finally:
        for worker in workers:
            await worker.stop()
        await r.aclose()
    return points


async def _point(r: aioredis.Redis, workers: list[Worker], mode: str, s: Settings) -> Point:
    at = time.monotonic() + 0.05
    order = {"mode": mode, "rate": s.rate, "at": at, "seconds": s.seconds}
    cpu_before = await _redis_cpu(r)
    for worker in workers:
        await worker.send(order)
    replies = [await worker.receive(s.seconds + 30) for worker in workers]
    cpu_after = await _redis_cpu(r)
    wall = max(time.monotonic() - at, max(reply["wall"] for reply in replies))
    return Point(
        readers=len(workers),
        mode=mode,
        reads=sum(reply["reads"] for reply in replies),
        wall=wall,
        redis_cpu=cpu_after - cpu_before,
        readers_cpu=sum(reply["cpu"] for reply in replies),
        redis_hits=sum(reply["redis_hits"] for reply in replies),
        local_hits=sum(reply["local_hits"] for reply in replies),
    )


def findings(points: Sequence[Point], settings: Settings) -> list[Finding]:
    def series(value: Callable[[Point], float]) -> tuple[Series, ...]:
        return tuple(
            Series(label, tuple((p.readers, value(p)) for p in points if p.mode == mode))
            for mode, label in MODES.items()
        )

    asked = f"each reader asked for {settings.rate:,} reads/s of {KEYS} warm keys"
    rows = tuple(
        (
            str(p.readers),
            MODES[p.mode],
            f"{p.reads_per_second:,.0f}",
            f"{100 * p.redis_cpu / p.wall:.1f}",
            f"{1e6 * p.redis_cpu / max(p.reads, 1):.2f}",
            f"{100 * p.readers_cpu / p.wall:.1f}",
            f"{1e6 * p.readers_cpu / max(p.reads, 1):.1f}",
            f"{p.redis_hits:,} / {p.local_hits:,}",
        )
        for p in points
    )
    return [
        Curve(
            PART,
            "Redis CPU against reader processes",
            "reader processes",
            "Redis CPU, % of one core",
            series(lambda p: 100 * p.redis_cpu / p.wall),
            note=f"{asked}; INFO cpu (sys + user) over the readers' window.",
        ),
        Curve(
            PART,
            "readers' CPU against reader processes",
            "reader processes",
            "readers' CPU, all together, % of one core",
            series(lambda p: 100 * p.readers_cpu / p.wall),
            note=f"{asked}; each reader's process time over its reads, summed.",
        ),
        Table(
            PART,
            "Redis and reader CPU against readers",
            (
                "readers",
                "mode",
                "reads/s (all)",
                "Redis CPU %",
                "Redis µs/read",
                "readers' CPU %",
                "readers' µs/read",
                "Redis / local hits",
            ),
            rows,
            note=(
                f"{asked} ({settings.seconds:g} s a point); reads/s below readers x "
                f"{settings.rate:,} means the machine could not keep the pace. % of one core."
            ),
        ),
    ]


def run(
    url: str,
    *,
    smoke: bool = False,
    settings: Settings | None = None,
    out: Callable[[str], None] = print,
) -> list[Finding]:
    settings = settings or (SMOKE if smoke else FULL)
    points = asyncio.run(measure(url, settings))
    found = findings(points, settings)
    table = found[-1]
    assert isinstance(table, Table)
    out(
        f"redicache_async readers: {', '.join(map(str, settings.readers))} reader processes, "
        f"{settings.rate:,} reads/s each, {settings.seconds:g} s a point, local layer on and off"
    )
    out("  " + " | ".join(table.columns))
    for row in table.rows:
        out("  " + " | ".join(row))
    problems = [
        f"{p.readers} readers, local layer {p.mode}: "
        + ("some reads went to Redis" if p.mode == "on" else "some reads were local hits")
        for p in points
        if (p.redis_hits if p.mode == "on" else p.local_hits)
    ]
    for problem in problems:
        out(f"error: {problem}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = part_parser(
        "scale_readers",
        "Redis and reader CPU against 1-8 reader processes, local layer on and off.",
        smoke="1 and 2 readers, briefly (CI)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        asyncio.run(_reader(args.url, args.namespace))
        return 0
    on_server(args.url, lambda url: run(url, smoke=args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
