"""One dead cluster master costs only its own slots.

The circuit breaker is one per master on a cluster: while a master is dead (killed, then failed
over to its replica), keys on the healthy masters keep reading their real values and writing,
and the dead master's keys answer as without Redis (a fetch here, or no value). Once its
replica takes over, its slots are served again: their breaker is the replica's, not the dead
node's open one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster

from redicache_async import CacheClient, listener
from redicache_async.keys import KeySpace
from redicache_async.testing import ClusterServers, RedisServer
from redicache_async.topology import slot_owner

from .helpers import Fetch, wait_until

pytestmark = pytest.mark.slow

#: Generous: a failover takes seconds, and the machines are shared.
RECOVERY_TIMEOUT = 30.0


def _serve_own_slots_when_one_is_down(cluster: ClusterServers) -> None:
    """By default (``cluster-require-full-coverage yes``) every master refuses every key
    (CLUSTERDOWN) from when a dead master is marked failed until its replica takes over; with
    ``no`` the healthy masters keep serving their slots, which is what lets a client's calls
    for them go on at all."""
    for node in cluster.nodes:
        if node.running:
            client = SyncRedis(host=node.host, port=node.port, socket_timeout=5)
            try:
                client.config_set("cluster-require-full-coverage", "no")
            finally:
                client.close()


def _allow_failover(replica: RedisServer, allowed: bool) -> None:
    """``cluster-replica-no-failover``: while it is ``yes`` the replica does not take over its
    dead master, so the test decides when the failover happens instead of racing it (with a
    1 s node timeout it could come before the dead master's breaker had a chance to open)."""
    client = SyncRedis(host=replica.host, port=replica.port, socket_timeout=5)
    try:
        client.config_set("cluster-replica-no-failover", "no" if allowed else "yes")
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterServers]:
    with ClusterServers(masters=3, replicas=1) as servers:
        _serve_own_slots_when_one_is_down(servers)
        yield servers


def _name(node: RedisServer) -> str:
    return f"{node.host}:{node.port}"


def _key_on(cluster: ClusterServers, keys: KeySpace, master: RedisServer, prefix: str) -> str:
    """A key whose value lives on ``master``."""
    return next(
        f"{prefix}-{i}"
        for i in range(10_000)
        if cluster.master_for_key(keys.value(f"{prefix}-{i}")) is master
    )


def _replicated(replica: RedisServer, key: str) -> bool:
    client = SyncRedis(
        host=replica.host, port=replica.port, socket_timeout=2, single_connection_client=True
    )
    try:
        client.readonly()
        return bool(client.exists(key))
    finally:
        client.close()


async def test_a_dead_master_costs_only_its_own_slots(
    cluster: ClusterServers, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeySpace(namespace)
    # The worst master to lose: the one with the namespace's own slot (its clear time), and
    # the client's listener on it. The listener cannot subscribe again while it is down (it
    # reads the clear time first), so every read of Redis meanwhile is a deaf client's, which
    # tries the clear time first and must go on without it.
    victim = cluster.master_for_key(keys.cleared)
    healthy_masters = [master for master in cluster.masters() if master is not victim]
    replica = cluster.replica_of(victim)
    dead_key = _key_on(cluster, keys, victim, "dead")
    healthy = {_key_on(cluster, keys, master, "ok"): master for master in healthy_masters}
    # A client that knows the cluster through a healthy master, with no local layer: every
    # read below is Redis's answer (or the answer without Redis).
    entry = healthy_masters[0]
    redis: Any = RedisCluster(host=entry.host, port=entry.port, protocol=3)
    killed = False
    try:
        await redis.initialize()
        nodes = sorted(node.name for node in redis.get_nodes())
        monkeypatch.setattr(listener, "first_attempt", lambda: nodes.index(_name(victim)))
        async with CacheClient(
            redis, namespace=namespace, local_max_entries=0, redis_timeout=1.0
        ) as cache:
            await cache.set(dead_key, "dead's value")
            for key in healthy:
                await cache.set(key, f"{key} v1")
            await wait_until(
                lambda: _replicated(replica, keys.value(dead_key)), what="the replica's copy"
            )
            breakers = cache._gateway.breaker
            fetch = Fetch("fetched here")

            _allow_failover(replica, False)
            cluster.fail_master(victim, wait=False)
            killed = True

            # The dead master's keys: answered without Redis, until its breaker opens.
            async def dead_breaker_open() -> bool:
                assert await cache.get_or_init(dead_key, fetch) == "fetched here"
                return cache.stats().circuit_opens >= 1

            await wait_until(dead_breaker_open, timeout=RECOVERY_TIMEOUT, what="its breaker")
            assert await cache.get(dead_key) is None  # skipped: no value without Redis

            assert not cache._local.trusted  # deaf: its listener was on the dead master
            # Meanwhile the healthy masters' keys read their values and write, at once.
            for round_ in range(2, 5):
                for key in healthy:
                    assert await cache.get(key) == f"{key} v{round_ - 1}"
                    await cache.set(key, f"{key} v{round_}")
            dead = breakers.node(_name(victim))
            assert dead is not None
            assert dead.is_open
            for master in healthy_masters:
                own = breakers.node(_name(master))
                assert own is not None
                assert not own.is_open
                assert own.opened == 0
            assert cache.stats().circuit_opens == 1

            # The replica takes over: the dead slots are served again, by its breaker.
            _allow_failover(replica, True)
            await asyncio.to_thread(cluster.wait_ok)

            async def dead_key_served() -> bool:
                return bool(await cache.get(dead_key) == "dead's value")

            await wait_until(dead_key_served, timeout=RECOVERY_TIMEOUT, what="the dead slots")
            await cache.set(dead_key, "written after")
            assert await cache.get(dead_key) == "written after"
            assert slot_owner(redis, keys.value(dead_key)) == _name(replica)
            promoted = breakers.node(_name(replica))
            assert promoted is not None
            assert not promoted.is_open
            assert breakers.node(_name(victim)) is None  # no longer a master: forgotten
            for key in healthy:
                assert await cache.get(key) == f"{key} v4"
    finally:
        await redis.aclose()
        _allow_failover(replica, True)
        if killed:
            await asyncio.to_thread(cluster.restart_node, victim)
            _serve_own_slots_when_one_is_down(cluster)
