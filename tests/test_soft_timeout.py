"""Soft timeouts (issue 17): ``get_or_init(..., soft_timeout=s)`` answers a caller that has
waited ``s`` seconds for a fetch with the key's expired local copy (kept by ``stale_ttl``),
while the fetch goes on, owned by the client: bounded by ``fetch_timeout``, its result stored
unless a write came meanwhile, cancelled by ``aclose()`` with its lock released.

Fetches here are held by events the tests set, so every claim is about the order of events
(the callers answered while the fetch is still held), never about how long something took.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheClient,
    CacheHandle,
    ClientClosedError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)

from .conftest import MakeCache
from .helpers import Fetch, HeldFetch, ns_keys, wait_until

pytestmark = pytest.mark.topologies

#: Short, so that callers give up on the held fetch at once; the tests wait for events.
SOFT = 0.05
#: Seconds within which something the test waits for must happen (a bound, not a timing).
BOUND = 5.0


def value_key(namespace: str, key: str) -> str:
    return f"{namespace}:v:{{{key}}}"


def lock_key(namespace: str, key: str) -> str:
    return f"{namespace}:lock:{{{key}}}"


class CancellableFetch(HeldFetch):
    """A :class:`HeldFetch` that notes being cancelled (by ``aclose()`` or ``fetch_timeout``)."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.cancelled = asyncio.Event()

    async def __call__(self) -> Any:
        try:
            return await super().__call__()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def expired_copy(
    cache: CacheClient, redis: aioredis.Redis, namespace: str, key: str, value: Any
) -> None:
    """Leave ``cache`` with an expired local copy of ``key`` (``value``) and Redis without it."""
    assert await cache.get_or_init(key, Fetch(value), ttl=0.05) == value
    await wait_until(
        lambda: _gone(redis, value_key(namespace, key)), what="the value to expire in Redis"
    )


async def _gone(redis: aioredis.Redis, name: str) -> bool:
    return not await redis.exists(name)


async def answers(cache: CacheClient, key: str, expected: Any) -> bool:
    return bool(await cache.get(key) == expected)


async def test_callers_get_the_stale_copy_while_the_fetch_goes_on_and_stores_its_result(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=60.0)
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = HeldFetch("new")
    soft = [
        asyncio.create_task(cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT))
        for _ in range(3)
    ]
    plain = asyncio.create_task(cache.get_or_init("k", fetch, ttl=60.0))  # no soft timeout
    try:
        assert await asyncio.wait_for(asyncio.gather(*soft), BOUND) == ["old"] * 3
        # Answered while the fetch was still held: it runs on, under its lock, for the rest.
        assert fetch.started.is_set()
        assert not fetch.release.is_set()
        assert not plain.done()
        assert await redis.exists(lock_key(namespace, "k"))
        assert cache.stats().stale_served == 3
        fetch.release.set()
        assert await asyncio.wait_for(plain, BOUND) == "new"
    finally:
        fetch.release.set()
        await asyncio.gather(*soft, plain, return_exceptions=True)
    assert fetch.calls == 1  # one fetch for all of them
    assert await cache.get_or_init("k", Fetch("other")) == "new"  # stored locally
    other = await make_cache(stale_ttl=60.0)
    assert await other.get_or_init("k", Fetch("other")) == "new"  # and in Redis
    assert not await redis.exists(lock_key(namespace, "k"))


async def test_the_fetch_stores_its_result_after_every_caller_has_gone(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=60.0)
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = HeldFetch("new")
    assert await cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT) == "old"
    assert not fetch.release.is_set()
    fetch.release.set()  # nobody waits for it any more
    await wait_until(lambda: answers(cache, "k", "new"), what="the late result to be stored")
    assert await cache.get_or_init("k", Fetch("other"), soft_timeout=SOFT) == "new"
    assert fetch.calls == 1


