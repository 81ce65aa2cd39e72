"""A separate process for the multi-process tests: ``python tests/worker.py MODE JSON-ARGS``.

Prints one JSON line when ready and one with its results; the test drives it through Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import redis.asyncio as aioredis

from redicache_async import CacheClient


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def stampede(r: aioredis.Redis, cache: CacheClient, a: dict[str, Any]) -> None:
    async def fetch() -> dict[str, Any]:
        await r.incr(a["counter"])
        await asyncio.sleep(a["fetch_seconds"])
        return {"fetched_by": os.getpid()}

    say(ready=True)
    await r.blpop([a["go"]], timeout=30)
    started = time.time()
    results: list[tuple[float, Any]] = []

    async def caller() -> None:
        value = await cache.get_or_init(a["key"], fetch)
        results.append((time.time(), value))

    await asyncio.gather(*(caller() for _ in range(a["callers"])))
    stats = cache.stats()
    say(
        values=sorted({json.dumps(v) for _, v in results}),
        answered=len(results),
        started=started,
        last_answer=max(t for t, _ in results),
        fetches=stats.fetches,
        lock_waits=stats.lock_waits,
    )


async def hold(r: aioredis.Redis, cache: CacheClient, a: dict[str, Any]) -> None:
    """Take the key's lock with a fetch that signals its start, then runs ``fetch_seconds``."""

    async def fetch() -> str:
        await r.set(a["started"], os.getpid())
        await asyncio.sleep(a["fetch_seconds"])
        return "late"

    say(ready=True)
    value = await cache.get_or_init(a["key"], fetch)
    stats = cache.stats()
    say(value=value, fenced_writes=stats.fenced_writes, fetches=stats.fetches)


async def eager(r: aioredis.Redis, cache: CacheClient, a: dict[str, Any]) -> None:
    """Call ``get_or_init(key, eager_refresh=fraction)`` every ``pace`` s for ``seconds``; each
    fetch logs its start and end (this process's id, wall clock) on list ``log``."""

    async def fetch() -> dict[str, int]:
        await r.rpush(a["log"], json.dumps(["start", os.getpid(), time.time()]))
        await asyncio.sleep(a["fetch_seconds"])
        n = int(await r.incr(a["counter"]))
        await r.rpush(a["log"], json.dumps(["end", os.getpid(), time.time()]))
        return {"n": n}

    say(ready=True)
    await r.blpop([a["go"]], timeout=30)
    loop = asyncio.get_running_loop()
    stop = loop.time() + a["seconds"]
    seen = []
    while loop.time() < stop:
        value = await cache.get_or_init(a["key"], fetch, a["ttl"], eager_refresh=a["fraction"])
        seen.append(value["n"])
        await asyncio.sleep(a["pace"])
    stats = cache.stats()
    say(
        calls=len(seen),
        seen=seen,
        misses=stats.misses,
        lock_waits=stats.lock_waits,
        eager_refreshes=stats.eager_refreshes,
    )


async def watch(r: aioredis.Redis, cache: CacheClient, a: dict[str, Any]) -> None:
    """Read ``keys`` (each kept locally); then, at each message pushed on list ``ask``, tell
    what the local layer holds of them and what a read answers, until "stop"."""
    for key in a["keys"]:
        await cache.get(key)
    say(ready=True)
    while True:
        popped = await r.blpop([a["ask"]], timeout=30)
        if popped is None or popped[1] == b"stop":
            return
        say(
            local={key: cache.local_value(key) for key in a["keys"]},
            read={key: await cache.get(key) for key in a["keys"]},
        )


async def batch(r: aioredis.Redis, cache: CacheClient, a: dict[str, Any]) -> None:
    """One ``get_or_init_many`` of ``keys`` once ``go`` says so; each key its fetch_many is
    asked for is counted in the hash ``counter``."""

    async def fetch_many(keys: list[str]) -> dict[str, str]:
        for key in keys:
            await r.hincrby(a["counter"], key, 1)
        await asyncio.sleep(a["fetch_seconds"])
        return {key: f"{key} by {os.getpid()}" for key in keys}

    say(ready=True)
    await r.blpop([a["go"]], timeout=30)
    values = await cache.get_or_init_many(a["keys"], fetch_many)
    stats = cache.stats()
    say(values=values, fetches=stats.fetches, lock_waits=stats.lock_waits)


MODES = {"stampede": stampede, "hold": hold, "watch": watch, "eager": eager, "batch": batch}


async def main() -> None:
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    r = aioredis.Redis.from_url(args["url"])
    try:
        async with CacheClient(r, namespace=args["namespace"], **args.get("options", {})) as c:
            await MODES[mode](r, c, args)
    finally:
        await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
