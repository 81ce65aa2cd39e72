"""Failover: a cluster master killed (its replica promoted), a commanded Sentinel failover, and
a Sentinel master killed.

While the topology changes, calls keep answering (from the local layer, or by fetching in
the process); afterwards writes go through again, listeners hear events again, a cold key is
fetched once across processes (locks work again) and one builder leads. Each failure gets a
set-up of its own for the module (it is changed), put back whole after each test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from redicache_async import CacheBuilder, CacheClient, RedicacheError, Target
from redicache_async.keys import KeySpace
from redicache_async.testing import ClusterServers, Failover, RedisServer, SentinelServers

from .helpers import Fetch, wait_until

pytestmark = pytest.mark.slow

#: Generous: a failover takes seconds, and the machines are shared.
RECOVERY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterServers]:
    with ClusterServers(masters=3, replicas=1) as servers:
        yield servers


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelServers]:
    with SentinelServers(replicas=1, sentinels=3) as servers:
        yield servers


@dataclass
class Failure:
    """A way to lose a master: ``connect()`` makes a client of the set-up, ``victim(key)`` says
    which server the failure will hit (for the test's records), ``fail(key)`` causes it and
    waits until the set-up has settled (it blocks: run it in a thread), ``heal()`` puts the
    set-up back whole."""

    connect: Callable[[], Any]
    fail: Callable[[str], Failover]
    heal: Callable[[], None]


@pytest.fixture
async def failure(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Failure]:
    kind: str = request.param
    clients: list[Any] = []

    if kind == "cluster master killed":
        servers: ClusterServers = request.getfixturevalue("cluster")
        killed = []

        def connect() -> Any:
            client = RedisCluster.from_url(servers.url, protocol=3)
            clients.append(client)
            return client

        def fail(key: str) -> Failover:
            victim = servers.master_for_key(key)
            killed.append(victim)
            return servers.fail_master(victim)

        def heal() -> None:
            for node in killed:
                servers.restart_node(node)

    else:
        sentinel_servers: SentinelServers = request.getfixturevalue("sentinels")
        killed_masters = []

        def connect() -> Any:
            # redis-py's Sentinel.__init__ has no annotations
            sentinel = Sentinel(sentinel_servers.sentinel_addresses)  # type: ignore[no-untyped-call, unused-ignore]
            client = sentinel.master_for(sentinel_servers.master_name, protocol=3)
            clients.append(client)
            clients.extend(sentinel.sentinels)
            return client

        if kind == "sentinel failover":

            def fail(key: str) -> Failover:
                return sentinel_servers.failover()

        else:

            def fail(key: str) -> Failover:
                killed_masters.append(sentinel_servers.master())
                return sentinel_servers.kill_master()

        def heal() -> None:
            for node in killed_masters:
                node.start()  # it comes back as a replica of the new master
            sentinel_servers.wait_master()

    yield Failure(connect, fail, heal)
    for client in clients:
        await client.aclose()
    await asyncio.to_thread(heal)


class WriteProbe:
    """Writes a value every 20 ms while a failure is caused, and notes when a write first
    failed and when one next went through: how long the library could not write."""

    def __init__(self, cache: CacheClient, key: str, value: Any) -> None:
        self.cache, self.key, self.value = cache, key, value
        self.first_failure: float | None = None
        self.recovered: float | None = None

    async def run(self, failure_caused: asyncio.Event) -> None:
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while self.recovered is None:
            try:
                await self.cache.set(self.key, self.value)
                if self.first_failure is not None:
                    self.recovered = time.monotonic()
                elif failure_caused.is_set():
                    return  # the failure is over and no write ever failed
            except RedicacheError:
                if self.first_failure is None:
                    self.first_failure = time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"no write went through in {RECOVERY_TIMEOUT} s")
            await asyncio.sleep(0.02)


async def _until_written(cache: CacheClient, key: str, value: Any) -> None:
    """Write ``value`` until a write goes through."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        try:
            await cache.set(key, value)
            return
        except RedicacheError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


ALL_FAILURES = ["cluster master killed", "sentinel failover", "sentinel master killed"]


@pytest.mark.parametrize("failure", ALL_FAILURES, indirect=True)
async def test_the_cache_answers_through_a_failover_and_converges(
    failure: Failure, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    keys = KeySpace(namespace)
    # stale_ttl: a listener that reconnects may not know what it missed (no stream on a
    # cluster, events lost in a failover): its copies are then stale, kept for fail-safe use.
    options: dict[str, Any] = {"namespace": namespace, "redis_timeout": 1.0, "stale_ttl": 60.0}
    async with (
        CacheClient(failure.connect(), **options) as a,
        CacheClient(failure.connect(), **options) as b,
    ):
        assert await a.get_or_init("page", Fetch({"v": 1})) == {"v": 1}
        assert await b.get_or_init("page", Fetch({"v": "not fetched"})) == {"v": 1}

        answers: list[Any] = []
        errors: list[BaseException] = []
        stop = asyncio.Event()

        async def keep_asking() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    # A cold key (Redis, or a fetch here) and a warm one: from the local layer,
                    # else stale, else Redis, else fetched here (a's writes invalidate b's copy,
                    # and an invalidated copy is never served, not even as a stale one).
                    answers.append((n, await b.get_or_init(f"cold-{n}", Fetch({"n": n}))))
                    answers.append((0, await b.get_or_init("page", Fetch({"v": "here"}))))
                except Exception as exc:
                    errors.append(exc)
                await asyncio.sleep(0.01)

        asker = asyncio.create_task(keep_asking())
        probe = WriteProbe(a, "page", {"v": 2})
        failure_caused = asyncio.Event()
        writer = asyncio.create_task(probe.run(failure_caused))
        try:
            asked_before = len(answers)
            failover = await asyncio.to_thread(failure.fail, keys.value("page"))
            failure_caused.set()
            await writer
            # Keep asking until b answered 5 more rounds than it had when the master was lost:
            # answers through the failover, whatever the machine's speed.
            await wait_until(
                lambda: len(answers) >= asked_before + 10 or bool(errors),
                timeout=RECOVERY_TIMEOUT,
                what="b to answer through the failover",
            )
        finally:
            stop.set()
            writer.cancel()
            await asyncio.gather(asker, writer, return_exceptions=True)
        writer.result()
        if probe.first_failure is None or probe.recovered is None:
            unwritable = 0.0
        else:
            unwritable = probe.recovered - probe.first_failure
        record_property("settled_seconds", round(failover.seconds, 3))
        record_property("unwritable_seconds", round(unwritable, 3))
        print(f"settled after {failover.seconds:.2f} s; writes failed for {unwritable:.2f} s")
        await _until_written(a, "page", {"v": 2})

        assert errors == []
        for n, answer in answers:
            assert answer in ([{"v": 1}, {"v": 2}, {"v": "here"}] if n == 0 else [{"n": n}])

        # Every process converges: b hears the write (or flushes on reconnecting) ...
        async def b_sees_the_write() -> bool:
            return bool(await b.get("page") == {"v": 2})

        await wait_until(b_sees_the_write, timeout=RECOVERY_TIMEOUT, what="b to see the write")
        # ... and a's listener hears b's writes again. It may still be subscribing to the new
        # master when b first writes: that event is lost and a's resubscription flush shows it
        # the write instead, so b writes again until a's listener has heard one.
        a_events = a.stats().invalidations_received
        version = 2

        async def a_hears_b_write() -> bool:
            nonlocal version
            version += 1
            # b may be cut off once more while the failover settles (its breaker open)
            await _until_written(b, "page", {"v": version})
            try:  # its event, if a's listener is subscribed; else the next write's
                await wait_until(
                    lambda: a.stats().invalidations_received > a_events,
                    timeout=0.5,
                    what="a to hear b's write",
                )
            except AssertionError:
                return False
            return bool(await a.get("page") == {"v": version})

        await wait_until(a_hears_b_write, timeout=RECOVERY_TIMEOUT, what="a to hear b's write")

        # ... and the write lock works again: one fetch for a cold key across both processes.
        fetch = Fetch({"after": True}, delay=0.1)
        results = await asyncio.gather(
            *(cache.get_or_init("after", fetch) for cache in (a, b) for _ in range(10))
        )
        assert results == [{"after": True}] * 20
        assert fetch.calls == 1


@pytest.mark.parametrize(
    "failure", ["cluster master killed", "sentinel master killed"], indirect=True
)
async def test_one_builder_leads_again_after_a_failover(failure: Failure, namespace: str) -> None:
    name = "report"
    keys = KeySpace(namespace)
    target = f"{namespace}-report"
    calls = 0

    def fetch() -> list[dict[str, int]]:
        nonlocal calls
        calls += 1
        return [{"id": 1, "calls": calls}]

    async with (
        CacheBuilder(failure.connect(), namespace=namespace, lease_ttl=2.0) as one,
        CacheBuilder(failure.connect(), namespace=namespace, lease_ttl=2.0) as two,
    ):
        for builder in (one, two):
            await builder.register(
                fetch, targets=[Target(target, "list")], refresh_interval=0.2, name=name
            )

        def leaders() -> int:
            return sum(builder.status(name).is_leader for builder in (one, two))

        def builds() -> int:
            return sum(builder.status(name).builds for builder in (one, two))

        await wait_until(lambda: leaders() == 1 and builds() >= 2, what="a leader that builds")
        await asyncio.to_thread(failure.fail, keys.lease(name))
        after_failover = builds()
        await wait_until(
            lambda: builds() >= after_failover + 3,
            timeout=RECOVERY_TIMEOUT,
            what="builds to go on after the failover",
        )
        await wait_until(lambda: leaders() == 1, timeout=RECOVERY_TIMEOUT, what="one leader")
        reader: aioredis.Redis = failure.connect()
        assert len(await reader.lrange(target, 0, -1)) == 1


def _subscribers(node: RedisServer, channel: str) -> int:
    """Clients subscribed to ``channel`` on ``node`` itself (classic pub/sub counts per node)."""
    client = SyncRedis(host=node.host, port=node.port, socket_timeout=2)
    try:
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])
    finally:
        client.close()


