"""Eager refresh under a steady load (issue 17): one hot key read by callers of two clients
(two processes' worth) for several TTLs, once without ``eager_refresh`` and once with it.

Without it, the value expires every TTL and the callers that find it gone wait for its fetch;
with it, a hit past ``f`` of the TTL refreshes the value in the background and no caller waits.
The figures: calls that waited longer than half the fetch (which only a wait for the fetch can
take), the slowest call, the calls that found no value, and the fetches run. The machine may be
shared: latencies are figures, not assertions; the counts are what the target is about.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

import redis.asyncio as aioredis

from redicache_async import CacheClient

from .cli import part_main
from .results import Finding, Result, Table, show

__all__ = ["FULL", "SMOKE", "Settings", "main", "run"]

PART: Final = "eager refresh"


@dataclass(frozen=True)
class Settings:
    ttl: float
    fetch_seconds: float
    seconds: float
    callers: int
    #: Pause of each caller between two calls (the traffic's pace).
    pace: float
    fraction: float = 0.5


FULL: Final = Settings(ttl=1.0, fetch_seconds=0.2, seconds=8.0, callers=20, pace=0.005)
SMOKE: Final = Settings(ttl=0.5, fetch_seconds=0.1, seconds=2.0, callers=6, pace=0.005)


@dataclass(frozen=True)
class Outcome:
    calls: int
    fetches: int
    #: Calls that found no value in Redis, the first one aside.
    misses: int
    #: Calls slower than half the fetch: they waited for it.
    waited: int
    p50_us: float
    p99_us: float
    max_ms: float


async def _load(url: str, namespace: str, settings: Settings, eager: bool) -> Outcome:
    r = aioredis.Redis.from_url(url)
    fetches = 0

    async def fetch() -> dict[str, int]:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(settings.fetch_seconds)
        return {"version": fetches}

    options: dict[str, Any] = {"eager_refresh": settings.fraction} if eager else {}
    latencies: list[float] = []
    try:
        async with (
            CacheClient(r, namespace=namespace) as a,
            CacheClient(r, namespace=namespace) as b,
        ):
            await a.get_or_init("hot", fetch, settings.ttl)
            loop = asyncio.get_running_loop()
            stop = loop.time() + settings.seconds

            async def caller(cache: CacheClient) -> None:
                while loop.time() < stop:
                    started = perf_counter()
                    await cache.get_or_init("hot", fetch, settings.ttl, **options)
                    latencies.append(perf_counter() - started)
                    await asyncio.sleep(settings.pace)

            await asyncio.gather(*(caller((a, b)[i % 2]) for i in range(settings.callers)))
            misses = a.stats().misses + b.stats().misses - 1
            await a.delete("hot")
    finally:
        await r.aclose()
    latencies.sort()
    return Outcome(
        calls=len(latencies),
        fetches=fetches,
        misses=misses,
        waited=sum(t > settings.fetch_seconds / 2 for t in latencies),
        p50_us=statistics.median(latencies) * 1e6,
        p99_us=latencies[int(len(latencies) * 0.99)] * 1e6,
        max_ms=latencies[-1] * 1e3,
    )


def findings(without: Outcome, with_eager: Outcome, settings: Settings) -> list[Finding]:
    rows = tuple(
        (
            label,
            f"{o.calls:,}",
            f"{o.waited:,}",
            f"{o.misses:,}",
            f"{o.fetches:,}",
            f"{o.p50_us:,.0f} µs",
            f"{o.p99_us:,.0f} µs",
            f"{o.max_ms:,.1f} ms",
        )
        for label, o in (
            ("no eager_refresh", without),
            (f"eager_refresh={settings.fraction}", with_eager),
        )
    )
    table = Table(
        PART,
        "one hot key under a steady load",
        ("get_or_init", "calls", "waited", "misses", "fetches", "p50", "p99", "slowest"),
        rows,
        note=(
            f"{settings.callers} callers on two clients, each calling every "
            f"{settings.pace * 1000:.0f} ms for {settings.seconds:.0f} s; ttl "
            f"{settings.ttl:g} s, fetch {settings.fetch_seconds * 1000:.0f} ms. waited: calls "
            "slower than half the fetch; misses: calls that found no value (the first aside)."
        ),
    )
    result = Result(
        PART,
        "steady load: callers that waited for a fetch (eager_refresh)",
        float(with_eager.waited),
        "calls",
        0.0,
        "exactly",
        detail=(
            f"{without.waited:,} without eager_refresh; slowest call {with_eager.max_ms:.1f} ms "
            f"with it, {without.max_ms:.1f} ms without"
        ),
    )
    return [result, table]


def run(
    url: str,
    *,
    smoke: bool = False,
    settings: Settings | None = None,
    out: Callable[[str], None] = print,
) -> list[Finding]:
    settings = settings or (SMOKE if smoke else FULL)
    without = asyncio.run(_load(url, "bench-eager-0", settings, eager=False))
    with_eager = asyncio.run(_load(url, "bench-eager-1", settings, eager=True))
    found = findings(without, with_eager, settings)
    show("redicache_async eager refresh under a steady load", found, out)
    return found


main = part_main(
    "eager_refresh",
    "Eager refresh under a steady load: callers that wait for a fetch, with and without it.",
    smoke="a short, lighter load (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
