"""No write is undone (DESIGN 10): a `set` or `delete` revokes the key's lock in the same script,
so a fetch that started before it cannot store its result anywhere; in one process, nothing
read before a write replaces it locally, and later callers never join a read or a load that
started before it. Also: local copies are not answers while the listener cannot hear
invalidations.

Locks here last 30 s and waits 30 s, so that a test that passes within its 2 s bounds can only
be explained by the revocation or the wake-up under test, never by an expiry or a poll.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient, value_scripts

from .conftest import MakeCache
from .helpers import Fetch, GatedRedis, HeldFetch, acl_user, runs_script, wait_until
from .values import reads_value

pytestmark = pytest.mark.topologies

LONG = {"lock_ttl": 30.0, "wait_timeout": 30.0}


async def _change(cache: CacheClient, op: str) -> None:
    if op == "delete":
        await cache.delete("p")
    else:
        await cache.set("p", "new")


@pytest.mark.parametrize("op", ["delete", "set"])
async def test_a_fetch_that_started_before_a_change_never_stores_its_result(
    make_cache: MakeCache, op: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    await _change(b, op)
    old.release.set()
    assert await loading == "old"  # its callers asked before the change
    assert a.stats().fenced_writes == 1
    expected = None if op == "delete" else "new"
    for cache in (a, b):
        assert await cache.get("p") == expected
    fresh = Fetch("fresh")
    assert await a.get_or_init("p", fresh) == (expected or "fresh")
    assert fresh.calls == (1 if op == "delete" else 0)


@pytest.mark.parametrize("op", ["delete", "set"])
async def test_a_change_in_the_same_process_is_not_undone_by_its_running_load(
    make_cache: MakeCache, op: str
) -> None:
    a = await make_cache(**LONG)
    lagging: list[Any] = []
    a._listener._on_event = lagging.append  # so that only the change itself can detach the load
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    await _change(a, op)
    # The next call does not join the load that started before the change.
    fresh = Fetch("fresh")
    expected = "fresh" if op == "delete" else "new"
    assert await asyncio.wait_for(a.get_or_init("p", fresh), 2.0) == expected
    old.release.set()
    assert await loading == "old"
    assert await a.get("p") == expected
    assert a._local.peek("p") is not None
    assert a._local.peek("p").value == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("op", ["delete", "set"])
async def test_waiters_on_a_revoked_lock_start_over_at_once(make_cache: MakeCache, op: str) -> None:
    holder, waiter, writer = [await make_cache(**LONG) for _ in range(3)]
    old = HeldFetch("old")
    holding = asyncio.create_task(holder.get_or_init("p", old))
    await old.started.wait()
    theirs = Fetch("theirs")
    waiting = asyncio.create_task(waiter.get_or_init("p", theirs))
    await wait_until(lambda: waiter.stats().lock_waits == 1, what="the waiter to wait")
    await _change(writer, op)
    # Woken by the change's event, long before the old holder's lock could expire.
    assert await asyncio.wait_for(waiting, 2.0) == ("theirs" if op == "delete" else "new")
    assert theirs.calls == (1 if op == "delete" else 0)
    assert not old.release.is_set()  # the old fetch is still running
    old.release.set()
    assert await holding == "old"
    assert await writer.get("p") == ("theirs" if op == "delete" else "new")


@pytest.mark.single_node
@pytest.mark.parametrize("local_max_entries", [0, 100])
async def test_a_read_in_flight_before_a_write_is_not_joined_after_it(
    make_cache: MakeCache, redis_url: str, local_max_entries: int
) -> None:
    """Read-your-writes: a read sent before ``set`` returns, but a ``get`` after ``set`` does
    not join it (with no local layer) and its reply does not replace the write's copy."""
    gated = GatedRedis.connect(redis_url)
    cache = await make_cache(gated, local_max_entries=local_max_entries)
    try:
        await cache.set("k", "old")
        cache._local.clear()
        lagging: list[Any] = []
        cache._listener._on_event = lagging.append  # only the write itself may do this
        gated.hold_first(reads_value)
        reading = asyncio.create_task(cache.get("k"))
        await gated.held.wait()
        await cache.set("k", "new")
        assert await asyncio.wait_for(cache.get("k"), 2.0) == "new"
        gated.gate.set()
        assert await reading == "old"  # what Redis held when it was read
        assert await cache.get("k") == "new"
    finally:
        gated.gate.set()
        await cache.aclose()
        await gated.aclose(close_connection_pool=True)


@pytest.mark.single_node
async def test_a_reply_older_than_this_process_s_write_is_not_kept_while_the_listener_lags(
    make_cache: MakeCache, redis_url: str
) -> None:
    """The write raises the guards of the reads in flight itself, without waiting for its
    event: here the listener lags, and the new value is too large for the local layer, so
    only the guard stands between the old reply and the local layer."""
    gated = GatedRedis.connect(redis_url)
    cache = await make_cache(gated, local_max_bytes=64)
    try:
        await cache.set("k", "old")
        cache._local.clear()
        lagging: list[Any] = []
        cache._listener._on_event = lagging.append  # events are received, not applied yet
        gated.hold_first(reads_value)
        reading = asyncio.create_task(cache.get("k"))
        await gated.held.wait()
        large = "n" * 200
        await cache.set("k", large)
        gated.gate.set()
        assert await reading == "old"
        assert cache._local.peek("k") is None
        assert await cache.get("k") == large
        for event in lagging:
            cache._on_event(event)
    finally:
        gated.gate.set()
        await cache.aclose()
        await gated.aclose(close_connection_pool=True)