async def test_a_listener_whose_node_dies_subscribes_on_another_one(
    cluster: ClusterServers, namespace: str
) -> None:
    channel = KeySpace(namespace).channel
    options: dict[str, Any] = {"namespace": namespace, "redis_timeout": 1.0}
    b_redis = RedisCluster.from_url(cluster.url, protocol=3)
    a_redis = RedisCluster.from_url(cluster.url, protocol=3)
    killed: RedisServer | None = None
    try:
        async with CacheClient(b_redis, **options) as b:
            (host,) = [n for n in cluster.nodes if n.running and _subscribers(n, channel)]
            async with CacheClient(a_redis, **options) as a:
                await a.set("page", 1)
                assert await b.get("page") == 1  # now held in b's local layer
                flushes = b.stats().local_flushes
                killed = host
                if host in cluster.masters():
                    await asyncio.to_thread(cluster.fail_master, host)
                else:
                    host.kill()
                # No stream on a cluster: a listener that reconnects cannot know what it
                # missed, so it treats every local copy as expired.
                await wait_until(
                    lambda: b.stats().local_flushes > flushes,
                    timeout=RECOVERY_TIMEOUT,
                    what="b's listener to subscribe again",
                )
                live = [n for n in cluster.nodes if n.running]
                # a's listener was on the dead node too (a channel has one node): it may still
                # be subscribing again when b's has.
                await wait_until(
                    lambda: sum(_subscribers(n, channel) for n in live) == 2,  # a's and b's
                    timeout=RECOVERY_TIMEOUT,
                    what="both listeners to be subscribed on the live nodes",
                )
                await _until_written(a, "page", 2)

                async def b_sees_the_write() -> bool:
                    return bool(await b.get("page") == 2)

                await wait_until(b_sees_the_write, timeout=RECOVERY_TIMEOUT, what="b to see it")
                events = b.stats().invalidations_received
                await a.set("page", 3)
                await wait_until(
                    lambda: b.stats().invalidations_received > events, what="the next event"
                )
    finally:
        await a_redis.aclose()
        await b_redis.aclose()
        if killed is not None:
            await asyncio.to_thread(cluster.restart_node, killed)


