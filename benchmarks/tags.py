"""The cost of ``invalidate_tags`` against the number of values that carry the tag (issue 17):
it must stay flat, from one tagged value to 100,000.

For each count, that many values (~100 bytes each) are written with their own tag by
``set_many`` (1,000 a call). Each round then times ``invalidate_tags`` of every count's tag, a
batch of calls each, in a rotating order, from a client without a local layer (a process that
holds none of the values: what every call costs in Redis and on the wire). Invalidating a tag
again costs what the first call did: nothing in it depends on the values (that is the design:
one invalidation time per tag, no index of keys), which is what the figures check.

The figure is the median per call at the largest count over the median at one value; the
target: at most 1.5x. A process that holds tagged copies locally also drops them (in the
event's handling, one dict removal each): that is the local layer's cost, bounded by its size,
and shown beside as the time the writing client, which holds the copies, took to drop them.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Final

import redis.asyncio as aioredis

from redicache_async import CacheClient

from .cli import part_main
from .results import Finding, Result, Table, show

__all__ = ["FULL", "SMOKE", "Settings", "main", "run"]

PART: Final = "tags"
_WRITE_BATCH: Final = 1_000
_VALUE: Final = {"payload": "x" * 80}


@dataclass(frozen=True)
class Settings:
    counts: tuple[int, ...]
    rounds: int
    #: Calls of each count's tag per round.
    batch: int
    target: float = 1.5


FULL: Final = Settings(counts=(1, 100, 10_000, 100_000), rounds=15, batch=40)
SMOKE: Final = Settings(counts=(1, 100, 2_000), rounds=3, batch=10)


@dataclass(frozen=True)
class Outcome:
    #: Median ns per ``invalidate_tags`` call, by count.
    per_call: dict[int, float]
    #: ms the writing client took for its first ``invalidate_tags`` of each count's tag,
    #: local copies dropped included.
    first_call_ms: dict[int, float]
    #: Local copies the writing client held of each count's values.
    held: dict[int, int]


async def _measure(url: str, namespace: str, settings: Settings) -> Outcome:
    r = aioredis.Redis.from_url(url)
    samples: dict[int, list[float]] = {count: [] for count in settings.counts}
    first_call_ms: dict[int, float] = {}
    held: dict[int, int] = {}
    try:
        async with (
            CacheClient(r, namespace=namespace, local_max_entries=100_000) as writer,
            CacheClient(r, namespace=namespace, local_max_entries=0) as caller,
        ):
            for count in settings.counts:
                tag = f"tag-{count}"
                heard = writer.stats().invalidations_received
                for start in range(0, count, _WRITE_BATCH):
                    keys = range(start, min(start + _WRITE_BATCH, count))
                    await writer.set_many(
                        {f"{tag}:{n}": _VALUE for n in keys}, ttl=600.0, tags=(tag,)
                    )
                held[count] = sum(
                    writer.local_value(f"{tag}:{n}") is not None for n in range(count)
                )
                # The writer's listener has taken in the writes' own events: the call below
                # is timed alone.
                await _heard(writer, heard + count)
                started = perf_counter_ns()
                await writer.invalidate_tags(tag)
                first_call_ms[count] = (perf_counter_ns() - started) / 1e6
                assert writer.local_value(f"{tag}:0") is None
                assert await caller.get(f"{tag}:{count - 1}") is None
            counts = list(settings.counts)
            for round_ in range(settings.rounds):
                shift = round_ % len(counts)
                for count in counts[shift:] + counts[:shift]:
                    tag = f"tag-{count}"
                    started = perf_counter_ns()
                    for _ in range(settings.batch):
                        await caller.invalidate_tags(tag)
                    samples[count].append((perf_counter_ns() - started) / settings.batch)
    finally:
        await r.aclose()
    return Outcome(
        per_call={count: statistics.median(s) for count, s in samples.items()},
        first_call_ms=first_call_ms,
        held=held,
    )


async def _heard(cache: CacheClient, events: int, timeout: float = 60.0) -> None:
    """Wait until ``cache``'s listener has taken in ``events`` events in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while cache.stats().invalidations_received < events:
        if loop.time() > deadline:
            raise TimeoutError("the writer's listener did not take in its writes' events")
        await asyncio.sleep(0.01)


def findings(outcome: Outcome, settings: Settings) -> list[Finding]:
    smallest, largest = min(settings.counts), max(settings.counts)
    ratio = outcome.per_call[largest] / outcome.per_call[smallest]
    table = Table(
        PART,
        "invalidate_tags against the number of tagged values",
        ("tagged values", "per call (no local copies)", "first call, writer holding copies"),
        tuple(
            (
                f"{count:,}",
                f"{outcome.per_call[count] / 1000:,.0f} µs",
                f"{outcome.first_call_ms[count]:,.2f} ms ({outcome.held[count]:,} copies)",
            )
            for count in settings.counts
        ),
        note=(
            f"medians of {settings.rounds} rounds of {settings.batch} calls per count, in a "
            "rotating order, by a client without a local layer; the writer's first call also "
            "drops its local copies of the tagged values."
        ),
    )
    result = Result(
        PART,
        f"invalidate_tags: {largest:,} tagged values / 1",
        ratio,
        "x",
        settings.target,
        detail=(
            f"{outcome.per_call[largest] / 1000:,.0f} µs at {largest:,}, "
            f"{outcome.per_call[smallest] / 1000:,.0f} µs at {smallest:,} (medians per call)"
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
    outcome = asyncio.run(_measure(url, "bench-tags", settings))
    found = findings(outcome, settings)
    show("redicache_async invalidate_tags against the number of tagged values", found, out)
    return found


main = part_main(
    "tags",
    "invalidate_tags against the number of tagged values: flat from 1 to 100,000.",
    smoke="fewer values and rounds (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
