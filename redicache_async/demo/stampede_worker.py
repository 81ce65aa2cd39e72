"""A worker process of the demo's first part (``--worker JSON``): one process of the stampede.

Each worker opens its own :class:`~redicache_async.CacheClient`, waits for the start signal and
asks for the cold key :data:`KEY` from many coroutines at once, counting its fetches in Redis.
Then it serves the parent's commands: ``watch`` (read the key in a loop until the regenerated
value shows, and report when the invalidation and the new value arrived), ``regenerate`` (call
``attempt_regeneration``) and ``quit`` (report its counters). :class:`DemoKeys` names the plain
Redis keys the parent and the workers coordinate through.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import redis.asyncio as aioredis

from redicache_async.client import CacheClient

from .processes import IDLE_SECONDS, POLL_SECONDS, DemoError, DemoKey, DemoKeySet, run_worker, say

__all__ = ["KEY", "DemoKeys", "worker_main"]

KEY = "report"


class DemoKeys(DemoKeySet):
    """The plain Redis keys the demo uses to coordinate, beside the cache's own keys."""

    def commands(self, index: int) -> str:
        return f"{self.namespace}:demo:cmd:{index}"

    go = DemoKey("demo:go")
    fetches = DemoKey("demo:fetches")
    regen_fetches = DemoKey("demo:regen-fetches")


async def _worker(config: dict[str, Any]) -> None:
    index: int = config["index"]
    fetch_seconds: float = config["fetch_seconds"]
    keys = DemoKeys(config["namespace"])
    pid = os.getpid()
    r = aioredis.Redis.from_url(config["url"])
    try:
        async with CacheClient(r, namespace=keys.namespace) as cache:

            async def slow_fetch() -> dict[str, Any]:
                await r.incr(keys.fetches)
                await asyncio.sleep(fetch_seconds)
                return {"generation": 1, "fetched_by": index, "pid": pid}

            say(event="ready", pid=pid)
            if await r.blpop([keys.go], timeout=IDLE_SECONDS) is None:
                raise DemoError("no start signal")
            woke = time.time()

            async def caller() -> tuple[float, Any]:
                value = await cache.get_or_init(KEY, slow_fetch, ttl=None)
                return time.time(), value

            answers = await asyncio.gather(*(caller() for _ in range(config["callers"])))
            values = sorted({json.dumps(value, sort_keys=True) for _, value in answers})
            say(
                event="stampede",
                woke=woke,
                answered_at=[at for at, _ in answers],
                values=values,
                fetches=cache.stats().fetches,
            )
            await _serve_commands(r, cache, keys, index, fetch_seconds)
    finally:
        await r.aclose()


async def _serve_commands(
    r: aioredis.Redis, cache: CacheClient, keys: DemoKeys, index: int, fetch_seconds: float
) -> None:
    while True:
        reply = await r.blpop([keys.commands(index)], timeout=IDLE_SECONDS)
        if reply is None:
            raise DemoError("no command from the parent")
        command = json.loads(reply[1])["op"]
        if command == "watch":
            await _watch(cache)
        elif command == "regenerate":
            await _regenerate(r, cache, keys, index, fetch_seconds)
        elif command == "quit":
            say(event="stats", **_stats_fields(cache))
            return


async def _watch(cache: CacheClient) -> None:
    """Read the key in a loop until the new generation shows; report when things happened."""
    first = await cache.get(KEY)
    base = cache.stats()
    say(event="watching", generation=_generation(first))
    invalidated_at: float | None = None
    at_invalidation = base
    seen_at: float | None = None
    polls = old_served = none_served = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    started = time.time()
    while loop.time() < deadline:
        stats = cache.stats()
        if invalidated_at is None and stats.invalidations_received > base.invalidations_received:
            invalidated_at = time.time()
            at_invalidation = stats
        value = await cache.get(KEY)
        polls += 1
        generation = _generation(value)
        if generation is None:
            none_served += 1
        elif generation >= 2:
            seen_at = time.time()
            break
        else:
            old_served += 1
        await asyncio.sleep(POLL_SECONDS)
    say(
        event="watched",
        invalidated_at=invalidated_at,
        seen_at=seen_at,
        poll_interval=(time.time() - started) / max(polls, 1),
        old_served=old_served,
        none_served=none_served,
        # Where the old value came from until the invalidation arrived.
        local_before=at_invalidation.local_hits - base.local_hits,
        redis_before=at_invalidation.redis_hits - base.redis_hits,
    )


async def _regenerate(
    r: aioredis.Redis, cache: CacheClient, keys: DemoKeys, index: int, fetch_seconds: float
) -> None:
    fetched_at: list[float] = []

    async def new_report() -> dict[str, Any]:
        await r.incr(keys.regen_fetches)
        await asyncio.sleep(fetch_seconds)
        fetched_at.append(time.time())
        return {"generation": 2, "fetched_by": index, "pid": os.getpid()}

    started = time.time()
    value = await cache.attempt_regeneration(KEY, new_report, ttl=None)
    returned = time.time()
    say(
        event="regenerated",
        started=started,
        fetched_at=fetched_at[0] if fetched_at else None,
        returned=returned,
        generation=_generation(value),
    )


def _generation(value: Any) -> int | None:
    return value.get("generation") if isinstance(value, dict) else None


def _stats_fields(cache: CacheClient) -> dict[str, int]:
    s = cache.stats()
    return {
        "local_hits": s.local_hits,
        "redis_hits": s.redis_hits,
        "fetches": s.fetches,
        "lock_waits": s.lock_waits,
        "invalidations_received": s.invalidations_received,
    }


def worker_main(config_json: str) -> int:
    """The ``--worker JSON`` process: its exit status."""
    return run_worker("demo worker", _worker, config_json)