async def test_reads_are_refused_by_a_replica_not_answered_as_no_value(namespace: str) -> None:
    """A client still connected to a master that a failover demoted talks to a replica, which
    answers "no value" while it resyncs: the library's reads must fail there (and answer as
    without Redis) rather than take its word."""
    with (
        RedisServer() as master,
        RedisServer(
            binary=master.binary, extra_args=["--replicaof", master.host, str(master.port)]
        ) as replica,
    ):
        async with aioredis.Redis(port=master.port) as m, CacheClient(m, namespace=namespace) as a:
            await a.set("k", {"v": 1})
            value_key = KeySpace(namespace).value("k")
            async with aioredis.Redis(port=replica.port) as r:

                async def replicated() -> bool:
                    return bool(await r.exists(value_key))

                await wait_until(replicated, timeout=RECOVERY_TIMEOUT, what="the replica's copy")
                async with CacheClient(r, namespace=namespace, redis_timeout=1.0) as b:
                    assert await b.get("k") is None
                    assert await b.get_target("some-target") is None
                    fetch = Fetch({"v": "fetched"})
                    assert await b.get_or_init("k", fetch) == {"v": "fetched"}
                    stats = b.stats()
                    assert (stats.redis_hits, fetch.calls) == (0, 1)
                    assert stats.redis_errors >= 1


def _command(node: RedisServer, *args: Any) -> Any:
    client = SyncRedis(host=node.host, port=node.port, socket_timeout=5)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _lose_the_next_write(master: RedisServer, replica: RedisServer) -> None:
    """Once the replica has everything so far, freeze it and cut its link: the master will
    acknowledge writes its replica never gets (asynchronous replication, made deterministic)."""
    assert int(_command(master, "WAIT", 1, 5000)) >= 1
    replica.pause()
    _command(master, "CLIENT", "KILL", "TYPE", "replica")