async def test_a_caller_waiting_on_another_process_lock_gets_its_own_stale_copy(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    # Two clients stand for two processes: b waits on the lock that a's fetch holds.
    a = await make_cache(stale_ttl=60.0)
    b = await make_cache(stale_ttl=60.0)
    assert await a.get_or_init("k", Fetch("old"), ttl=0.05) == "old"
    assert await b.get_or_init("k", Fetch("never")) == "old"  # read from Redis: b's copy
    await wait_until(lambda: _gone(redis, value_key(namespace, "k")), what="the value to expire")
    fetch = HeldFetch("new")
    holder = asyncio.create_task(a.get_or_init("k", fetch, ttl=60.0))
    b_fetch = Fetch("b's own")
    try:
        await asyncio.wait_for(fetch.started.wait(), BOUND)
        assert await b.get_or_init("k", b_fetch, ttl=60.0, soft_timeout=SOFT) == "old"
        assert not fetch.release.is_set()
        assert not holder.done()
        assert b.stats().stale_served == 1
        fetch.release.set()
        assert await asyncio.wait_for(holder, BOUND) == "new"
    finally:
        fetch.release.set()
        await asyncio.gather(holder, return_exceptions=True)
    # b's wait went on and took the holder's value when it was written: b never fetched.
    await wait_until(lambda: answers(b, "k", "new"), what="b to see the holder's value")
    assert await b.get_or_init("k", b_fetch, soft_timeout=SOFT) == "new"
    assert b_fetch.calls == 0


async def test_without_a_stale_copy_callers_wait_for_the_fetch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=0.0)  # an expired copy is dropped, not kept
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = HeldFetch("new")
    callers = [
        asyncio.create_task(cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT))
        for _ in range(3)
    ]
    try:
        await asyncio.wait_for(fetch.started.wait(), BOUND)
        # Many soft timeouts long: nobody may answer while the fetch is held.
        done, _ = await asyncio.wait(callers, timeout=SOFT * 4)
        assert not done
        fetch.release.set()
        assert await asyncio.wait_for(asyncio.gather(*callers), BOUND) == ["new"] * 3
    finally:
        fetch.release.set()
        await asyncio.gather(*callers, return_exceptions=True)
    assert cache.stats().stale_served == 0
    assert fetch.calls == 1


async def test_a_set_during_the_continuing_fetch_wins(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=60.0)
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = HeldFetch("late")
    assert await cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT) == "old"
    await cache.set("k", "set", ttl=60.0)
    fetch.release.set()
    await wait_until(lambda: cache.stats().fenced_writes == 1, what="the late write's refusal")
    assert await cache.get_or_init("k", Fetch("other")) == "set"
    other = await make_cache(stale_ttl=60.0)
    assert await other.get("k") == "set"
    assert not await redis.exists(lock_key(namespace, "k"))


async def test_aclose_ends_the_continuing_fetch_without_a_write_and_releases_its_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=60.0, lock_ttl=30.0)  # a lock gone was released
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = CancellableFetch("late")
    assert await cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT) == "old"
    assert await redis.exists(lock_key(namespace, "k"))
    await cache.aclose()
    assert fetch.cancelled.is_set()
    assert not await redis.exists(lock_key(namespace, "k"))
    fetch.release.set()  # too late: nothing of the client is left to write
    for _ in range(5):
        await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("redicache-load")]
    assert await ns_keys(redis, namespace) == []


async def test_aclose_ends_a_soft_caller_without_a_copy_with_client_closed(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=0.0, lock_ttl=30.0)
    fetch = CancellableFetch("late")
    caller = asyncio.create_task(cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT))
    try:
        await asyncio.wait_for(fetch.started.wait(), BOUND)
        await cache.aclose()
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(caller, BOUND)
    finally:
        fetch.release.set()
        await asyncio.gather(caller, return_exceptions=True)
    assert fetch.cancelled.is_set()
    assert not await redis.exists(lock_key(namespace, "k"))


