"""Network faults between the client and the session's server, through :class:`FaultProxy`:
a partition (black hole), latency beyond ``redis_timeout``, connections cut under load.

The writer that changes values behind the faulted client's back connects to the server
directly, so the test can check that the faulted client catches up once the network heals.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient, RedisUnavailableError
from tests.faults.proxy import FaultProxy
from tests.helpers import Fetch, wait_until
from tests.values import stored_payload

pytestmark = pytest.mark.slow

#: A bound that shows a call did not hang: its Redis attempt (redis_timeout) plus a fetch.
REDIS_TIMEOUT = 0.3
BOUND = 4 * REDIS_TIMEOUT + 1.0


async def in_redis(r: aioredis.Redis, namespace: str, key: str) -> Any:
    raw = await stored_payload(r, f"{namespace}:v:{{{key}}}")
    return None if raw is None else json.loads(raw)


async def test_a_partition_never_blocks_a_caller_past_its_bound_and_heals(
    proxy: FaultProxy, faulted: aioredis.Redis, redis: aioredis.Redis, namespace: str
) -> None:
    async with (
        CacheClient(faulted, namespace=namespace, redis_timeout=REDIS_TIMEOUT) as cache,
        CacheClient(redis, namespace=namespace) as writer,
    ):
        await writer.set("warm", "v1")
        assert await cache.get("warm") == "v1"
        proxy.blackhole(True)
        try:
            # Local hits need no network; misses are fetched here; writes fail, all in bound.
            assert await asyncio.wait_for(cache.get("warm"), BOUND) == "v1"
            fetch = Fetch("fetched during the partition")
            for i in range(10):
                cold = cache.get_or_init(f"cold{i}", fetch)
                assert await asyncio.wait_for(cold, BOUND) == "fetched during the partition"
            with pytest.raises(RedisUnavailableError):
                await asyncio.wait_for(cache.set("x", 1), BOUND)
            assert cache.stats().circuit_opens == 1
            await writer.set("warm", "v2")  # its event cannot reach the partitioned client
        finally:
            proxy.blackhole(False)
        # Healed: the listener reconnects, replays the missed event, and drops only that key.
        await wait_until(lambda: cache.stats().replays >= 1, what="the listener to catch up")
        assert await cache.get("warm") == "v2"
        assert cache.stats().local_flushes == 0
        # What was fetched during the partition was never shared: Redis is asked again.
        assert await cache.get_or_init("cold0", Fetch("after")) == "after"
        assert await in_redis(redis, namespace, "cold0") == "after"


async def test_latency_beyond_redis_timeout_is_an_outage_and_recovers(
    proxy: FaultProxy, faulted: aioredis.Redis, redis: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(faulted, namespace=namespace, redis_timeout=REDIS_TIMEOUT) as cache:
        proxy.set_latency(0.05)  # slow but within bounds: everything works as usual
        await cache.set("k", "v1")
        assert await cache.get_or_init("k", Fetch("unused")) == "v1"
        assert await in_redis(redis, namespace, "k") == "v1"
        assert cache.stats().redis_errors == 0

        proxy.set_latency(2 * REDIS_TIMEOUT)
        fetch = Fetch("answered here")
        for i in range(8):
            result = await asyncio.wait_for(cache.get_or_init(f"slow{i}", fetch), BOUND)
            assert result == "answered here"
        assert cache.stats().circuit_opens == 1

        proxy.set_latency(0)
        proxy.cut()  # replies still in flight at the old latency would arrive out of step
        # A probe finds Redis answering again: calls go to it, and writes land.
        await wait_until(
            lambda: try_set(cache, "after", "recovered"), timeout=10, what="a write to land"
        )
        assert await in_redis(redis, namespace, "after") == "recovered"


async def try_set(cache: CacheClient, key: str, value: Any) -> bool:
    try:
        await cache.set(key, value)
    except RedisUnavailableError:
        return False
    return True


def returns(cache: CacheClient) -> int:
    """How many times the client's listener came back (replaying, or flushing)."""
    stats = cache.stats()
    return stats.replays + stats.local_flushes


async def wait_for_returns(cache: CacheClient, count: int) -> None:
    await wait_until(lambda: returns(cache) >= count, what="the listener to come back")


async def test_connections_cut_under_load_lose_no_invalidation(
    proxy: FaultProxy, faulted: aioredis.Redis, redis: aioredis.Redis, namespace: str
) -> None:
    keys = [f"k{i}" for i in range(40)]
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def load(cache: CacheClient, seed: int) -> int:
        rng = random.Random(seed)
        calls = 0
        while not stop.is_set():
            key = rng.choice(keys)
            try:
                if rng.random() < 0.3:
                    await asyncio.wait_for(cache.set(key, f"{seed}-{calls}"), BOUND)
                else:
                    await asyncio.wait_for(cache.get_or_init(key, Fetch(f"f{seed}")), BOUND)
            except RedisUnavailableError:
                pass  # a write during a cut: documented
            except BaseException as exc:
                errors.append(exc)
                raise
            calls += 1
        return calls

    async with (
        CacheClient(faulted, namespace=namespace, redis_timeout=REDIS_TIMEOUT) as cut_off,
        CacheClient(redis, namespace=namespace) as direct,
    ):
        tasks = [asyncio.create_task(load(cut_off, i)) for i in range(3)]
        tasks += [asyncio.create_task(load(direct, 10 + i)) for i in range(3)]
        try:
            for cuts in range(1, 7):
                proxy.cut()
                await wait_for_returns(cut_off, cuts)
        finally:
            stop.set()
            calls = await asyncio.gather(*tasks)
        assert errors == []
        assert all(n > 0 for n in calls)
        stats = cut_off.stats()
        assert stats.replays >= 6
        assert stats.local_flushes == 0  # every gap was replayed, none had to be flushed

        async def agrees() -> bool:
            for key in keys:
                if await cut_off.get(key) != await in_redis(redis, namespace, key):
                    return False
            return True

        await wait_until(agrees, what="the cut-off client to agree with Redis on every key")


async def test_a_silent_partition_ends_local_freshness_within_the_detection_bound(
    proxy: FaultProxy, faulted: aioredis.Redis, redis: aioredis.Redis, namespace: str
) -> None:
    """Packets vanish and no error comes: the listener's idle ping goes unanswered, and within
    ``ping_interval + redis_timeout`` local copies stop being fresh (they stay a fallback)."""
    cache = CacheClient(faulted, namespace=namespace, redis_timeout=REDIS_TIMEOUT)
    ping_interval = 0.2
    cache._listener._ping_interval = ping_interval  # the default is 5 s
    async with cache, CacheClient(redis, namespace=namespace) as writer:
        await writer.set("k", "v1")
        assert await cache.get("k") == "v1"
        assert cache._local.peek("k") is not None
        proxy.blackhole(True)
        try:
            await wait_until(
                lambda: not cache._local.trusted,
                timeout=ping_interval + REDIS_TIMEOUT + 2.0,
                what="the listener to notice the silence",
            )
            assert cache._local.peek("k") is None
            served = cache.stats().stale_served
            assert await cache.get("k") == "v1"  # the fallback, within its TTL (none)
            assert cache.stats().stale_served == served + 1
        finally:
            proxy.blackhole(False)
        await wait_until(lambda: cache._local.trusted, what="the listener to come back")
