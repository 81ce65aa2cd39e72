"""64 concurrent readers of distinct keys, each a local miss, against raw redis-py GETs of the
same payloads by 64 tasks over a connection pool (the usual way to read Redis concurrently).

Ours: ``CacheClient.get`` and ``get_or_init`` with the local layer off (so every call goes to
Redis), where concurrent reads go to Redis together (auto-batching, ``batching.py``). Target:
at least 5x the raw pool's throughput (issue 16 kept issue 5's figure of the day, 5.23x; issue
5's own target was 3x). The two run in alternating slices of equal length, so
that noise from the shared machine hits both alike; a figure is the median over the slices.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from redicache_async import CacheClient, JsonSerializer

from .cli import part_main
from .results import Result

__all__ = ["main", "run"]

TASKS = 64
#: A multiple of ``TASKS``: task ``w`` reads the keys ``w, w + 64, ...`` (mod ``KEYS``), so no
#: two tasks ever read the same key, and no read joins another's (single-flight would make
#: some reads free: with 1,000 keys, 40% of the reads joined one in flight).
KEYS = 1_024


def _value(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item-{i}", "score": i * 7 % 100}


async def _throughput(read: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Calls per second of ``TASKS`` tasks each calling ``read`` on its own keys."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(first: int) -> None:
        nonlocal done
        i = first
        while time.perf_counter() < stop:
            await read(i % KEYS)
            done += 1
            i += TASKS

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(TASKS)))
    return done / (time.perf_counter() - started)


async def _fetch_never() -> None:
    raise AssertionError("every key has a value: nothing may be fetched")


async def measure(url: str, *, rounds: int, seconds: float) -> dict[str, list[float]]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    serializer = JsonSerializer()
    raw = aioredis.Redis.from_url(url, max_connections=TASKS)
    r = aioredis.Redis.from_url(url)
    try:
        async with (
            CacheClient(r, namespace=namespace) as writer,
            CacheClient(r, namespace=namespace, local_max_entries=0) as reader,
        ):
            for i in range(KEYS):
                await writer.set(f"k{i}", _value(i))
                await raw.set(f"{namespace}:raw{i}", serializer.dumps(_value(i)))
            # sanity, not timing: every path answers the value it should
            for i in (0, KEYS - 1):
                assert await reader.get(f"k{i}") == _value(i)
                assert await raw.get(f"{namespace}:raw{i}") == serializer.dumps(_value(i))

            async def raw_get(i: int) -> object:
                return await raw.get(f"{namespace}:raw{i}")

            async def get(i: int) -> object:
                return await reader.get(f"k{i}")

            async def get_or_init(i: int) -> object:
                return await reader.get_or_init(f"k{i}", _fetch_never)

            readers = {"raw": raw_get, "get": get, "get_or_init": get_or_init}
            figures: dict[str, list[float]] = {name: [] for name in readers}
            for read in readers.values():  # warm-up: connections, scripts
                await _throughput(read, min(seconds, 0.2))
            for round_no in range(rounds):
                order = list(readers.items())
                shift = round_no % len(order)
                for name, read in order[shift:] + order[:shift]:
                    figures[name].append(await _throughput(read, seconds))
            if reader.stats().fetches:
                raise AssertionError("a read fetched")
            return figures
    finally:
        await r.aclose()
        await raw.aclose()


def run(url: str, *, smoke: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    rounds, seconds = (2, 0.2) if smoke else (7, 1.0)
    figures = asyncio.run(measure(url, rounds=rounds, seconds=seconds))
    raw = figures["raw"]
    out(
        f"redicache_async concurrent local misses: {TASKS} tasks reading {KEYS} distinct keys, "
        f"{rounds} alternating slices of {seconds:g} s each"
    )
    out(f"  {'':<52} {'reads/s':>10} {'ratio':>7}")
    out(f"  {'redis-py GET, 64 tasks over a pool (baseline)':<52} {statistics.median(raw):>10,.0f}")
    results = []
    for name, label in (
        ("get", "CacheClient.get, local layer off"),
        ("get_or_init", "CacheClient.get_or_init, local layer off"),
    ):
        ratio = statistics.median(
            ours / base for ours, base in zip(figures[name], raw, strict=True)
        )
        out(f"  {label:<52} {statistics.median(figures[name]):>10,.0f} {ratio:>6.2f}x")
        results.append(
            Result(
                "concurrency",
                f"64 concurrent local misses, {name}: throughput / raw redis-py GETs over a pool",
                ratio,
                "x",
                5.0,
                "at_least",
                detail=(
                    f"ours {statistics.median(figures[name]):,.0f} reads/s, raw "
                    f"{statistics.median(raw):,.0f} GET/s (medians of {rounds} slices)"
                ),
            )
        )
    out("ratio: median of the per-slice ratios. Timings are figures, not assertions.")
    return results


main = part_main(
    "concurrency",
    "64 concurrent local misses against raw redis-py GETs over a pool.",
    smoke="2 short slices (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