async def test_fetch_timeout_still_bounds_the_continuing_fetch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(stale_ttl=60.0, fetch_timeout=0.5, lock_ttl=30.0)
    await expired_copy(cache, redis, namespace, "k", "old")
    fetch = CancellableFetch("never")  # never released
    assert await cache.get_or_init("k", fetch, ttl=60.0, soft_timeout=SOFT) == "old"
    await asyncio.wait_for(fetch.cancelled.wait(), BOUND)  # by fetch_timeout
    await wait_until(lambda: cache.stats().fetch_errors == 1, what="the FetchTimeout")
    await wait_until(lambda: _gone(redis, lock_key(namespace, "k")), what="the lock to be released")
    assert not await redis.exists(value_key(namespace, "k"))
    assert await cache.get_or_init("k", Fetch("fresh"), ttl=60.0) == "fresh"


@pytest.mark.parametrize("through", ["client", "handle"])
async def test_a_cached_function_with_a_soft_timeout_answers_stale_while_it_runs(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, through: str
) -> None:
    cache = await make_cache(stale_ttl=60.0)
    handle = CacheHandle("soft")
    source: CacheClient | CacheHandle = cache if through == "client" else handle
    handle.bind(cache)
    gate = asyncio.Event()
    calls: list[str] = []

    @source.cached(ttl=0.05, key=lambda day: f"report:{day}", soft_timeout=SOFT)
    async def report(day: str) -> str:
        calls.append(day)
        if len(calls) > 1:
            await gate.wait()
        return f"v{len(calls)}"

    try:
        assert await report("d1") == "v1"
        await wait_until(lambda: _gone(redis, value_key(namespace, "report:d1")), what="expiry")
        # stale, while the second call is held
        assert await asyncio.wait_for(report("d1"), BOUND) == "v1"
        assert len(calls) == 2
        assert not gate.is_set()
        gate.set()
        await wait_until(lambda: answers(cache, "report:d1", "v2"), what="the late result")
    finally:
        gate.set()
        handle.unbind()


BAD_SOFT_TIMEOUTS = [
    pytest.param(0, InvalidArgumentError, id="zero"),
    pytest.param(-1, InvalidArgumentError, id="negative"),
    pytest.param(math.nan, InvalidArgumentError, id="nan"),
    pytest.param(math.inf, InvalidArgumentError, id="inf"),
    pytest.param(30.0, InvalidArgumentError, id="equal-to-fetch-timeout"),
    pytest.param(31, InvalidArgumentError, id="above-fetch-timeout"),
    pytest.param("1", InvalidArgumentTypeError, id="str"),
    pytest.param(True, InvalidArgumentTypeError, id="bool"),
]


@pytest.mark.single_node
@pytest.mark.parametrize(("soft_timeout", "error"), BAD_SOFT_TIMEOUTS)
async def test_a_bad_soft_timeout_is_refused_before_any_io_hit_or_miss(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    soft_timeout: Any,
    error: type[Exception],
) -> None:
    cache = await make_cache(fetch_timeout=30.0)
    fetch = Fetch("v")
    assert await cache.get_or_init("warm", fetch, ttl=60.0) == "v"
    for key in ("warm", "cold"):  # a local hit, then a miss
        with pytest.raises(error, match="soft_timeout"):
            await cache.get_or_init(key, fetch, ttl=60.0, soft_timeout=soft_timeout)
    with pytest.raises(error, match="soft_timeout"):
        cache.cached(ttl=60.0, soft_timeout=soft_timeout)
    assert fetch.calls == 1
    assert await ns_keys(redis, namespace) == [value_key(namespace, "warm").encode()]


@pytest.mark.single_node
async def test_without_a_fetch_timeout_any_positive_soft_timeout_is_taken(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(fetch_timeout=None)
    assert await cache.get_or_init("k", Fetch("v"), ttl=60.0, soft_timeout=3600.0) == "v"
    assert await cache.get_or_init("k", Fetch("v"), ttl=60.0, soft_timeout=29.999) == "v"
