"""``clear()`` (issue 17): every value of the namespace is gone, in Redis and in every process's
local layer, in one round trip whatever their number; a fetch that started before it stores
nothing that any reader takes (the issue 8 rule); builder targets and other namespaces stay."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient, ClientClosedError
from redicache_async.keys import KeySpace
from redicache_async.value_scripts import READ_OR_LOCK, WRITE

from .conftest import MakeCache
from .helpers import (
    Fetch,
    GatedRedis,
    HeldFetch,
    assert_stored_nowhere,
    command_calls,
    runs_script,
    script_calls,
    wait_until,
)
from .test_tags import hooked_client

pytestmark = pytest.mark.topologies


async def test_clear_removes_every_value_for_every_client(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("k1", {"v": 1})
    await a.set("k2", {"v": 2}, ttl=60)
    assert await b.get("k1") == {"v": 1}  # b holds local copies
    assert await b.get("k2") == {"v": 2}
    assert b.local_value("k1") == {"v": 1}
    heard = b.stats().invalidations_received

    await a.clear()

    assert await a.get("k1") is None
    assert await a.get("k2") is None
    await wait_until(
        lambda: b.stats().invalidations_received > heard, what="b to hear of the clear"
    )
    assert b.local_value("k1") is None  # its copies went with the event
    assert await b.get("k1") is None  # and Redis's value is no value to it
    assert await b.get("k2") is None
    fetch = Fetch({"v": "again"})
    assert await b.get_or_init("k1", fetch) == {"v": "again"}
    assert fetch.calls == 1
    assert await a.get("k1") == {"v": "again"}  # a value written after the clear is one


async def test_clear_takes_one_round_trip_whatever_the_number_of_values(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    await cache.set_many({f"k{n}": n for n in range(300)})
    scans = ("scan", "keys", "del", "unlink", "getrange", "get")
    scripts, touched = await script_calls(redis), await command_calls(redis, scans)
    await cache.clear()
    # One script call, which reads the clear time (one GET), and no key is scanned or deleted.
    assert await script_calls(redis) - scripts == 1
    assert await command_calls(redis, scans) - touched == 1
    assert await cache.get_many([f"k{n}" for n in range(300)]) == {}


@pytest.mark.single_node
async def test_a_value_the_lock_script_found_before_a_clear_it_has_heard_of_is_not_taken(
    make_cache: MakeCache, redis_url: str, namespace: str
) -> None:
    """get_or_init's lock script read a value, and before its reply arrives the client hears
    of a clear: the value is gone, so the call takes the lock and fetches instead."""
    gated = GatedRedis.connect(redis_url)
    value_key = KeySpace(namespace).value("k")
    cache, other = await make_cache(gated), await make_cache()
    try:
        # The plain GET that looks first misses (the value is written while its reply is
        # held), so the lock script is what reads the value.
        gated.hold_first(lambda args: args[:2] == ("GET", value_key))
        fetch = Fetch("fetched")
        call = asyncio.create_task(cache.get_or_init("k", fetch))
        await gated.held.wait()
        await other.set("k", "written before the clear")
        gated.held.clear()
        gated.gate.set()
        gated.hold_first(runs_script(READ_OR_LOCK))
        await gated.held.wait()
        cleared = cache._cleared
        await other.clear()
        await wait_until(lambda: cache._cleared > cleared, what="the clear to be heard")
        gated.gate.set()
        assert await call == "fetched"
        assert fetch.calls == 1
    finally:
        gated.gate.set()
        await cache.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_a_fetch_that_started_before_clear_stores_nothing_anyone_takes(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    held = HeldFetch({"v": "read before the clear"})
    loading = asyncio.create_task(a.get_or_init("k", held))
    await held.started.wait()
    heard = a.stats().invalidations_received
    await b.clear()
    await wait_until(
        lambda: a.stats().invalidations_received > heard, what="a to hear of the clear"
    )
    held.release.set()
    # Its caller asked before the clear: it gets what was fetched, nobody else.
    assert await loading == {"v": "read before the clear"}
    await assert_stored_nowhere(a, b, redis, namespace, "k")


@pytest.mark.single_node
async def test_a_set_that_a_clear_overtook_on_its_way_back_is_not_kept_locally(
    make_cache: MakeCache, redis_url: str
) -> None:
    """The set's script ran, then a clear, and the set's reply arrives after the clear's event:
    the set happened before the clear, so its value is gone, here too."""
    gated = GatedRedis.connect(redis_url)
    a, b = await make_cache(gated), await make_cache()
    try:
        gated.hold_first(runs_script(WRITE))
        setting = asyncio.create_task(a.set("k", "set before the clear"))
        await gated.held.wait()
        heard = a.stats().invalidations_received
        await b.clear()
        await wait_until(
            lambda: a.stats().invalidations_received > heard, what="a to hear of the clear"
        )
        gated.gate.set()
        await setting
        assert a.local_value("k") is None
        assert await a.get("k") is None
    finally:
        gated.gate.set()
        await a.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_a_client_started_after_a_clear_does_not_read_the_cleared_values(
    make_cache: MakeCache,
) -> None:
    a = await make_cache()
    await a.set("k", "before")
    await a.clear()
    late = await make_cache()  # it heard no event: it reads the clear time when it subscribes
    assert await late.get("k") is None
    fetch = Fetch("fetched")
    assert await late.get_or_init("k", fetch) == "fetched"
    assert fetch.calls == 1


async def test_clear_keeps_other_namespaces(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a = await make_cache()
    other = await make_cache(namespace=f"{namespace}-other")
    await a.set("k", 1)
    await other.set("k", 2)
    await a.clear()
    assert await other.get("k") == 2
    assert await redis.get(KeySpace(f"{namespace}-other").cleared) is None


async def test_clear_on_a_closed_client_raises(redis: aioredis.Redis, namespace: str) -> None:
    cache = CacheClient(redis, namespace=namespace)
    with pytest.raises(ClientClosedError):
        await cache.clear()
    async with cache:
        pass
    with pytest.raises(ClientClosedError):
        await cache.clear()


@pytest.mark.not_on("single", "sentinel")
async def test_a_clear_during_a_cluster_write_is_found_after_it(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    topology: str,
    request: pytest.FixtureRequest,
) -> None:
    """The write's script cannot read the clear time on a cluster: its writer reads it before
    writing, and a clear that lands between that read and the write is found after it (the
    value's version is its claim's time, older than the clear), and the value taken back."""
    keys = KeySpace(namespace)
    hooked = hooked_client(topology, request)
    a = await make_cache(hooked)
    try:
        b = await make_cache()
        held = HeldFetch("read before the clear")
        loading = asyncio.create_task(a.get_or_init("k", held))
        await held.started.wait()
        check = hooked.hooks.hold_next_script(keys.cleared)
        held.release.set()
        await check.held.wait()  # its read before writing found no clear
        hooked.hooks.listening.clear()  # it hears of it only by reading, after the write
        await b.clear()
        check.release()
        assert await loading == "read before the clear"
        assert a.stats().fenced_writes == 1
        assert not await redis.exists(keys.value("k"))
        assert await b.get("k") is None
    finally:
        hooked.hooks.disarm()
        hooked.hooks.listening.set()
        await a.aclose()
        await hooked.aclose()
