"""The fault proxy itself, against the session's real server: it forwards, and each fault does
what it says (latency, cut, blackhole, refuse), and closing it leaves nothing behind."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redicache_async.testing import free_port
from tests.helpers import wait_until

from .proxy import FaultProxy

PING = b"*1\r\n$4\r\nPING\r\n"
MakeClient = Callable[..., aioredis.Redis]
#: Bound that proves "did not hang", never a performance claim.
HANG = 10.0


def through(proxy: FaultProxy, url: str) -> str:
    """``url`` (credentials and database kept) with the proxy's address instead."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{proxy.host}:{proxy.port}" if auth else f"{proxy.host}:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    parts = urlsplit(redis_url)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        yield proxy


@pytest.fixture
async def via_proxy(proxy: FaultProxy, redis_url: str) -> AsyncIterator[MakeClient]:
    """``via_proxy(**kwargs)``: a client of the session's server through the proxy, without
    retries (a fault must reach the caller), closed after the test."""
    clients: list[aioredis.Redis] = []

    def make(**kwargs: Any) -> aioredis.Redis:
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        client = aioredis.Redis.from_url(through(proxy, redis_url), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def open_sockets() -> set[str]:
    """The sockets this process has open (``socket:[inode]``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


async def test_forwards_commands_and_counts_connections(
    proxy: FaultProxy, via_proxy: MakeClient, namespace: str
) -> None:
    r = via_proxy()
    assert await r.ping() is True
    await r.set(f"{namespace}:k", b"v" * 100_000)  # several chunks each way
    assert await r.get(f"{namespace}:k") == b"v" * 100_000
    await r.delete(f"{namespace}:k")
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    assert proxy.connections_accepted == 1
    assert proxy.active_connections == 1
    await r.aclose()
    await wait_until(lambda: proxy.active_connections == 0, what="the proxy to see the close")
    assert proxy.connections_accepted == 1


async def test_latency_is_added_each_way_and_keeps_order(
    proxy: FaultProxy, via_proxy: MakeClient, namespace: str
) -> None:
    r = via_proxy()
    await r.ping()
    proxy.set_latency(0.1)
    assert proxy.latency == 0.1
    started = time.monotonic()
    assert await r.ping() is True
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < HANG  # request and reply each held back 0.1 s

    # A pipeline of many commands: every reply comes back, in order.
    pipe = r.pipeline(transaction=False)
    for _ in range(200):
        pipe.incr(f"{namespace}:n")
    assert await pipe.execute() == list(range(1, 201))
    await r.delete(f"{namespace}:n")

    # Lowering the latency never lets a later chunk overtake an earlier one.
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        proxy.set_latency(0.2)
        writer.write(PING)
        await writer.drain()
        await wait_until(lambda: proxy.active_connections == 2, what="the raw connection")
        proxy.set_latency(0.0)
        writer.write(b"*2\r\n$4\r\nECHO\r\n$5\r\nlater\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), HANG) == b"+PONG\r\n"
        assert await asyncio.wait_for(reader.readline(), HANG) == b"$5\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_cut_surfaces_a_connection_error_then_the_client_reconnects(
    proxy: FaultProxy, via_proxy: MakeClient
) -> None:
    r = via_proxy()
    await r.ping()
    assert proxy.cut() == 1
    assert proxy.active_connections == 0  # cut() returns once both sides are closed
    with pytest.raises(RedisConnectionError):
        await r.ping()
    assert await r.ping() is True  # a new connection, accepted as usual
    assert proxy.connections_accepted == 2
    assert proxy.cut() == 1
    assert proxy.cut() == 0


async def test_a_close_by_the_server_reaches_the_client(
    proxy: FaultProxy, make_redis: MakeClient
) -> None:
    # A raw connection, so that what the client sees is the socket itself: redis-py may
    # notice the close when it takes the connection from its pool, and silently reconnect.
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(b"CLIENT ID\r\n")
        reply = await asyncio.wait_for(reader.readline(), 5)
        assert reply.startswith(b":")
        direct = make_redis()
        assert await direct.client_kill_filter(_id=reply[1:].strip().decode()) == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the close reached the client
        await wait_until(lambda: proxy.active_connections == 0, what="both sides to close")
    finally:
        writer.close()


async def test_blackhole_times_out_keeps_sockets_open_and_heals(
    proxy: FaultProxy, via_proxy: MakeClient
) -> None:
    r = via_proxy(socket_timeout=0.3)
    await r.ping()
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        await wait_until(lambda: proxy.active_connections == 2, what="the raw connection")
        proxy.blackhole(True)
        assert proxy.blackholed
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await r.ping()
        assert time.monotonic() - started < HANG

        # Nothing comes back on the open socket, and it is not closed either (no EOF).
        writer.write(PING)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)

        # A connection made during the partition is accepted but never answered.
        fresh = via_proxy(socket_timeout=0.3, socket_connect_timeout=2.0)
        with pytest.raises(RedisTimeoutError):
            await fresh.ping()
        assert proxy.connections_accepted >= 3
        assert proxy.active_connections >= 2

        # Healing cuts what existed, so the raw socket reads EOF, and clients work again.
        proxy.blackhole(False)
        assert await asyncio.wait_for(reader.read(), HANG) == b""
        assert await r.ping() is True
        assert await fresh.ping() is True
    finally:
        writer.close()
        await writer.wait_closed()


async def test_refuse_refuses_new_connections_only(
    proxy: FaultProxy, via_proxy: MakeClient
) -> None:
    existing = via_proxy()
    await existing.ping()
    proxy.refuse(True)
    assert proxy.refusing
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(proxy.host, proxy.port)
    fresh = via_proxy()
    with pytest.raises(RedisConnectionError, match=f"Error {errno.ECONNREFUSED} "):
        await fresh.ping()
    assert await existing.ping() is True  # established connections are untouched
    proxy.refuse(True)  # idempotent
    proxy.refuse(False)
    assert await fresh.ping() is True  # the same port listens again
    assert proxy.connections_accepted == 2


async def test_unreachable_target_closes_the_accepted_connection() -> None:
    with FaultProxy("127.0.0.1", free_port()) as proxy:
        r = aioredis.Redis.from_url(proxy.url, retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(RedisConnectionError):
                await r.ping()
        finally:
            await r.aclose()
        await wait_until(lambda: proxy.active_connections == 0, what="the connection to close")
        assert proxy.connections_accepted == 1


@pytest.mark.parametrize("fault", ["none", "latency", "blackhole", "refuse"])
async def test_close_leaves_no_thread_or_socket_behind(redis_url: str, fault: str) -> None:
    parts = urlsplit(redis_url)
    threads_before = set(threading.enumerate())
    sockets_before = open_sockets()
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    with pytest.raises(RuntimeError):
        _ = proxy.port  # no port before it starts
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    with proxy:
        for _ in range(2):
            streams.append(await asyncio.open_connection(proxy.host, proxy.port))
        streams[0][1].write(PING)
        assert await asyncio.wait_for(streams[0][0].readline(), HANG) == b"+PONG\r\n"
        await wait_until(lambda: proxy.active_connections == 2, what="both connections")
        if fault == "latency":
            proxy.set_latency(1.0)
            streams[0][1].write(PING)  # still held back when the proxy closes
        elif fault == "blackhole":
            proxy.blackhole(True)
            streams.append(await asyncio.open_connection(proxy.host, proxy.port))
            await wait_until(lambda: proxy.active_connections == 3, what="a held connection")
        elif fault == "refuse":
            proxy.refuse(True)  # a placeholder socket holds the port
    assert not proxy.running
    proxy.stop()  # idempotent
    for reader, writer in streams:
        assert await asyncio.wait_for(reader.read(), HANG) == b""  # closed by the proxy
        writer.close()
        await writer.wait_closed()
    assert set(threading.enumerate()) == threads_before
    assert open_sockets() == sockets_before
    with pytest.raises(RuntimeError):
        proxy.cut()  # controls need a running proxy
