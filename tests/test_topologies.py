"""ClusterServers and SentinelServers against the real server binary: each set-up starts whole,
redis-py's own cluster and Sentinel clients work through it, the failures it inflicts are the
ones those clients then live through, and nothing is left running afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from redicache_async.testing import (
    ClusterServers,
    RedisServer,
    SentinelServers,
    ServerStartError,
)

from .helpers import process_gone, server_binary

pytestmark = pytest.mark.slow  # every test runs several server processes for seconds

T = TypeVar("T")

# How long a client may take to find its way to a new master once the set-up has settled:
# one topology refresh, not a failure-detection timeout.
CLIENT_CATCH_UP = 10.0


@pytest.fixture(scope="module")
def binary() -> str:
    return server_binary("start set-ups with")


@pytest.fixture
def cluster(binary: str) -> Iterator[ClusterServers]:
    with ClusterServers(masters=3, replicas=1, binary=binary) as started:
        yield started


@pytest.fixture
def sentinel_setup(binary: str) -> Iterator[SentinelServers]:
    with SentinelServers(replicas=1, sentinels=3, binary=binary) as started:
        yield started


@pytest.fixture
async def sentinel_client(sentinel_setup: SentinelServers) -> AsyncIterator[Sentinel]:
    """redis-py's own Sentinel client of the set-up; its connections to the Sentinels are
    closed after the test."""
    addresses = sentinel_setup.sentinel_addresses
    sentinel = Sentinel(addresses, socket_timeout=2.0)  # type: ignore[no-untyped-call, unused-ignore]  # unannotated
    yield sentinel
    for client in sentinel.sentinels:
        await client.aclose()


def get_sync(server: RedisServer, key: str) -> bytes | None:
    """``GET key`` on that very node, not through a client that follows redirections."""
    with SyncRedis(host=server.host, port=server.port, socket_timeout=2.0) as direct:
        value: bytes | None = direct.get(key)
    return value


async def eventually(action: Callable[[], Awaitable[T]], *, what: str) -> T:
    """``action()``'s result once it stops raising ``RedisError``.

    For a client's first command after a failover, which may meet the connection the failover
    broke. Seen here with redis-py 8.1: a ``RedisCluster`` refreshed its slot map and retried
    by itself; a ``Sentinel.master_for`` client raised ``ConnectionError`` ("Connection closed
    by server", or "The previous master is now a slave") once, and its next command asked the
    Sentinels again and reached the new master. Fails after ``CLIENT_CATCH_UP`` seconds.
    """
    deadline = time.monotonic() + CLIENT_CATCH_UP
    while True:
        try:
            return await action()
        except RedisError as error:
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: still failing after {CLIENT_CATCH_UP:g} s: {error!r}")
        await asyncio.sleep(0.05)


def pids_and_directories(servers: tuple[RedisServer, ...]) -> tuple[list[int], list[Path]]:
    pids = [server.pid for server in servers if server.pid is not None]
    directories = [server.directory for server in servers if server.directory is not None]
    return pids, directories


# -- cluster -----------------------------------------------------------------------------------


async def test_cluster_spreads_keys_over_its_three_masters(cluster: ClusterServers) -> None:
    masters, replicas = cluster.masters(), cluster.replicas()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert {cluster.replica_of(master).port for master in masters} == {r.port for r in replicas}
    assert cluster.startup_nodes == [("127.0.0.1", node.port) for node in cluster.nodes]
    assert cluster.master_of_slot(0) is cluster.nodes[0]
    assert cluster.master_of_slot(16383) is cluster.nodes[2]

    client = RedisCluster.from_url(cluster.url)
    try:
        keys = [f"spread:{index}" for index in range(30)]
        for key in keys:
            assert await client.set(key, key)
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
    finally:
        await client.aclose()
    owners = {key: cluster.master_for_key(key) for key in keys}
    assert {owner.port for owner in owners.values()} == {master.port for master in masters}
    for key, owner in owners.items():
        assert get_sync(owner, key) == key.encode()


async def test_fail_master_promotes_its_replica_and_the_client_follows(
    cluster: ClusterServers,
) -> None:
    key = "failover:key"
    victim = cluster.master_for_key(key)
    heir = cluster.replica_of(victim)
    client = RedisCluster.from_url(cluster.url)
    try:
        await client.set(key, "before")
        # The replica must have the write before its master dies, or the failover loses it.
        with SyncRedis(host=victim.host, port=victim.port) as direct:
            assert direct.wait(1, 2000) == 1

        outcome = cluster.fail_master(victim)

        assert outcome.new_master is heir
        assert not victim.running
        assert 0 < outcome.seconds < 15
        assert cluster.master_for_key(key) is heir
        assert len(cluster.masters()) == 3
        await eventually(
            lambda: client.set(key, "after"), what="a write through the same RedisCluster"
        )
        assert await client.get(key) == b"after"
    finally:
        await client.aclose()
    assert get_sync(heir, key) == b"after"

    cluster.restart_node(victim)
    assert victim.running
    assert cluster.replicas(of=heir) == [victim]
    assert cluster.master_for_key(key) is heir


def test_fail_master_refuses_what_is_not_a_live_master(cluster: ClusterServers) -> None:
    replica = cluster.replicas()[0]
    with pytest.raises(ValueError, match="not a live master"):
        cluster.fail_master(replica)
    outsider = RedisServer(binary=cluster.binary)
    with pytest.raises(ValueError, match="not a node of this cluster"):
        cluster.fail_master(outsider)
    with pytest.raises(RuntimeError, match="is running"):
        cluster.restart_node(replica)


def test_cluster_stop_leaves_nothing_and_is_idempotent(cluster: ClusterServers) -> None:
    cluster.nodes[-1].kill()  # a dead node among the live ones is stopped all the same
    pids, directories = pids_and_directories(cluster.nodes)
    assert len(pids) == len(cluster.nodes) - 1
    assert len(directories) == len(cluster.nodes)

    cluster.stop()

    assert all(process_gone(pid) for pid in pids)
    assert not any(directory.exists() for directory in directories)
    assert not any(node.running for node in cluster.nodes)
    cluster.stop()


def test_cluster_stops_what_it_started_when_start_fails(
    binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ClusterServers(masters=3, replicas=0, binary=binary)
    seen: list[tuple[list[int], list[Path]]] = []

    def interrupted_forming(self: ClusterServers) -> None:
        seen.append(pids_and_directories(self.nodes))
        raise KeyboardInterrupt

    monkeypatch.setattr(ClusterServers, "_form", interrupted_forming)
    with pytest.raises(KeyboardInterrupt):
        cluster.start()
    [(pids, directories)] = seen
    assert len(pids) == 3
    assert all(process_gone(pid) for pid in pids)
    assert not any(directory.exists() for directory in directories)


# -- Sentinel ----------------------------------------------------------------------------------


async def test_sentinel_master_for_writes_and_reads(
    sentinel_setup: SentinelServers, sentinel_client: Sentinel
) -> None:
    master = sentinel_setup.master()
    assert master is sentinel_setup.nodes[0]
    assert sentinel_setup.replicas() == [sentinel_setup.nodes[1]]
    assert sentinel_setup.sentinel_addresses == [
        ("127.0.0.1", sentinel.port) for sentinel in sentinel_setup.sentinels
    ]
    name = sentinel_setup.master_name
    assert await sentinel_client.discover_master(name) == ("127.0.0.1", master.port)

    client: Redis = sentinel_client.master_for(name)
    try:
        assert await client.set("sentinel:key", "value")
        assert await client.get("sentinel:key") == b"value"
    finally:
        await client.aclose()
    assert get_sync(master, "sentinel:key") == b"value"


async def test_failover_moves_the_master_and_the_same_client_follows(
    sentinel_setup: SentinelServers, sentinel_client: Sentinel
) -> None:
    old_master, replica = sentinel_setup.nodes
    client: Redis = sentinel_client.master_for(sentinel_setup.master_name)
    try:
        await client.set("failover:key", "before")

        outcome = sentinel_setup.failover()

        assert outcome.new_master is replica
        assert sentinel_setup.master() is replica
        assert sentinel_setup.replicas() == [old_master]  # demoted, not left a second master
        assert 0 < outcome.seconds < 15
        await eventually(
            lambda: client.set("failover:key", "after"),
            what="a write through the same master_for client",
        )
    finally:
        await client.aclose()
    assert get_sync(replica, "failover:key") == b"after"


async def test_kill_master_promotes_the_replica_and_the_old_master_rejoins(
    sentinel_setup: SentinelServers, sentinel_client: Sentinel
) -> None:
    old_master, replica = sentinel_setup.nodes
    client: Redis = sentinel_client.master_for(sentinel_setup.master_name)
    try:
        await client.set("kill:key", "before")

        outcome = sentinel_setup.kill_master()

        assert outcome.new_master is replica
        assert not old_master.running
        assert sentinel_setup.replicas() == []
        await eventually(
            lambda: client.set("kill:key", "after"),
            what="a write through the same master_for client",
        )
    finally:
        await client.aclose()

    old_master.start()  # back empty and as a master, until the Sentinels reconfigure it
    assert sentinel_setup.wait_master() is replica
    assert sentinel_setup.replicas() == [old_master]
    assert get_sync(old_master, "kill:key") == b"after"


def test_sentinel_stop_leaves_nothing_and_is_idempotent(sentinel_setup: SentinelServers) -> None:
    servers = (*sentinel_setup.nodes, *sentinel_setup.sentinels)
    pids, directories = pids_and_directories(servers)
    assert len(pids) == len(directories) == 5

    sentinel_setup.stop()

    assert all(process_gone(pid) for pid in pids)
    assert not any(directory.exists() for directory in directories)
    sentinel_setup.stop()


def test_sentinel_start_failure_stops_what_started_and_says_why(binary: str) -> None:
    broken = SentinelServers(binary=binary, down_after_ms=0)  # refused by the Sentinels
    with pytest.raises(ServerStartError, match="down-after-milliseconds") as caught:
        broken.start()
    assert "zero time parameter" in str(caught.value).lower()
    assert not any(server.running for server in (*broken.nodes, *broken.sentinels))
    assert all(server.directory is None for server in (*broken.nodes, *broken.sentinels))


# -- both --------------------------------------------------------------------------------------


def test_set_ups_left_running_are_stopped_at_interpreter_exit(binary: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from redicache_async.testing import ClusterServers, SentinelServers

        cluster = ClusterServers(masters=1, replicas=1, binary=sys.argv[1]).start()
        sentinel = SentinelServers(replicas=1, sentinels=1, binary=sys.argv[1]).start()
        for server in (*cluster.nodes, *sentinel.nodes, *sentinel.sentinels):
            print(server.pid, server.directory)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, binary],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
    assert len(lines) == 5
    for pid, directory in lines:
        assert process_gone(int(pid))
        assert not Path(directory).exists()
