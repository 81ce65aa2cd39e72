"""Hot commands (a read's ``GET``, a write's ``EVALSHA``) sent on a pooled connection rather than
through ``Redis.execute_command`` (``direct.py``): they still reach the server, an override of
``execute_command`` still sees them, a connection cut under a command falls back to redis-py's
retry policy, and a cancelled command never leaves its reply for the next one to read.

The faulted client goes through :class:`FaultProxy`; the writer and the server's counters are
read on a direct connection.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient
from tests.faults.proxy import FaultProxy
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


async def calls(r: aioredis.Redis, command: str) -> int:
    """How many times the server has run ``command`` since it started."""
    stats = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
async def clients(
    faulted: aioredis.Redis, redis: aioredis.Redis, namespace: str
) -> AsyncIterator[tuple[CacheClient, CacheClient]]:
    """A client through the proxy, without a local layer (every read goes to Redis), and a
    writer on a direct connection."""
    async with (
        CacheClient(faulted, namespace=namespace, local_max_entries=0) as cache,
        CacheClient(redis, namespace=namespace) as writer,
    ):
        yield cache, writer


async def held_read(
    proxy: FaultProxy, redis: aioredis.Redis, cache: CacheClient, key: str
) -> asyncio.Task[Any]:
    """A ``cache.get(key)`` under way, once the server has run its ``GET``: its reply is held
    in the proxy (0.3 s of latency each way) until the caller cuts, cancels or heals."""
    gets = await calls(redis, "get")
    proxy.set_latency(0.3)
    read = asyncio.create_task(cache.get(key))

    async def ran() -> bool:
        return await calls(redis, "get") > gets

    await wait_until(ran, what="the server to run the read's GET")
    return read


class CountingRedis(aioredis.Redis):
    """A client whose ``execute_command`` is its own (as tracing wrappers do)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_reads_and_writes_reach_the_server_without_execute_command(
    redis_url: str, redis: aioredis.Redis, namespace: str
) -> None:
    r = aioredis.Redis.from_url(redis_url)
    sent: list[str] = []
    execute_command = r.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute_command(*args, **options)  # type: ignore[no-untyped-call]

    r.execute_command = spy  # type: ignore[method-assign]
    try:
        async with CacheClient(r, namespace=namespace, local_max_entries=0) as cache:
            gets, evalshas = await calls(redis, "get"), await calls(redis, "evalsha")
            await cache.set("k", {"a": 1})
            assert await cache.get("k") == {"a": 1}
            assert await calls(redis, "get") == gets + 1
            assert await calls(redis, "evalsha") == evalshas + 1
        assert "GET" not in sent
        assert "EVALSHA" not in sent
    finally:
        await r.aclose()


async def test_an_override_of_execute_command_sees_every_command(
    redis_url: str, namespace: str
) -> None:
    r = CountingRedis.from_url(redis_url)
    assert isinstance(r, CountingRedis)
    try:
        async with CacheClient(r, namespace=namespace, local_max_entries=0) as cache:
            await cache.set("k", {"a": 1})
            assert await cache.get("k") == {"a": 1}
        assert "GET" in r.sent
        assert "EVALSHA" in r.sent
    finally:
        await r.aclose()


async def test_an_execute_command_wrapped_in_place_sees_every_command(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As tracing instrumentations do: the class's own method, replaced by a wrapper of it.
    sent: list[str] = []
    execute_command = aioredis.Redis.execute_command

    @functools.wraps(execute_command)
    async def traced(self: aioredis.Redis, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute_command(self, *args, **options)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aioredis.Redis, "execute_command", traced)
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with CacheClient(r, namespace=namespace, local_max_entries=0) as cache:
            await cache.set("k", {"a": 1})
            assert await cache.get("k") == {"a": 1}
        assert "GET" in sent
        assert "EVALSHA" in sent
    finally:
        await r.aclose()


async def test_a_connection_cut_under_a_read_is_retried_as_redis_py_retries(
    proxy: FaultProxy, redis: aioredis.Redis, clients: tuple[CacheClient, CacheClient]
) -> None:
    cache, writer = clients
    await writer.set("k", "v")
    assert await cache.get("k") == "v"  # a pooled connection, in use from now on
    read = await held_read(proxy, redis, cache, "k")
    proxy.cut()
    proxy.set_latency(0)
    assert await read == "v"
    stats = cache.stats()
    assert stats.redis_errors == 0
    assert stats.circuit_opens == 0


async def test_a_cancelled_read_leaves_no_reply_for_the_next_read(
    proxy: FaultProxy, redis: aioredis.Redis, clients: tuple[CacheClient, CacheClient]
) -> None:
    cache, writer = clients
    await writer.set("a", "A")
    await writer.set("b", "B")
    assert await cache.get("a") == "A"
    read = await held_read(proxy, redis, cache, "a")
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    proxy.set_latency(0)
    # A connection handed back with that reply pending would answer GET b with it.
    assert await cache.get("b") == "B"
    assert await cache.get("a") == "A"


async def test_the_pools_health_checks_still_apply_to_direct_commands(
    redis_url: str, redis: aioredis.Redis, namespace: str
) -> None:
    """A client whose connections are health-checked (``health_check_interval``) PINGs a
    connection that sat idle past the interval before a write goes out on it."""
    r = aioredis.Redis.from_url(redis_url, health_check_interval=0.2)
    try:
        async with CacheClient(r, namespace=namespace, local_max_entries=0) as cache:
            await cache.set("k", 1)
            await asyncio.sleep(0.4)
            pings = await calls(redis, "ping")
            await cache.set("k", 2)
            assert await calls(redis, "ping") > pings
            assert await cache.get("k") == 2
    finally:
        await r.aclose()


async def test_a_value_larger_than_the_socket_buffers_is_written_whole(
    clients: tuple[CacheClient, CacheClient],
) -> None:
    cache, writer = clients
    value = {"blob": "x" * (8 * 1024 * 1024), "end": 1}  # far past the transport's high-water mark
    await writer.set("big", value)
    assert await cache.get("big") == value
    await writer.set("small", 1)  # the connection is still in step
    assert await cache.get("small") == 1
