"""Every claim is released (DESIGN 11), and nothing runs after close (DESIGN 9): a lock taken by
a call that then failed, was refused, or was cancelled while its claim was on the wire is
released (and announced), so nobody waits ``lock_ttl`` for it; after ``aclose()`` no fetch
starts and no command is sent.

Locks here last 30 s, so that a lock gone within the tests' bounds was released, not expired.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from redicache_async import CacheBuilder, ClientClosedError, Target
from redicache_async.lease_scripts import ACQUIRE_LEADER
from redicache_async.value_scripts import READ_OR_LOCK

from .conftest import MakeCache
from .helpers import Fetch, GatedRedis, HeldFetch, acl_user, runs_script, wait_until
from .values import reads_value

LOCK_TTL = 30.0


@pytest.fixture
async def gated(redis_url: str) -> AsyncIterator[GatedRedis]:
    """A gated client; list it before ``make_cache`` so that the caches close before it."""
    client = GatedRedis.connect(redis_url)
    yield client
    client.gate.set()
    await client.aclose(close_connection_pool=True)


def lock_key(namespace: str, key: str) -> str:
    return f"{namespace}:lock:{{{key}}}"


@asynccontextmanager
async def unlock_events(redis: aioredis.Redis, namespace: str) -> AsyncIterator[list[str]]:
    """Yields a list that fills with the keys of the ``unlock`` events published meanwhile."""
    seen: list[str] = []
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{namespace}:events")

    async def consume() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                event = json.loads(message["data"])
                if event["op"] == "unlock":
                    seen.append(event["key"])

    task = asyncio.create_task(consume())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]


async def test_a_refused_write_releases_and_announces_the_lock(
    make_cache: MakeCache, redis: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """The server refuses the write script (here an ACL that may write locks but not values,
    under which a regeneration's claim, a script of the lock alone, runs; a script error or OOM
    alike): the callers get what was fetched, and the lock is released and announced at once
    instead of being left for ``lock_ttl``."""
    may_lock = ("%R~*", f"~{namespace}:lock:*", f"~{namespace}:cleared:*")
    async with acl_user(redis, redis_url, ["+@all"], may_lock) as (_, limited):
        cache = await make_cache(limited, lock_ttl=LOCK_TTL)
        async with unlock_events(redis, namespace) as unlocked:
            fetch = Fetch("fetched")
            assert await cache.attempt_regeneration("k", fetch) == "fetched"
            assert fetch.calls == 1
            assert not await redis.exists(lock_key(namespace, "k"))
            assert not await redis.exists(f"{namespace}:v:{{k}}")
            await wait_until(lambda: unlocked == ["k"], what="the release's announcement")
        await cache.aclose()


async def test_a_regeneration_cancelled_while_its_claim_is_on_the_wire_releases_it(
    gated: GatedRedis, make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """The claim (``SET NX`` in a script) has run on the server, its reply is on its way, and
    the caller's timeout cancels the call: the claim is remembered and released, so another
    process's cold read does not wait for it."""
    cache = await make_cache(gated, lock_ttl=LOCK_TTL)
    gated.hold_first(lambda args: lock_key(namespace, "k") in args)
    fetch = Fetch("v")
    regenerating = asyncio.create_task(cache.attempt_regeneration("k", fetch))
    await gated.held.wait()
    assert await redis.exists(lock_key(namespace, "k"))  # the claim ran
    regenerating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await regenerating
    gated.gate.set()
    await wait_until(
        lambda: _gone(redis, namespace), timeout=3.0, what="the orphaned claim to be released"
    )
    assert fetch.calls == 0
    other = await make_cache(lock_ttl=LOCK_TTL)
    cold = Fetch("cold")
    assert await asyncio.wait_for(other.get_or_init("k", cold), 2.0) == "cold"
    assert other.stats().lock_waits == 0


async def _gone(redis: aioredis.Redis, namespace: str) -> bool:
    return not await redis.exists(lock_key(namespace, "k"))


async def test_a_regeneration_cancelled_during_its_fetch_releases_and_announces_the_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(lock_ttl=LOCK_TTL)
    async with unlock_events(redis, namespace) as unlocked:
        held = HeldFetch("v")
        regenerating = asyncio.create_task(cache.attempt_regeneration("k", held))
        await held.started.wait()
        regenerating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await regenerating
        # The call's clean-up ran before its cancellation reached the caller.
        assert not await redis.exists(lock_key(namespace, "k"))
        await wait_until(lambda: unlocked == ["k"], what="the release's announcement")


