"""Helpers shared by the tests: waiting on conditions (never fixed sleeps), a subscriber that
shows what is published on a channel, a Redis client whose script replies can be held back, to
make races deterministic, and what an OpenTelemetry reader collected."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from redis.asyncio.cluster import RedisCluster

from redicache_async.keys import KeySpace
from redicache_async.testing import ServerNotFoundError, find_server_binary
from redicache_async.topology import open_subscriber


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0, what: str = ""
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.002)


class Fetch:
    """An async fetch that returns ``value`` after ``delay`` seconds (the work it stands for)
    and counts its calls."""

    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.value


@asynccontextmanager
async def acl_user(
    redis: aioredis.Redis, url: str, commands: list[str], keys: tuple[str, ...] = ("*",)
) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """A throw-away ACL user on the server of ``redis`` (``keys``, every channel,
    ``commands``), and a client of ``url`` logged in as it: ``async with acl_user(r, url,
    ["+@all"]) as (name, client)``. The client is closed and the user deleted on the way out."""
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=list(keys),
        channels=["*"],
        commands=commands,
    )
    client = aioredis.Redis.from_url(url, username=user, password=password)
    try:
        yield user, client
    finally:
        await client.aclose()
        await redis.acl_deluser(user)


class HeldFetch:
    """An async fetch that returns ``value`` once ``release`` is set; ``started`` is set when
    it is called: a fetch held in flight while a test does something meanwhile."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return self.value


async def ns_keys(r: aioredis.Redis, namespace: str) -> list[bytes]:
    """Every key under ``namespace`` but its event stream (which every write appends to)."""
    stream = f"{namespace}:stream".encode()
    return sorted([key async for key in r.scan_iter(match=f"{namespace}:*") if key != stream])


async def _infos(r: aioredis.Redis, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the server, or of every master of a cluster."""
    if isinstance(r, RedisCluster):
        replies = await r.info(section, target_nodes=RedisCluster.PRIMARIES)
        return list(replies.values())
    return [await r.info(section)]


async def masters(r: aioredis.Redis) -> list[dict[str, Any]]:
    """``INFO server`` of each server that holds data: one, or every master of a cluster."""
    return await _infos(r, "server")


#: What servers send each other, by ``INFO commandstats`` names: a replica's acknowledgements
#: (each second), Sentinel's PINGs, INFOs and hellos; and the INFO that measures the rest.
SERVER_TRAFFIC = frozenset({"replconf", "ping", "info", "publish"})


async def commands_processed(r: aioredis.Redis) -> int:
    """Commands the server (every master of a cluster) ran, those inside scripts included, but
    :data:`SERVER_TRAFFIC`: a replica or a Sentinel would move a total at any moment."""
    return sum(
        int(stats["calls"])
        for info in await _infos(r, "commandstats")
        for name, stats in info.items()
        if name.removeprefix("cmdstat_") not in SERVER_TRAFFIC
    )


async def script_calls(r: aioredis.Redis) -> int:
    """EVALSHA calls the server (every master of a cluster) received: one per script run."""
    infos = await _infos(r, "commandstats")
    return sum(int(info.get("cmdstat_evalsha", {}).get("calls", 0)) for info in infos)


def _is_evalsha(args: tuple[Any, ...]) -> bool:
    return bool(args) and str(args[0]).upper() == "EVALSHA"


def runs_script(source: str) -> Callable[[tuple[Any, ...]], bool]:
    """A :attr:`GatedRedis.holds` that matches the EVALSHA of one script."""
    sha = hashlib.sha1(source.encode()).hexdigest()
    return lambda args: _is_evalsha(args) and len(args) > 1 and args[1] == sha


def once(holds: Callable[[tuple[Any, ...]], bool]) -> Callable[[tuple[Any, ...]], bool]:
    """A :attr:`GatedRedis.holds` that matches only the first command ``holds`` matches."""
    matched = False

    def first(args: tuple[Any, ...]) -> bool:
        nonlocal matched
        if matched or not holds(args):
            return False
        matched = True
        return True

    return first


#: Every command this library sends that could write or announce something (a script, a lock's
#: SET, a build's pipeline), by their ``INFO commandstats`` names. PUBLISH is left out: Sentinel
#: publishes its hellos on the master; the library's own events go through scripts.
WRITING_COMMANDS = (
    "evalsha",
    "eval",
    "script|load",
    "set",
    "del",
    "unlink",
    "hset",
    "xadd",
    "rpush",
    "sadd",
    "zadd",
    "pexpire",
    "rename",
)


async def command_calls(r: aioredis.Redis, names: tuple[str, ...] = WRITING_COMMANDS) -> int:
    """Calls of the commands ``names`` that the server (every master of a cluster) received.
    Narrower than ``commands_processed``: reads do not move it."""
    infos = await _infos(r, "commandstats")
    return sum(
        int(info.get(f"cmdstat_{name}", {}).get("calls", 0)) for info in infos for name in names
    )


class ChannelTap:
    """A plain subscriber of one channel, to see what the library publishes there, byte for
    byte: ``async with ChannelTap(r, channel) as tap: ...; await tap.until(predicate)``.
    On a cluster it listens on one node: the ``node``-th, by name."""

    def __init__(self, redis: aioredis.Redis, channel: str, *, node: int = 0) -> None:
        self._redis = redis
        self._channel = channel
        self._node = node
        self._pubsub: Any = None
        #: Every payload received so far, in order of arrival.
        self.payloads: list[bytes] = []

    async def __aenter__(self) -> ChannelTap:
        # Any node of a cluster hears every classic PUBLISH (see redicache_async.topology).
        self._pubsub = await open_subscriber(self._redis, self._node)
        await self._pubsub.subscribe(self._channel)
        while True:  # subscribed once the server confirmed it: nothing published later is lost
            message = await self._pubsub.get_message(timeout=5.0)
            assert message is not None, f"no confirmation of the subscription to {self._channel}"
            if message["type"] == "subscribe":
                return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pubsub.aclose()

    async def until(
        self, predicate: Callable[[list[bytes]], bool], *, timeout: float = 5.0, what: str = ""
    ) -> list[bytes]:
        """Receive until ``predicate(payloads)`` holds; fail after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.payloads):
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what or predicate} on "
                    f"{self._channel}; received {self.payloads}"
                )
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None and message["type"] == "message":
                data = message["data"]
                self.payloads.append(data if isinstance(data, bytes) else data.encode())
        return self.payloads


