"""Redis away: the client answers instead of hanging, and converges once Redis is back.

Each test runs its own server, so that killing or freezing it disturbs no other test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from redicache_async import CacheBuilder, CacheClient, RedisUnavailableError, Target
from redicache_async.testing import RedisServer, free_port
from tests.helpers import Fetch, wait_until
from tests.values import put_value

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


async def test_new_key_with_redis_dead_is_fetched_in_process_then_converges(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.5) as cache:
        server.kill()
        fetch = Fetch("while down", delay=0.01)
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
        back = Fetch("after", delay=0.01)
        assert await cache.get_or_init("new", back) == "after"
        assert back.calls == 1
        async with CacheClient(client, namespace=namespace) as other:
            assert await other.get("new") == "after"


async def test_client_starts_and_answers_while_redis_is_unreachable(namespace: str) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}")
    try:
        async with CacheClient(client, namespace=namespace, redis_timeout=0.3) as cache:
            fetch = Fetch({"ok": True}, delay=0.01)
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
            fetch = Fetch("answered", delay=0.01)
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
        fetch = Fetch("v", delay=0.01)
        for _ in range(3):
            assert await cache.get_or_init("k", fetch) == "v"
        stats = cache.stats()
        assert (stats.fetches, stats.local_hits, stats.redis_hits, stats.local_entries) == (
            1,
            0,
            2,
            0,
        )


async def test_a_dead_server_trips_the_breaker_so_calls_stop_trying_it(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.5) as cache:
        server.kill()
        fetch = Fetch("v", delay=0.01)
        for i in range(50):
            assert await cache.get_or_init(f"k{i}", fetch) == "v"
        stats = cache.stats()
        assert stats.circuit_opens == 1
        assert stats.circuit_skips >= 40  # most calls never tried the dead server
        assert stats.redis_errors < 10  # three to open it, then a probe per window
        server.start()
        await wait_until(lambda: cache.stats().replays >= 1, what="the listener to return")
        await cache.set("after", 1)  # the listener's return closed the breaker
        async with CacheClient(client, namespace=namespace) as other:
            assert await other.get("after") == 1


async def test_a_paused_server_costs_a_few_timeouts_not_one_per_call(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.2) as cache:
        server.pause()
        try:
            fetch = Fetch("v", delay=0.01)
            for i in range(30):
                assert await asyncio.wait_for(cache.get_or_init(f"k{i}", fetch), 1.0) == "v"
            stats = cache.stats()
        finally:
            server.resume()
        assert stats.circuit_opens == 1
        assert stats.redis_errors < 10
        assert stats.circuit_skips >= 20


async def expired(client: aioredis.Redis, namespace: str, key: str) -> bool:
    """The value has expired in Redis (the local copy expires a little earlier)."""
    return not await client.exists(f"{namespace}:v:{{{key}}}")


async def test_an_expired_value_is_served_stale_when_its_fetch_fails(
    client: aioredis.Redis, namespace: str
) -> None:
    def broken() -> Any:
        raise RuntimeError("the source is down")

    async with CacheClient(client, namespace=namespace, stale_ttl=30.0) as cache:
        assert await cache.get_or_init("k", Fetch("v1", delay=0.01), ttl=0.05) == "v1"
        await wait_until(lambda: expired(client, namespace, "k"), what="the value to expire")
        assert await cache.get_or_init("k", broken) == "v1"
        stats = cache.stats()
        assert (stats.stale_served, stats.fetch_errors) == (1, 1)
        assert not await client.exists(f"{namespace}:lock:{{k}}")  # released
        assert (
            await cache.get_or_init("k", Fetch("v2", delay=0.01)) == "v2"
        )  # a working fetch wins again
        with pytest.raises(RuntimeError, match="the source is down"):
            await cache.attempt_regeneration("k", broken)  # asked for fresh data: no fail-safe
    async with CacheClient(client, namespace=namespace) as strict:  # stale_ttl=0
        assert await strict.get_or_init("s", Fetch("v1", delay=0.01), ttl=0.05) == "v1"
        await wait_until(lambda: expired(client, namespace, "s"), what="the value to expire")
        with pytest.raises(RuntimeError, match="the source is down"):
            await strict.get_or_init("s", broken)


async def test_an_expired_value_is_served_stale_while_redis_is_dead(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, stale_ttl=30.0, redis_timeout=0.3) as cache:
        fetch = Fetch("v1", delay=0.01)
        assert await cache.get_or_init("k", fetch, ttl=0.05) == "v1"
        await wait_until(lambda: cache._local.peek("k") is None, what="the value to expire")
        server.kill()
        assert await cache.get_or_init("k", fetch) == "v1"
        assert await cache.get("k") == "v1"
        assert fetch.calls == 1  # served stale: the source was not asked again
        assert cache.stats().stale_served == 2


async def test_a_lock_claimed_by_a_timed_out_command_is_released_when_redis_returns(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    lock = f"{namespace}:lock:{{cold}}"
    async with CacheClient(client, namespace=namespace, redis_timeout=0.3, lock_ttl=60.0) as cache:
        server.pause()
        try:
            assert await cache.get_or_init("cold", Fetch("v", delay=0.01)) == "v"
        finally:
            server.resume()
        # The claim reached the server before the client gave up on it, so it ran on resume;
        # nobody would release it for a minute. The client remembers it and releases it.
        await wait_until(
            lambda: len(cache._locks.orphans) == 0, what="the orphaned claim to be released"
        )
        assert not await client.exists(lock)
        async with CacheClient(client, namespace=namespace) as other:
            fetch = Fetch("fetched at once", delay=0.01)
            assert await asyncio.wait_for(other.get_or_init("cold", fetch), 5.0) == (
                "fetched at once"
            )


class Items:
    """A builder fetch whose result the test changes; counts its calls."""

    def __init__(self) -> None:
        self.value = "first"
        self.calls = 0

    async def __call__(self) -> list[dict[str, str]]:
        self.calls += 1
        return [{"id": "a", "value": self.value}]


async def test_a_builder_steps_down_while_redis_is_frozen_and_leads_again_after(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    fetch = Items()
    async with CacheBuilder(client, namespace=namespace, lease_ttl=0.6, redis_timeout=0.2) as b:
        name = await b.register(
            fetch,
            targets=[Target(f"{namespace}-report", "hash", id_field="id")],
            refresh_interval=0.2,
        )
        await b.wait_built(name, timeout=5)
        assert b.status(name).is_leader
        server.pause()
        try:
            # Its renewals go unanswered: it stops building before its lease could expire.
            await wait_until(lambda: not b.status(name).is_leader, what="the leader to step down")
            calls = fetch.calls
            await asyncio.sleep(0.5)  # several intervals: no build may start meanwhile
            assert fetch.calls == calls
        finally:
            server.resume()
        fetch.value = "after the freeze"
        await wait_until(lambda: b.status(name).is_leader, what="the builder to lead again")
        await wait_until(
            lambda: read_item(client, f"{namespace}-report", "a", "after the freeze"),
            what="a build after the freeze",
        )


async def test_a_builder_rebuilds_a_restarted_empty_server_at_once(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    fetch = Items()
    async with CacheBuilder(client, namespace=namespace, lease_ttl=0.6, redis_timeout=0.2) as b:
        name = await b.register(
            fetch,
            targets=[Target(f"{namespace}-report", "hash", id_field="id")],
            refresh_interval=3600,  # only a lost state can explain a second build
        )
        await b.wait_built(name, timeout=5)
        server.kill()
        await wait_until(lambda: not b.status(name).is_leader, what="the leader to step down")
        server.start()  # empty: no lease, no record of the last build, no target
        fetch.value = "rebuilt"
        await wait_until(
            lambda: read_item(client, f"{namespace}-report", "a", "rebuilt"),
            what="the target to be rebuilt",
        )
        assert fetch.calls == 2
        assert b.status(name).is_leader


async def read_item(client: aioredis.Redis, key: str, field: str, value: str) -> bool:
    try:
        raw = await client.hget(key, field)
    except (ConnectionError, RedisError):
        return False
    return raw is not None and json.loads(raw)["value"] == value


async def test_a_value_fetched_during_a_short_freeze_gives_way_to_redis_s(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    # The freeze is shorter than the listener notices, so nothing resubscribes: the value
    # fetched meanwhile must still give way to the one in Redis (found by the soak test).
    async with CacheClient(client, namespace=namespace, redis_timeout=0.3) as cache:
        await put_value(client, f"{namespace}:v:{{k}}", '"in redis"')
        server.pause()
        try:
            assert await cache.get_or_init("k", Fetch("fetched while frozen", delay=0.01)) == (
                "fetched while frozen"
            )
        finally:
            server.resume()
        assert await cache.get_or_init("k", Fetch("unused", delay=0.01)) == "fetched while frozen"
        await wait_until(
            lambda: has(cache, "k", "in redis"), what="the client to converge on Redis's value"
        )
        stats = cache.stats()
        assert (stats.fetches, stats.local_flushes, stats.replays) == (1, 0, 0)


async def test_a_value_fetched_without_redis_is_the_fallback_while_it_stays_away(
    server: RedisServer, client: aioredis.Redis, namespace: str
) -> None:
    async with CacheClient(client, namespace=namespace, redis_timeout=0.3) as cache:
        server.kill()
        fetch = Fetch("fetched once", delay=0.01)
        assert await cache.get_or_init("k", fetch) == "fetched once"
        await wait_until(lambda: cache._local.peek("k") is None, what="its freshness to end")
        assert await cache.get_or_init("k", fetch) == "fetched once"
        assert fetch.calls == 1  # an expensive fetch is not repeated for every outage second
        assert cache.stats().stale_served == 1


async def has(cache: CacheClient, key: str, expected: Any) -> bool:
    return bool(await cache.get_or_init(key, Fetch("unused", delay=0.01)) == expected)


@pytest.fixture
async def second_client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()


async def test_a_lease_taken_by_a_timed_out_campaign_is_released_when_redis_returns(
    server: RedisServer, client: aioredis.Redis, second_client: aioredis.Redis, namespace: str
) -> None:
    lease_ttl = 6.0
    targets = [Target(f"{namespace}-report", "list")]
    async with (
        CacheBuilder(client, namespace=namespace, lease_ttl=lease_ttl, redis_timeout=0.2) as a,
        CacheBuilder(
            second_client,
            namespace=namespace,
            lease_ttl=lease_ttl,
            redis_timeout=0.2,
        ) as b,
    ):
        name = await a.register(Items(), targets=targets, refresh_interval=3600, name="r")
        await a.wait_built(name, timeout=5)
        await b.register(Items(), targets=targets, refresh_interval=3600, name="r")
        # b's campaign was refused, and told it of a's recorded build
        await wait_until(lambda: b.status(name).last_built_at is not None, what="a refusal")
        # b campaigns again, on its open connection, when a's lease would expire: during the
        # freeze, so it times out; it runs when the server resumes, taking the lease for a
        # token that b no longer waits for.
        server.pause()
        try:
            await wait_until(
                lambda: (
                    len(b._registrations[name]._leadership._locks.orphans) >= 1
                    and not a.status(name).is_leader
                ),
                timeout=3 * lease_ttl,
                what="b's campaign to time out and a to step down",
            )
            # a's lease must have expired by the server's clock when it resumes (a's last
            # renewal may have landed just before the freeze): nothing on a frozen server can
            # be watched, so let its clock run one lease.
            await asyncio.sleep(lease_ttl)
        finally:
            server.resume()
        # Without the release, nobody could lead until that lease expired, a lease later. With
        # it: the release's retry (0.5 s at most), then the followers' next campaign (2 s at
        # most after failures, sooner if the release's announcement reaches them).
        await wait_until(
            lambda: a.status(name).is_leader or b.status(name).is_leader,
            timeout=lease_ttl * 2 / 3,
            what="a leader",
        )