async def test_aclose_while_a_claim_is_on_the_wire_leaves_no_lock(
    gated: GatedRedis, make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(gated, lock_ttl=LOCK_TTL)
    gated.hold_first(runs_script(READ_OR_LOCK))
    fetch = Fetch("v")
    loading = asyncio.create_task(cache.get_or_init("k", fetch))
    await gated.held.wait()
    assert await redis.exists(lock_key(namespace, "k"))  # the claim ran; its reply is held
    await cache.aclose()
    assert not await redis.exists(lock_key(namespace, "k"))  # released before aclose returned
    with pytest.raises(ClientClosedError):
        await loading
    assert fetch.calls == 0


async def test_aclose_during_a_fetch_releases_the_lock_and_nothing_is_written(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(lock_ttl=LOCK_TTL)
    held = HeldFetch("v")
    loading = asyncio.create_task(cache.get_or_init("k", held))
    regenerating = asyncio.create_task(cache.attempt_regeneration("r", held))
    await wait_until(lambda: held.calls == 2, what="both fetches to start")
    await cache.aclose()
    for call in (loading, regenerating):
        with pytest.raises(ClientClosedError):
            await call
    held.release.set()
    assert not await redis.exists(lock_key(namespace, "k"), lock_key(namespace, "r"))
    assert not await redis.exists(f"{namespace}:v:{{k}}", f"{namespace}:v:{{r}}")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("redicache")]


async def test_a_call_past_its_open_check_when_aclose_runs_starts_no_fetch(
    gated: GatedRedis, make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """Its read was in flight when the client closed; the miss it reads afterwards must not
    start a load: no fetch, no lock, no write after ``aclose()``."""
    cache = await make_cache(gated, lock_ttl=LOCK_TTL)
    gated.hold_first(reads_value)
    fetch = Fetch("v")
    calling = asyncio.create_task(cache.get_or_init("k", fetch))
    await gated.held.wait()
    await cache.aclose()
    gated.gate.set()
    with pytest.raises(ClientClosedError):
        await calling
    assert fetch.calls == 0
    assert not await redis.exists(lock_key(namespace, "k"), f"{namespace}:v:{{k}}")


async def test_a_read_retried_after_close_is_not_sent(
    gated: GatedRedis, make_cache: MakeCache
) -> None:
    """Two readers share one read; its sender is cancelled after the client closed. The other
    reader would send the read again: after ``aclose()`` it gets ``ClientClosedError``."""
    cache = await make_cache(gated)
    gated.hold_first(reads_value)
    sender = asyncio.create_task(cache.get("k"))
    await gated.held.wait()
    joined = asyncio.create_task(cache.get("k"))
    await wait_until(
        lambda: bool(cache._values._flights["k"]), what="it to join the read in flight"
    )
    await cache.aclose()
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    with pytest.raises(ClientClosedError):
        await joined


async def test_a_builder_closed_while_its_campaign_is_on_the_wire_leaves_no_lease(
    gated: GatedRedis, redis: aioredis.Redis, namespace: str
) -> None:
    """A follower's campaign took the lease on the server, its reply is held, and the builder
    closes: the lease is released before ``aclose()`` returns, instead of leaving the
    registration leaderless for ``lease_ttl``."""
    builder = CacheBuilder(gated, namespace=namespace, lease_ttl=30.0)
    await builder.start()
    try:
        gated.hold_first(runs_script(ACQUIRE_LEADER))
        fetch = Fetch(["a"])
        await builder.register(
            fetch, targets=[Target(f"{namespace}-list", "list")], name="r", refresh_interval=3600.0
        )
        await gated.held.wait()
        assert await redis.exists(f"{namespace}:builder:{{r}}:lease")  # the campaign won
    finally:
        await builder.aclose()
    assert not await redis.exists(f"{namespace}:builder:{{r}}:lease")
    assert fetch.calls == 0


@pytest.mark.parametrize("ttl_ms", ["-1", "1.5", "9007199254740992", "x", ""])
async def test_the_write_script_checks_its_ttl_before_it_writes_anything(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, ttl_ms: str
) -> None:
    """Whatever reaches the script, a ttl Redis could not take fails it before any change:
    no value, no event, and the lock stays with its holder (not half of a write)."""
    cache = await make_cache()
    await redis.set(lock_key(namespace, "k"), "holder", px=30_000)
    async with unlock_events(redis, namespace) as unlocked:
        with pytest.raises(ResponseError, match="invalid ttl"):
            await cache._scripts.write(
                keys=[f"{namespace}:v:{{k}}", lock_key(namespace, "k")],
                args=["", "1", ttl_ms, f"{namespace}:events", '{"op":"set","version":'],
            )
        await cache.set("other", 1)  # an event after it, to be sure none came before
        await wait_until(lambda: cache.stats().invalidations_received >= 1, what="the event")
        assert unlocked == []
    assert await redis.get(lock_key(namespace, "k")) == b"holder"
    assert not await redis.exists(f"{namespace}:v:{{k}}")
    assert await redis.xlen(f"{namespace}:stream") == 1  # the other write's event only