class GatedRedis(aioredis.Redis):
    """A real client whose replies to the commands that ``holds`` matches (every EVALSHA,
    unless told otherwise) wait at a gate while it is closed.

    The server runs the command as usual; only the delivery of its reply to the caller is held
    back, which is exactly the window in which a racing invalidation can arrive, or in which a
    cancellation finds a claim that has run but whose caller does not know it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = asyncio.Event()
        self.holds: Callable[[tuple[Any, ...]], bool] = _is_evalsha

    def hold_first(self, holds: Callable[[tuple[Any, ...]], bool]) -> None:
        """Close the gate for the reply of the first command ``holds`` matches, only."""
        self.holds = once(holds)
        self.gate.clear()

    @classmethod
    def connect(cls, url: str) -> GatedRedis:
        return cls(connection_pool=aioredis.ConnectionPool.from_url(url))

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if not self.gate.is_set() and self.holds(args):
            self.held.set()
            await self.gate.wait()
        return result


# -- OpenTelemetry ----------------------------------------------------------------------------

Key = tuple[str, frozenset[tuple[str, Any]]]
Figures = dict[Key, float]


def figures(reader: InMemoryMetricReader) -> Figures:
    """Collect now: ``{(metric name, attributes): value}``."""
    data = reader.get_metrics_data()
    found: Figures = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    found[(metric.name, frozenset((point.attributes or {}).items()))] = point.value
    return found


def key(name: str, namespace: str, attributes: dict[str, str] | None = None) -> Key:
    return (name, frozenset({"redicache.namespace": namespace, **(attributes or {})}.items()))


def server_binary(purpose: str) -> str:
    """The server binary the harness runs; a skip, saying it could not ``purpose``, when there
    is none but ``REDIS_URL`` names a server to test against instead."""
    try:
        return find_server_binary()
    except ServerNotFoundError:
        if os.environ.get("REDIS_URL"):
            pytest.skip(f"no server binary to {purpose}; REDIS_URL is set")
        raise


def process_gone(pid: int) -> bool:
    """Whether no process (not even a zombie waiting to be reaped) has this id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def assert_stored_nowhere(
    a: Any, b: Any, redis: aioredis.Redis, namespace: str, key: str, **options: Any
) -> None:
    """The fetch ``a`` ran for ``key`` was overtaken (by a clear, an invalidation): no process
    takes its result as the key's value, not even ``a``, and Redis does not hold it (refused by
    the write script, or on a cluster, where the script cannot see the clear or tag times,
    taken back by its writer at once). The next ``get_or_init`` (with ``options``) fetches."""
    assert not await redis.exists(KeySpace(namespace).value(key))
    assert a.stats().fenced_writes == 1
    assert a.local_value(key) is None
    assert await a.get(key) is None
    assert await b.get(key) is None
    fetch = Fetch({"v": "after"})
    assert await b.get_or_init(key, fetch, **options) == {"v": "after"}
    assert fetch.calls == 1
