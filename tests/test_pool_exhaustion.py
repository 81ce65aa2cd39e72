"""A Redis client whose connection pool runs out: back-pressure, not an outage.

Callers wait for a connection within ``redis_timeout`` and then get Redis's answer; past it
they get :class:`PoolExhaustedError` (on a cluster at once: its nodes' pools cannot be asked
for room). Neither counts towards the circuit breaker, and no call
answers as if Redis were down (a read's ``None``, a fetch in the process).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool

from redicache_async import CacheClient, PoolExhaustedError
from redicache_async.keys import KeySpace
from redicache_async.testing import ClusterServers
from tests.conftest import MakeCache, MakeRedis

from .helpers import Fetch, wait_until
from .values import stored_payload

pytestmark = pytest.mark.topologies

CALLERS = 60


async def _seed(make_redis: MakeRedis, namespace: str, count: int) -> None:
    """``k{i}`` holds ``{"i": i}`` in Redis, written by another client."""
    async with CacheClient(make_redis(), namespace=namespace) as writer:
        for i in range(count):
            await writer.set(f"k{i}", {"i": i})


async def test_many_callers_on_a_tiny_pool_all_get_redis_answers(
    make_redis: MakeRedis, make_cache: MakeCache, namespace: str, topology: str
) -> None:
    """A pool of 2 (one of them the listener's, off a cluster) and 60 concurrent readers of
    distinct keys: each reads its own value from Redis; none is answered as a miss or fetched
    here, and the breaker never opens. On a cluster, whose nodes' pools cannot be asked for
    room, a caller that finds its node's pool full gets PoolExhaustedError at once instead."""
    await _seed(make_redis, namespace, CALLERS)
    tiny = make_redis(max_connections=2)
    cache = await make_cache(tiny, local_max_entries=0, redis_timeout=5.0)
    fetch = Fetch({"fetched": "here"})

    async def read(i: int) -> Any:
        if i % 2:
            return await cache.get(f"k{i}")
        return await cache.get_or_init(f"k{i}", fetch)

    answers = await asyncio.gather(*(read(i) for i in range(CALLERS)), return_exceptions=True)
    for i, answer in enumerate(answers):
        if topology == "cluster" and isinstance(answer, PoolExhaustedError):
            assert "pool is exhausted" in str(answer)
            continue
        assert answer == {"i": i}, (i, answer)
    stats = cache.stats()
    assert (stats.circuit_opens, stats.circuit_skips, stats.redis_errors) == (0, 0, 0)
    assert fetch.calls == 0
    if topology != "cluster":
        assert stats.redis_hits == CALLERS
    # and Redis is still used as normal afterwards
    await cache.set("after", 1)
    assert await cache.get("after") == 1


async def _hold_every_connection(
    redis: aioredis.Redis, holders: list[asyncio.Task[Any]], list_key: str
) -> None:
    """Take every connection of ``redis``'s pool with a BLPOP that waits for ``list_key``."""
    pool = redis.connection_pool

    def taken() -> int:
        return len(pool._in_use_connections)

    async def blpop() -> Any:
        return await redis.blpop([list_key], timeout=30)

    async def hold_one() -> None:
        before = taken()
        holders.append(asyncio.create_task(blpop()))
        await wait_until(lambda: taken() > before, what="a holder")

    while pool.can_get_connection():
        await hold_one()


# A cluster node's pool cannot be asked for room, so a cluster call does not wait: see the full
# cluster node pool test below.
@pytest.mark.not_on("cluster")
async def test_a_call_waits_for_a_connection_and_then_gets_redis_answer(
    make_redis: MakeRedis, namespace: str, topology: str
) -> None:
    await _waits_for_a_connection(make_redis, namespace, topology, "plain")


# Sentinel's master_for makes a pool of its own class, never a BlockingConnectionPool.
@pytest.mark.not_on("cluster", "sentinel")
async def test_a_call_waits_for_a_connection_of_a_blocking_pool(
    make_redis: MakeRedis, namespace: str, topology: str
) -> None:
    await _waits_for_a_connection(make_redis, namespace, topology, "blocking")


async def _waits_for_a_connection(
    make_redis: MakeRedis, namespace: str, topology: str, pool: str
) -> None:
    await _seed(make_redis, namespace, 1)
    list_key = f"{namespace}-release"
    holders: list[asyncio.Task[Any]] = []
    other = make_redis()
    async with (
        _tiny_client(make_redis, topology, pool) as tiny,
        CacheClient(tiny, namespace=namespace, local_max_entries=0, redis_timeout=10.0) as cache,
    ):
        try:
            await _hold_every_connection(tiny, holders, list_key)
            reader = asyncio.create_task(cache.get("k0"))
            await wait_until(lambda: cache._gateway._gate.waiting, what="the read to wait")
            assert not reader.done()
            await other.rpush(list_key, "go")  # one holder gets it and frees its connection
            assert await reader == {"i": 0}
            stats = cache.stats()
            assert (stats.circuit_opens, stats.redis_errors, stats.redis_hits) == (0, 0, 1)
        finally:
            await other.rpush(list_key, *["go"] * len(holders))
            await asyncio.gather(*holders, return_exceptions=True)


def _tiny_client(make_redis: MakeRedis, topology: str, pool: str) -> Any:
    """A client of 3 connections at most (one of them the listener's), for ``async with``."""
    if pool == "plain":
        return make_redis(max_connections=3)
    kwargs = dict(make_redis().connection_pool.connection_kwargs)
    return aioredis.Redis.from_pool(BlockingConnectionPool(max_connections=3, timeout=30, **kwargs))


@pytest.mark.not_on("cluster")  # no wait there: see the full cluster node pool test below
async def test_past_redis_timeout_it_raises_pool_exhausted_not_unreachable(
    make_redis: MakeRedis,
    make_cache: MakeCache,
    namespace: str,
    topology: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _seed(make_redis, namespace, 1)
    tiny = make_redis(max_connections=3)
    cache = await make_cache(tiny, local_max_entries=0, redis_timeout=0.3)
    list_key = f"{namespace}-release"
    holders: list[asyncio.Task[Any]] = []
    other = make_redis()
    fetch = Fetch({"fetched": "here"})
    try:
        await _hold_every_connection(tiny, holders, list_key)
        for call in _every_call(cache, fetch):
            with pytest.raises(PoolExhaustedError, match="pool is exhausted"):
                await call()
        stats = cache.stats()
        assert (stats.circuit_opens, stats.circuit_skips, stats.redis_errors) == (0, 0, 0)
        assert fetch.calls == 0
    finally:
        await other.rpush(list_key, *["go"] * len(holders))
        await asyncio.gather(*holders, return_exceptions=True)
    assert await cache.get("k0") == {"i": 0}
    raw = await stored_payload(other, KeySpace(namespace).value("k0"))
    assert raw is not None
    assert json.loads(raw) == {"i": 0}
    assert "unreachable" not in caplog.text


def _every_call(cache: CacheClient, fetch: Fetch) -> list[Callable[[], Any]]:
    return [
        lambda: cache.get("k0"),
        lambda: cache.get_or_init("k0", fetch),
        lambda: cache.set("k0", {"i": "new"}),
        lambda: cache.delete("k0"),
        lambda: cache.attempt_regeneration("k0", fetch),
    ]


async def test_a_full_cluster_node_pool_raises_pool_exhausted_at_once(
    cluster_servers: ClusterServers, namespace: str
) -> None:
    """A cluster node's pool has no public room check, so there is no wait: the call meets
    redis-py's MaxConnectionsError, reported as PoolExhaustedError, not as an outage."""
    other = RedisCluster.from_url(cluster_servers.url)
    tiny = RedisCluster.from_url(cluster_servers.url, max_connections=2)
    holders: list[asyncio.Task[Any]] = []
    release = ""
    try:
        async with CacheClient(other, namespace=namespace) as writer:
            await writer.set("k0", {"i": 0})
        async with CacheClient(
            tiny, namespace=namespace, local_max_entries=0, redis_timeout=5.0
        ) as cache:
            node = tiny.get_node_from_key(KeySpace(namespace).value("k0"))
            assert node is not None
            release = next(
                f"{namespace}-release-{i}"
                for i in range(10_000)
                if tiny.get_node_from_key(f"{namespace}-release-{i}") is node
            )

            async def blpop() -> Any:
                return await tiny.blpop([release], timeout=30)

            async def hold_one() -> None:
                before = len(node._connections) - len(node._free)
                holders.append(asyncio.create_task(blpop()))
                await wait_until(
                    lambda: len(node._connections) - len(node._free) > before, what="a holder"
                )

            while len(node._connections) < node.max_connections or node._free:
                await hold_one()
            for call in _every_call(cache, Fetch({"fetched": "here"})):
                with pytest.raises(PoolExhaustedError, match="pool is exhausted"):
                    await call()
            stats = cache.stats()
            assert (stats.circuit_opens, stats.circuit_skips, stats.redis_errors) == (0, 0, 0)
            await other.rpush(release, *["go"] * len(holders))
            await asyncio.gather(*holders)
            assert await cache.get("k0") == {"i": 0}
    finally:
        if holders and release:
            await other.rpush(release, *["go"] * len(holders))
        await asyncio.gather(*holders, return_exceptions=True)
        await tiny.aclose()
        await other.aclose()
