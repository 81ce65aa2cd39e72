"""smart-redis's README example, translated: ``python examples/smart_redis.py``.

A cache that builds itself at once and then every ``refresh_interval`` seconds, written as a
Redis list and a Redis hash that any client can read, and read back here through a
CacheClient. Uses the Redis at ``REDIS_URL`` if it is set; otherwise starts a throw-away server.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

from redicache_async import CacheBuilder, CacheClient, Target


def sample_data_fetching_fn() -> list[dict[str, str]]:
    """Stands for a slow report query. A plain function runs in a worker thread."""
    return [{"id": "id1", "value": "value1"}, {"id": "id2", "value": "value2"}]


async def tour(url: str) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        async with (
            CacheBuilder(r, namespace="example") as builder,
            CacheClient(r, namespace="example") as cache,
        ):
            name = await builder.register(
                sample_data_fetching_fn,
                targets=[
                    Target("sample-key-list", "list"),
                    Target("sample-key-hash", "hash", id_field="id"),
                ],
                refresh_interval=100.0,  # seconds
                name="sampleCacheName",
            )
            # Built at once by whichever instance leads "sampleCacheName" (this one, alone).
            await builder.wait_built(name, timeout=10.0)

            print("lrange sample-key-list 0 1:", await r.lrange("sample-key-list", 0, 1))
            print("hgetall sample-key-hash:   ", await r.hgetall("sample-key-hash"))
            print("get_target (list):", await cache.get_target("sample-key-list"))
            print("get_target (field):", await cache.get_target("sample-key-hash", "id2"))
            status = builder.status(name)
            print(f"status: leader {status.is_leader}, builds {status.builds}")
            assert status.builds >= 1, status
        # Closing the builder released its lease: another instance would take over at once.
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