@pytest.mark.single_node
async def test_a_write_overtaken_in_flight_by_a_newer_one_is_not_kept_locally(
    make_cache: MakeCache, redis_url: str, redis: aioredis.Redis
) -> None:
    """This process's ``set`` ran first, but another process's newer write was heard before
    the reply came back: the older value must not become the local copy."""
    gated = GatedRedis.connect(redis_url)
    cache = await make_cache(gated)
    other = await make_cache()
    try:
        await cache.set("k", "first")
        gated.hold_first(runs_script(value_scripts.WRITE))
        writing = asyncio.create_task(cache.set("k", "mine"))
        await gated.held.wait()  # the server has run it: "mine" is in Redis
        await other.set("k", "newer")
        # A marker after the newer write's event, on the same channel: once it is heard (as
        # a message that is not an event), so was that event.
        ignored = cache.stats().invalidations_ignored
        await redis.publish(cache._keys.channel, "marker")
        await wait_until(
            lambda: cache.stats().invalidations_ignored > ignored, what="the marker to be heard"
        )
        gated.gate.set()
        await writing
        assert await cache.get("k") == "newer"
    finally:
        gated.gate.set()
        await cache.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_local_copies_are_not_answers_while_the_listener_is_away(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    """A listener that lost its connection cannot hear invalidations: from that moment, a
    local copy is not served as fresh (a read goes to Redis), until the listener is back and
    has caught up."""
    reader, writer = await make_cache(), await make_cache()
    await writer.set("k", "v1")
    assert await reader.get("k") == "v1"
    assert reader._local.peek("k") is not None
    lagging: list[Any] = []
    reader._listener._on_event = lagging.append  # the writer's events will not be applied
    reader._on_listener_lost()  # as the listener reports a lost connection
    await writer.set("k", "v2")
    hits = reader.stats().local_hits
    assert await reader.get("k") == "v2"
    assert reader.stats().local_hits == hits


async def test_a_change_elsewhere_detaches_this_process_s_running_load(
    make_cache: MakeCache,
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    received = a.stats().invalidations_received
    await b.delete("p")
    await wait_until(lambda: a.stats().invalidations_received > received, what="the event")
    fresh = Fetch("fresh")
    assert await asyncio.wait_for(a.get_or_init("p", fresh), 2.0) == "fresh"
    old.release.set()
    assert await loading == "old"
    assert await b.get("p") == "fresh"


@pytest.mark.single_node
async def test_a_listener_refused_its_channel_cannot_keep_local_copies_fresh(
    make_cache: MakeCache, redis: aioredis.Redis, redis_url: str
) -> None:
    """Revoking the channel drops the listener's connection and refuses its resubscription,
    while commands still work: a read must then go to Redis, and see a write made meanwhile."""
    async with acl_user(redis, redis_url, ["+@all"]) as (user, limited):
        reader, writer = await make_cache(limited), await make_cache()
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"
        assert reader._local.peek("k") is not None
        await redis.acl_setuser(user, enabled=True, reset_channels=True)
        await wait_until(lambda: not reader._local.trusted, what="the listener to be cut off")
        await writer.set("k", "v2")
        assert await reader.get("k") == "v2"
        await redis.acl_setuser(user, enabled=True, channels=["*"])
        await wait_until(lambda: reader._local.trusted, timeout=10, what="it to be back")
        assert await reader.get("k") == "v2"
        await reader.aclose()


@pytest.mark.single_node
async def test_a_flush_detaches_the_loads_a_missed_write_may_have_overtaken(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """The listener missed a delete and cannot replay it (the stream was trimmed): it drops
    its local copies, and later callers must not join a load that started before, either."""
    a = await make_cache(**LONG)
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    # A delete (and its revocation) that a's listener never hears, and whose stream entry is
    # trimmed before a can replay it: as if a had been away past the stream's horizon.
    await redis.delete(f"{namespace}:v:{{p}}", f"{namespace}:lock:{{p}}")
    event = {"op": "del", "key": "p", "origin": "elsewhere", "version": 2**53}
    await redis.xadd(f"{namespace}:stream", {"e": json.dumps(event)})
    await redis.xtrim(f"{namespace}:stream", maxlen=0, approximate=False)
    flushes = a.stats().local_flushes
    await redis.client_kill_filter(_type="pubsub")
    await wait_until(lambda: a.stats().local_flushes > flushes, what="a to resubscribe")
    fresh = Fetch("fresh")
    assert await asyncio.wait_for(a.get_or_init("p", fresh), 2.0) == "fresh"
    old.release.set()
    assert await loading == "old"
