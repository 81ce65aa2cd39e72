"""Many keys read from Redis in one call: ``get_many`` of 100 keys beside 100 ``get``s and the
peers' many-key reads, in one process against one server.

Each round times, for 100 values of ~1 KB each held in Redis (local layers off, so that every
read goes to Redis):

- ours: ``await cache.get_many(keys)``;
- ours: 100 ``await cache.get(key)`` one after another (what a loop over the keys does), and
  the same 100 gathered (``asyncio.gather``: the read batcher joins them);
- aiocache's ``RedisCache(timeout=None).multi_get(keys)`` (an ``MGET``) and cashews'
  ``get_many(*keys)`` on ``redis://`` (an ``MGET`` too).

A figure is per call of 100 keys; a ratio is the median of the per-round ratios (each round
runs every read, in a rotating order). Target: ``get_many`` faster than 100 sequential
``get``s. The peers' rows are figures beside ours, without a target: an ``MGET`` is one plain
command, where ours is a script that tells a value in another layout from a missing one.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from redicache_async import CacheClient

from .cli import part_main
from .hot_path import VALUE, Bench, format_ns, measure
from .results import Finding, Result, Table

__all__ = ["Settings", "main", "run"]

PART = "Many keys"
KEYS = 100
OURS = "ours: get_many(100 keys)"
SEQUENTIAL = "ours: 100 get, one after another"
GATHERED = "ours: 100 get, gathered"
AIOCACHE = "aiocache RedisCache(timeout=None).multi_get"
CASHEWS = 'cashews Cache().setup("redis://").get_many'


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch: int
    """Calls of 100 keys per round and bench."""


SMOKE = Settings(rounds=3, batch=5)
FULL = Settings(rounds=15, batch=50)

Samples = dict[str, list[float]]


def _timer(call: Callable[[], Awaitable[object]]) -> Callable[[int], Awaitable[int]]:
    async def run(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            await call()
        return perf_counter_ns() - started

    return run


async def _peers(url: str, namespace: str, keys: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """The peers' many-key reads of ``keys``, written through each peer itself; empty for a
    peer that is not installed. Each answers a sequence of values, None for a missing key."""
    reads: dict[str, Any] = {}
    closers: list[Any] = []
    try:
        aiocache = importlib.import_module("aiocache")
    except ImportError:
        pass
    else:
        parts = urlsplit(url)
        cache = aiocache.RedisCache(
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(parts.path.lstrip("/") or 0),
            namespace=f"{namespace}-aiocache",
            timeout=None,
        )
        closers.append(cache)
        await cache.multi_set([(key, VALUE) for key in keys])
        reads[AIOCACHE] = lambda: cache.multi_get(keys)
    try:
        cashews = importlib.import_module("cashews")
    except ImportError:
        pass
    else:
        wrapper = cashews.Cache()
        wrapper.setup(url)
        closers.append(wrapper)
        prefixed = [f"{namespace}-cashews:{key}" for key in keys]
        await wrapper.set_many(dict.fromkeys(prefixed, VALUE))
        reads[CASHEWS] = lambda: wrapper.get_many(*prefixed)
    return reads, closers


async def session(url: str, settings: Settings) -> Samples:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    keys = [f"report:{n}" for n in range(KEYS)]
    r = aioredis.Redis.from_url(url)
    try:
        async with (
            CacheClient(r, namespace=namespace, local_max_entries=0) as writer,
            CacheClient(r, namespace=namespace, local_max_entries=0) as reader,
        ):
            await writer.set_many(dict.fromkeys(keys, VALUE))
            peers, closers = await _peers(url, namespace, keys)
            try:

                async def sequential() -> list[Any]:
                    return [await reader.get(key) for key in keys]

                async def gathered() -> list[Any]:
                    return await asyncio.gather(*(reader.get(key) for key in keys))

                async def ours() -> list[Any]:
                    return list((await reader.get_many(keys)).values())

                reads: dict[str, Callable[[], Awaitable[Any]]] = {
                    OURS: ours,
                    SEQUENTIAL: sequential,
                    GATHERED: gathered,
                    **peers,
                }
                # Sanity, not timing: every read answers every value.
                for name, read in reads.items():
                    answer = list(await read())
                    if answer != [VALUE] * KEYS:
                        raise AssertionError(f"{name} did not answer the {KEYS} values")
                benches = [
                    Bench(name, _timer(read), settings.batch) for name, read in reads.items()
                ]
                await measure(benches, settings.rounds)
                if reader.stats().local_hits:
                    raise AssertionError("our reads did not all go to Redis")
            finally:
                for peer in closers:
                    await peer.close()
        return {bench.name: bench.samples for bench in benches}
    finally:
        await r.aclose()


def _ratio(samples: Samples, subject: str, baseline: str) -> float:
    pairs = zip(samples[subject], samples[baseline], strict=True)
    return statistics.median(a / b for a, b in pairs)


def findings(samples: Samples) -> list[Finding]:
    ours = statistics.median(samples[OURS])
    results: list[Finding] = [
        Result(
            PART,
            f"get_many of {KEYS} keys: how many times faster than {KEYS} sequential get",
            _ratio(samples, SEQUENTIAL, OURS),
            "x",
            1.0,
            "at_least",
            detail=(
                f"get_many {format_ns(ours)}, {KEYS} get "
                f"{format_ns(statistics.median(samples[SEQUENTIAL]))} (medians)"
            ),
        )
    ]
    for name in (GATHERED, AIOCACHE, CASHEWS):
        if name in samples:
            results.append(
                Result(
                    PART,
                    f"get_many of {KEYS} keys: {name} / ours",
                    _ratio(samples, name, OURS),
                    "x",
                    None,
                    detail=(
                        f"ours {format_ns(ours)}, {name} "
                        f"{format_ns(statistics.median(samples[name]))} (medians)"
                    ),
                )
            )
    results.append(_table(samples))
    return results


def _table(samples: Samples) -> Table:
    rows = tuple(
        (
            name,
            format_ns(statistics.median(values)),
            format_ns(statistics.median(values) / KEYS),
            f"{_ratio(samples, name, OURS):.2f}x",
        )
        for name, values in samples.items()
    )
    return Table(
        PART,
        f"{KEYS} values of ~1 KB read from Redis in one call (local layers off)",
        ("read", "median per call", "per key", "/ ours"),
        rows,
        note=(
            "/ ours: the median of the per-round ratios to get_many (above 1.00x: slower "
            "than get_many). One process, one server on loopback."
        ),
    )


def run(
    url: str,
    *,
    smoke: bool = False,
    settings: Settings | None = None,
    out: Callable[[str], None] = print,
) -> list[Finding]:
    settings = settings or (SMOKE if smoke else FULL)
    samples = asyncio.run(session(url, settings))
    table = _table(samples)
    out(
        f"redicache_async get_many beside {KEYS} gets and its peers: {settings.rounds} rounds of "
        f"{settings.batch} calls each"
    )
    columns = list(zip(table.columns, *table.rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    for line in (table.columns, *table.rows):
        out("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for peer, name in (("aiocache", AIOCACHE), ("cashews", CASHEWS)):
        if name not in samples:
            out(f"note: {peer} is not installed: its row is skipped")
    found = findings(samples)
    for finding in found:
        if isinstance(finding, Result):
            out(finding.verdict)
    out("ratios: medians of the per-round ratios. Timings are figures, not assertions.")
    return found


main = part_main(
    "many_keys",
    "get_many of 100 keys beside 100 gets, aiocache's multi_get and cashews' get_many.",
    smoke="a few short rounds (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
