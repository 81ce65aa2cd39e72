"""Redis away: the client answers instead of hanging, and converges once Redis is back.

Each test runs its own server, so that killing or freezing it disturbs no other test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient, RedisUnavailableError
from redicache_async.testing import RedisServer, free_port

from .helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


class Fetch:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(0.01)
        return self.value


async def test_new_key_with_redis_dead_is_fetched_in_process_then_converges(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.5) as cache:
        server.kill()
        fetch = Fetch("while down")
        results = await asyncio.gather(*(cache.get_or_init("new", fetch) for _ in range(20)))
        assert results == ["while down"] * 20
        assert fetch.calls == 1  # single-flight still holds in the process
        assert await cache.get_or_init("new", fetch) == "while down"  # kept locally meanwhile
        assert await cache.get("never-set") is None
        with pytest.raises(RedisUnavailableError):
            await cache.set("k", 1)
        assert cache.stats().redis_errors > 0

        server.start()  # same port, empty
        # Nothing was ever written, so the listener has nothing to replay: it is caught up.
        await wait_until(lambda: cache.stats().replays >= 1, what="the listener to return")
        # what was fetched during the outage is not trusted; the key is fetched again, under
        # the lock
        back = Fetch("after")
        assert await cache.get_or_init("new", back) == "after"
        assert back.calls == 1
        async with CacheClient(client, namespace=namespace) as other:
            assert await other.get("new") == "after"


async def test_client_starts_and_answers_while_redis_is_unreachable(namespace: str) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}")
    try:
        async with CacheClient(client, namespace=namespace, redis_timeout=0.3) as cache:
            fetch = Fetch({"ok": True})
            assert await cache.get_or_init("k", fetch) == {"ok": True}
            assert await cache.attempt_regeneration("k", fetch) == {"ok": True}
            assert fetch.calls == 2  # a regeneration always fetches
            assert await cache.get_or_init("k", fetch) == {"ok": True}
            assert fetch.calls == 2  # and what it fetched is served locally meanwhile
    finally:
        await client.aclose()


async def test_a_paused_server_does_not_hang_callers(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.3) as cache:
        await cache.set("warm", "local copy")
        assert await cache.get("warm") == "local copy"
        server.pause()
        try:
            fetch = Fetch("answered")
            result = await asyncio.wait_for(cache.get_or_init("cold", fetch), 2.0)
            assert result == "answered"
            assert await cache.get("warm") == "local copy"  # local hits need no server
            with pytest.raises(RedisUnavailableError):
                await asyncio.wait_for(cache.set("other", 1), 2.0)
        finally:
            server.resume()
        # Nothing was missed (a frozen server publishes nothing): the client carries on.
        await cache.set("after", "resumed")
        async with CacheClient(client, namespace=namespace) as other:
            assert await other.get("after") == "resumed"
            assert await other.get("cold") is None  # fetched while away, never written


async def test_local_layer_respects_its_bounds(client: aioredis.Redis, namespace: str) -> None:
    async with CacheClient(
        client, namespace=namespace, local_max_entries=3, local_max_bytes=64
    ) as cache:
        for i in range(5):
            await cache.set(f"k{i}", i)
        stats = cache.stats()
        assert (stats.local_entries, stats.local_evictions) == (3, 2)
        big = "x" * 100  # larger than local_max_bytes: kept in Redis only
        await cache.set("big", big)
        assert cache.stats().local_bytes <= 64
        assert await cache.get("big") == big
        assert await cache.get("big") == big
        assert cache.stats().local_hits == 0
        assert await cache.get("k0") == 0  # evicted locally, still in Redis


async def test_zero_entries_turns_the_local_layer_off(
    client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, local_max_entries=0) as cache:
        fetch = Fetch("v")
        for _ in range(3):
            assert await cache.get_or_init("k", fetch) == "v"
        stats = cache.stats()
        assert (stats.fetches, stats.local_hits, stats.redis_hits, stats.local_entries) == (
            1,
            0,
            2,
            0,
        )