async def _converge_on_the_surviving_value(
    a: CacheClient, b: CacheClient, key: str, lost: Any, kept: Any, fail: Callable[[], None]
) -> None:
    """Both clients hold the write that will be lost; after the failover they must stop
    serving it from their local layers and answer what Redis now holds."""
    await a.set(key, lost)

    async def b_sees_it() -> bool:
        return bool(await b.get(key) == lost)

    await wait_until(b_sees_it, what="b to see the write before it is lost")
    assert a._local.peek(key) is not None
    assert b._local.peek(key) is not None
    flushes = [c.stats().local_flushes for c in (a, b)]
    await asyncio.to_thread(fail)
    # Reads may go to Redis for a while (a listener that lost its connection does not trust its
    # layer), but what must happen is that each client drops what it holds: else a listener back
    # would make the lost write an answer again.
    await wait_until(
        lambda: all(c.stats().local_flushes > n for c, n in zip((a, b), flushes, strict=True)),
        timeout=RECOVERY_TIMEOUT,
        what="both clients to drop their local copies",
    )

    async def both_see_what_redis_holds() -> bool:
        return [await a.get(key), await b.get(key)] == [kept, kept]

    await wait_until(
        both_see_what_redis_holds, timeout=RECOVERY_TIMEOUT, what="both to drop the lost write"
    )


async def test_a_write_lost_in_a_cluster_failover_is_not_served_from_local_layers(
    cluster: ClusterServers, namespace: str
) -> None:
    """Listeners sit on other nodes than the one that dies, so none reconnects: the watch of
    the cluster's epoch is what makes both processes drop the write the failover lost."""
    channel = KeySpace(namespace).channel
    options: dict[str, Any] = {"namespace": namespace, "redis_timeout": 1.0}
    a_redis = RedisCluster.from_url(cluster.url, protocol=3)
    b_redis = RedisCluster.from_url(cluster.url, protocol=2)
    killed: list[RedisServer] = []
    try:
        async with CacheClient(a_redis, **options) as a, CacheClient(b_redis, **options) as b:
            hosts = {n.port for n in cluster.nodes if n.running and _subscribers(n, channel)}
            key = next(
                f"page-{i}"
                for i in range(1000)
                if not {
                    (m := cluster.master_for_key(KeySpace(namespace).value(f"page-{i}"))).port,
                    *(r.port for r in cluster.replicas(of=m)),
                }
                & hosts
            )
            master = cluster.master_for_key(KeySpace(namespace).value(key))
            (replica,) = cluster.replicas(of=master)
            await a.set(key, "kept")
            assert await b.get(key) == "kept"

            def fail() -> None:
                master.kill()
                killed.append(master)
                replica.resume()
                cluster.wait_ok()

            _lose_the_next_write(master, replica)
            try:
                await _converge_on_the_surviving_value(a, b, key, "lost", "kept", fail)
            finally:
                if replica.paused:
                    replica.resume()
    finally:
        await a_redis.aclose()
        await b_redis.aclose()
        for node in killed:
            await asyncio.to_thread(cluster.restart_node, node)


async def test_a_write_lost_in_a_sentinel_failover_is_not_served_from_local_layers(
    sentinels: SentinelServers, namespace: str
) -> None:
    """Under Sentinel every listener is on the master that dies: each reconnects, and its
    replay finds the stream shorter than what it saw, so it drops every local copy."""
    options: dict[str, Any] = {"namespace": namespace, "redis_timeout": 1.0}
    sentinel = Sentinel(sentinels.sentinel_addresses)  # type: ignore[no-untyped-call, unused-ignore]
    clients = [sentinel.master_for(sentinels.master_name, protocol=p) for p in (3, 2)]
    master = sentinels.master()
    (replica,) = sentinels.replicas()
    try:
        async with CacheClient(clients[0], **options) as a, CacheClient(clients[1], **options) as b:
            await a.set("page", "kept")
            assert await b.get("page") == "kept"

            def fail() -> None:
                sentinels.kill_master(wait=False)
                replica.resume()
                sentinels.wait_master()

            _lose_the_next_write(master, replica)
            try:
                await _converge_on_the_surviving_value(a, b, "page", "lost", "kept", fail)
            finally:
                if replica.paused:
                    replica.resume()
    finally:
        for client in clients:
            await client.aclose()
        for node in sentinel.sentinels:
            await node.aclose()
        master.start()
        await asyncio.to_thread(sentinels.wait_master)
