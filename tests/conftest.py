"""Shared fixtures: one real server for the whole session, clients that are always closed, a
namespace per test, and a check that no test leaves asyncio tasks behind.

``REDIS_URL`` points the suite at a server that is already running instead; tests that need to
crash or freeze the server (``controllable_server``) are then skipped.

Topologies: in a module marked ``pytestmark = pytest.mark.topologies``, every test that uses
``make_redis`` (so ``redis`` and ``make_cache`` too) runs once per topology: ``single`` (the
session's server), ``cluster`` (3 masters, 3 replicas) and ``sentinel`` (a master, a replica
and 3 sentinels), each started once for the session when first needed. ``--topologies`` (or
``REDICACHE_TOPOLOGIES``) narrows the list. A test of such a module that needs one node
(it inspects the server, or wraps the client) is marked ``single_node`` and runs on ``single``
only; tests of other modules do too. One that does not apply to some topologies is marked
``not_on("cluster", ...)``: it is not generated for them (rather than skipped at run time).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from redicache_async import CacheClient
from redicache_async.testing import (
    ClusterServers,
    RedisServer,
    SentinelServers,
    ServerNotFoundError,
    find_server_binary,
    server_version,
)

MakeRedis = Callable[..., aioredis.Redis]
MakeCache = Callable[..., Awaitable[CacheClient]]

_GRACE_YIELDS = 5

TOPOLOGIES = ("single", "cluster", "sentinel")


class ExternalServer:
    """A server the suite did not start (``REDIS_URL``): it can be used, not controlled."""

    def __init__(self, url: str) -> None:
        self.url = url

    def version(self) -> str:
        client = SyncRedis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            info: dict[str, Any] = client.info("server")
        finally:
            client.close()
        if "valkey_version" in info:
            return f"valkey {info['valkey_version']}"
        return f"{info.get('server_name', 'redis')} {info['redis_version']}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--topologies",
        default=os.environ.get("REDICACHE_TOPOLOGIES", ",".join(TOPOLOGIES)),
        help="comma-separated topologies for tests marked 'topologies' (default: all of "
        f"{', '.join(TOPOLOGIES)})",
    )


def _chosen_topologies(config: pytest.Config) -> list[str]:
    chosen = [name.strip() for name in str(config.getoption("topologies")).split(",")]
    unknown = sorted(set(chosen) - set(TOPOLOGIES))
    if unknown or not chosen:
        raise pytest.UsageError(f"--topologies: unknown {unknown}; choose from {TOPOLOGIES}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "topology" not in metafunc.fixturenames:
        return
    definition = metafunc.definition
    if definition.get_closest_marker("topologies") and not definition.get_closest_marker(
        "single_node"
    ):
        topologies = _chosen_topologies(metafunc.config)
        for marker in definition.iter_markers("not_on"):
            topologies = [name for name in topologies if name not in marker.args]
    else:
        topologies = ["single"]
    metafunc.parametrize("topology", topologies)


def pytest_report_header(config: pytest.Config) -> list[str]:
    external = os.environ.get("REDIS_URL")
    if external:
        try:
            version = ExternalServer(external).version()
        except Exception as error:  # the header must not break collection
            version = f"unreachable ({error})"
        return [f"redis server: {version} at REDIS_URL={_redacted(external)}"]
    try:
        binary = find_server_binary()
    except ServerNotFoundError as error:
        return [f"redis server: none found ({error})"]
    return [f"redis server: {server_version(binary)} ({binary})"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | ExternalServer]:
    """The server every test talks to: started for the session unless ``REDIS_URL`` is set."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield ExternalServer(external)
        return
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | ExternalServer) -> str:
    return redis_server.url


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running once its fixtures are torn down.

    Autouse, and requested by the client fixtures below, so it is set up before and torn down
    after them. Tasks that existed before the test (the session's own) are not counted.
    """
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    for _ in range(_GRACE_YIELDS):
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if not leaked:
        return
    described = "\n".join(repr(task) for task in leaked)
    for task in leaked:
        task.cancel()
    await asyncio.wait(leaked, timeout=1.0)
    pytest.fail(
        f"the test left {len(leaked)} asyncio task(s) running (now cancelled):\n{described}",
        pytrace=False,
    )


@pytest.fixture
def controllable_server(
    _no_leaked_tasks: None, redis_server: RedisServer | ExternalServer
) -> Iterator[RedisServer]:
    """The session's server, for tests that kill, restart or pause it; put back afterwards."""
    if not isinstance(redis_server, RedisServer):
        pytest.skip("needs a server the suite started; REDIS_URL is set")
    yield redis_server
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.running:
        redis_server.start()


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[ClusterServers]:
    with ClusterServers(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_servers() -> Iterator[SentinelServers]:
    with SentinelServers(replicas=1, sentinels=3) as sentinels:
        yield sentinels


@pytest.fixture
async def make_redis(
    _no_leaked_tasks: None, request: pytest.FixtureRequest, topology: str
) -> AsyncIterator[MakeRedis]:
    """``make_redis(protocol=3, **kwargs)``: a client of this test's topology (a ``Redis``, a
    ``RedisCluster``, or a Sentinel-managed master), closed after the test."""
    closers: list[Callable[[], Awaitable[None]]] = []

    if topology == "cluster":
        cluster: ClusterServers = request.getfixturevalue("cluster_servers")

        def make(protocol: int = 3, **kwargs: Any) -> Any:
            client = RedisCluster.from_url(cluster.url, protocol=protocol, **kwargs)
            closers.append(client.aclose)
            return client

    elif topology == "sentinel":
        servers: SentinelServers = request.getfixturevalue("sentinel_servers")

        def make(protocol: int = 3, **kwargs: Any) -> Any:
            # redis-py's Sentinel.__init__ has no annotations
            sentinel = Sentinel(servers.sentinel_addresses, protocol=protocol)  # type: ignore[no-untyped-call, unused-ignore]
            client = sentinel.master_for(servers.master_name, protocol=protocol, **kwargs)
            closers.append(client.aclose)
            closers.extend(node.aclose for node in sentinel.sentinels)
            return client

    else:
        url: str = request.getfixturevalue("redis_url")

        def make(protocol: int = 3, **kwargs: Any) -> Any:
            client = aioredis.Redis.from_url(url, protocol=protocol, **kwargs)
            closers.append(client.aclose)
            return client

    yield make
    for close in closers:
        await close()


@pytest.fixture
def redis(make_redis: MakeRedis) -> aioredis.Redis:
    return make_redis()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: tests share one server, isolated by key prefix."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def server_client_count(make_redis: MakeRedis) -> Callable[[], Awaitable[int]]:
    """``await server_client_count()``: client connections the server has now, not counting
    the one used to ask."""
    client = make_redis(single_connection_client=True)

    async def count() -> int:
        return len(await client.client_list()) - 1

    return count


@pytest.fixture
def data_node_connections(
    request: pytest.FixtureRequest, topology: str
) -> Callable[..., Awaitable[int]]:
    """``await data_node_connections(subscribed=False)``: client connections on every data node
    of this test's topology (the server; every cluster node; the Sentinel master and replicas),
    not counting the ones used to ask; with ``subscribed``, only those subscribed to a
    channel. Replication links count too, and stay the same."""
    if topology == "cluster":
        nodes = list(request.getfixturevalue("cluster_servers").nodes)
    elif topology == "sentinel":
        nodes = list(request.getfixturevalue("sentinel_servers").nodes)
    else:
        server = request.getfixturevalue("redis_server")
        if not isinstance(server, RedisServer):
            pytest.skip("needs a server the suite started; REDIS_URL is set")
        nodes = [server]

    def count_now(subscribed: bool) -> int:
        total = 0
        for node in nodes:
            if not node.running:
                continue
            client = SyncRedis(host=node.host, port=node.port, socket_timeout=2)
            try:
                clients = client.client_list()
            finally:
                client.close()
            if subscribed:
                total += sum(int(c.get("sub", 0)) > 0 for c in clients)
            else:
                total += len(clients) - 1
        return total

    async def count(subscribed: bool = False) -> int:
        return await asyncio.to_thread(count_now, subscribed)

    return count


@pytest.fixture
async def make_cache(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MakeCache]:
    """Started clients on this test's namespace (over ``redis`` unless given another client),
    closed when the test ends."""
    clients: list[CacheClient] = []

    async def make(client: aioredis.Redis | None = None, **options: Any) -> CacheClient:
        options.setdefault("namespace", namespace)
        cache = CacheClient(client if client is not None else redis, **options)
        clients.append(cache)
        await cache.start()
        return cache

    yield make
    for cache in clients:
        await cache.aclose()
