"""``eager_refresh=f``: a hit on a value older than ``f`` of its TTL answers at once and starts
one background refresh across all processes; the value never expires under steady traffic.

Values of a chosen age are written behind the clients' backs, with a version (the server time
of their write) in the past: no test waits for a value to age, except the steady-traffic one.
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
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from redicache_async.stored import pack, unpack
from redicache_async.value_scripts import CLAIM

from .conftest import MakeCache
from .helpers import GatedRedis, command_calls, ns_keys, runs_script, wait_until
from .values import reads_value

pytestmark = pytest.mark.topologies

OLD = {"report": "old"}
NEW = {"report": "new"}


class Refetch:
    """An async fetch that returns ``value``, once ``release`` is set if ``held``; counts its
    calls, tells when one started and whether one was cancelled."""

    def __init__(self, value: Any = NEW, *, held: bool = False, error: bool = False) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.cancelled = False
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not held:
            self.release.set()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error:
            raise RuntimeError("the source is down")
        return self.value


def _value_key(namespace: str, key: str) -> str:
    return f"{namespace}:v:{{{key}}}"


async def _server_ms(redis: aioredis.Redis) -> int:
    reply: Any = await redis.time()
    if isinstance(reply, dict):  # a cluster client that asked several nodes
        reply = next(iter(reply.values()))
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


async def _put_aged(
    redis: aioredis.Redis, namespace: str, key: str, *, age: float, ttl: float | None
) -> None:
    """Store ``OLD`` at ``key`` as if written ``age`` seconds ago with ``ttl`` (None: none)."""
    now_ms = await _server_ms(redis)
    version = (now_ms - round(age * 1000)) * 1000
    if ttl is None:
        await redis.set(_value_key(namespace, key), pack(version, 0, b'{"report":"old"}'))
        return
    expires_ms = now_ms + round((ttl - age) * 1000)
    raw = pack(version, expires_ms, b'{"report":"old"}')
    await redis.set(_value_key(namespace, key), raw, px=expires_ms - now_ms)


async def _payload(redis: aioredis.Redis, namespace: str, key: str) -> bytes | None:
    raw = await redis.get(_value_key(namespace, key))
    stored = None if raw is None else unpack(raw)
    return None if stored is None else stored[2]


async def _holds_new(redis: aioredis.Redis, namespace: str, key: str) -> bool:
    return await _payload(redis, namespace, key) == b'{"report":"new"}'


async def test_a_local_hit_past_the_fraction_answers_at_once_then_the_value_is_refreshed(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await _put_aged(redis, namespace, "k", age=80.0, ttl=100.0)
    assert await cache.get("k") == OLD  # now held locally
    fetch = Refetch(held=True)
    hits = cache.stats().local_hits
    # answered while the refresh's fetch is held: no caller waits for it
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    assert cache.stats().local_hits == hits + 1
    await asyncio.wait_for(fetch.started.wait(), 5.0)
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    fetch.release.set()
    await wait_until(lambda: _holds_new(redis, namespace, "k"), what="the refreshed value")
    await wait_until(lambda: cache.local_value("k") == NEW, what="the local copy to follow")
    assert fetch.calls == 1
    assert 99_000 < await redis.pttl(_value_key(namespace, "k")) <= 100_000  # a whole new TTL
    assert cache.stats().eager_refreshes == 1


async def test_a_redis_hit_past_the_fraction_refreshes_too_without_a_local_layer(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(local_max_entries=0)
    await _put_aged(redis, namespace, "k", age=60.0, ttl=100.0)
    fetch = Refetch()
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    await wait_until(lambda: _holds_new(redis, namespace, "k"), what="the refreshed value")
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == NEW
    assert fetch.calls == 1
    assert cache.stats().misses == 0


async def test_no_refresh_before_the_fraction_nor_for_a_value_without_ttl(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    fetch = Refetch()
    await _put_aged(redis, namespace, "young", age=30.0, ttl=100.0)
    await _put_aged(redis, namespace, "forever", age=1e6, ttl=None)
    for _ in range(2):  # a Redis hit, then a local hit
        assert await cache.get_or_init("young", fetch, ttl=100.0, eager_refresh=0.5) == OLD
        assert await cache.get_or_init("forever", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    # a refresh starts within the hit's own call: none was started
    assert cache.stats().eager_refreshes == 0
    assert fetch.calls == 0
    # the same young value is past a smaller fraction
    assert await cache.get_or_init("young", fetch, ttl=100.0, eager_refresh=0.2) == OLD
    assert cache.stats().eager_refreshes == 1
    await wait_until(lambda: _holds_new(redis, namespace, "young"), what="the refreshed value")


async def test_two_processes_past_the_fraction_run_one_fetch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await _put_aged(redis, namespace, "k", age=90.0, ttl=100.0)
    fetch_a, fetch_b = Refetch(held=True), Refetch()
    assert await a.get_or_init("k", fetch_a, ttl=100.0, eager_refresh=0.5) == OLD
    await asyncio.wait_for(fetch_a.started.wait(), 5.0)  # a holds the lock
    sets = await command_calls(redis, ("set",))
    assert await b.get_or_init("k", fetch_b, ttl=100.0, eager_refresh=0.5) == OLD
    # b tried the lock (its SET NX), found it held, and waits for a's value, silently
    await wait_until(
        lambda: _more_than(command_calls(redis, ("set",)), sets), what="b's lock attempt"
    )
    assert await b.get_or_init("k", fetch_b, ttl=100.0, eager_refresh=0.5) == OLD
    assert b.stats().eager_refreshes == 1  # one refresh per key per process at a time
    fetch_a.release.set()
    await wait_until(lambda: _answers(b, "k", NEW), what="b to read a's new value")
    assert (fetch_a.calls, fetch_b.calls) == (1, 0)
    assert a.stats().eager_refresh_errors == b.stats().eager_refresh_errors == 0


async def _more_than(count: Any, floor: int) -> bool:
    return int(await count) > floor


async def _answers(cache: CacheClient, key: str, value: Any) -> bool:
    return bool(await cache.get(key) == value)


async def test_a_failing_refresh_keeps_the_old_value_and_reaches_no_caller(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await _put_aged(redis, namespace, "k", age=90.0, ttl=100.0)
    fetch = Refetch(error=True)
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    await wait_until(lambda: cache.stats().eager_refresh_errors == 1, what="the failure")
    # One turn of the loop, so that a refresh that had ended (instead of pausing) would have
    # run its done-callbacks and been forgotten: the next hit would start another.
    await asyncio.sleep(0)
    # the next hit neither fails nor starts another refresh at once
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    assert await _payload(redis, namespace, "k") == b'{"report":"old"}'
    assert cache.stats().eager_refreshes == 1
    assert fetch.calls == 1
    assert await ns_keys(redis, namespace) == [_value_key(namespace, "k").encode()]  # unlocked


async def test_a_refresh_whose_fetch_returns_none_keeps_the_old_value_and_pauses(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await _put_aged(redis, namespace, "k", age=90.0, ttl=100.0)
    fetch = Refetch(value=None)
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    value_key = _value_key(namespace, "k").encode()
    await wait_until(lambda: fetch.calls == 1, what="the refresh's fetch")
    await wait_until(
        lambda: _only_keys(redis, namespace, [value_key]), what="the lock to be released"
    )
    await asyncio.sleep(0)  # as above: a refresh that had ended would be forgotten by now
    assert await cache.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == OLD
    assert cache.stats().eager_refreshes == 1
    assert await _payload(redis, namespace, "k") == b'{"report":"old"}'


async def _only_keys(redis: aioredis.Redis, namespace: str, keys: list[bytes]) -> bool:
    return await ns_keys(redis, namespace) == keys


async def test_aclose_cancels_a_refresh_in_flight_and_one_waiting_for_the_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await _put_aged(redis, namespace, "running", age=90.0, ttl=100.0)
    await _put_aged(redis, namespace, "waiting", age=90.0, ttl=100.0)
    lock_key = f"{namespace}:lock:{{waiting}}"
    await redis.set(lock_key, "another-process", px=60_000)
    running, waiting = Refetch(held=True), Refetch()
    assert await cache.get_or_init("running", running, ttl=100.0, eager_refresh=0.5) == OLD
    assert await cache.get_or_init("waiting", waiting, ttl=100.0, eager_refresh=0.5) == OLD
    await asyncio.wait_for(running.started.wait(), 5.0)
    await cache.aclose()
    assert running.cancelled
    await redis.delete(lock_key)  # the other holder lets go: nobody here may fetch now
    running.release.set()
    assert waiting.calls == 0
    assert await _payload(redis, namespace, "running") == b'{"report":"old"}'
    assert await redis.exists(f"{namespace}:lock:{{running}}") == 0  # its lock was released


async def test_under_steady_traffic_the_value_never_expires_and_nobody_waits(
    make_cache: MakeCache, namespace: str
) -> None:
    cache, other = await make_cache(), await make_cache()
    fetch = Refetch()
    assert await cache.get_or_init("k", fetch, ttl=0.4, eager_refresh=0.5) == NEW
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while fetch.calls < 5:  # four refreshes after the first fetch: the value outlived 4 TTLs
        assert loop.time() < deadline, "the value was not refreshed"
        for client in (cache, other):
            assert await client.get_or_init("k", fetch, ttl=0.4, eager_refresh=0.5) == NEW
        await asyncio.sleep(0.01)  # the traffic's pace
    # only the first call found no value: every other was answered from a value
    assert cache.stats().misses + other.stats().misses == 1
    assert cache.stats().lock_waits + other.stats().lock_waits == 0


@pytest.mark.single_node
async def test_eager_refresh_outside_zero_one_is_refused_before_any_io(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("k", 1, ttl=60.0)  # a local hit would answer: the check comes first
    fetch = Refetch()
    for bad in (0, 1, 0.0, 1.0, -0.5, 1.5, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="eager_refresh must be greater than 0"):
            await cache.get_or_init("k", fetch, ttl=60.0, eager_refresh=bad)
    for wrong in ("0.5", True, [0.5]):
        with pytest.raises(InvalidArgumentTypeError, match="eager_refresh must be a number"):
            await cache.get_or_init("k", fetch, ttl=60.0, eager_refresh=wrong)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="eager_refresh"):
        cache.cached(ttl=60.0, eager_refresh=2)
    assert fetch.calls == 0
    assert cache.stats().eager_refreshes == 0


async def test_a_decorated_function_refreshes_eagerly(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    calls = 0

    async def report(day: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        return NEW

    decorated = cache.cached(ttl=100.0, key=lambda day: f"r:{day}", eager_refresh=0.5)(report)
    plain = cache.cached(ttl=100.0, key=lambda day: f"r:{day}")(report)
    await _put_aged(redis, namespace, "r:d1", age=80.0, ttl=100.0)
    assert await plain("d1") == OLD  # without the option: no refresh, ever
    assert await plain("d1") == OLD
    assert cache.stats().eager_refreshes == 0
    assert await decorated("d1") == OLD  # a local hit, past the fraction
    await wait_until(lambda: _holds_new(redis, namespace, "r:d1"), what="the refreshed value")
    await wait_until(lambda: cache.local_value("r:d1") == NEW, what="the local copy to follow")
    assert await decorated("d1") == NEW
    assert calls == 1


class SendGate(aioredis.Redis):
    """A real client that holds back the sending of its lock claims (the ``CLAIM`` script)
    while ``gate`` is closed; ``waiting`` is set when one waits there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.gate.is_set() and runs_script(CLAIM)(args):
            self.waiting.set()
            await self.gate.wait()
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.mark.single_node
async def test_a_refresh_that_takes_the_lock_after_another_refreshed_stands_down(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    gated = SendGate(connection_pool=aioredis.ConnectionPool.from_url(redis_url))
    b = await make_cache(gated)
    try:
        a = await make_cache()
        await _put_aged(redis, namespace, "k", age=90.0, ttl=100.0)
        fetch_a, fetch_b = Refetch(), Refetch()
        assert await b.get("k") == OLD
        gated.gate.clear()
        assert await b.get_or_init("k", fetch_b, ttl=100.0, eager_refresh=0.5) == OLD
        await asyncio.wait_for(gated.waiting.wait(), 5.0)  # b's lock claim is not sent yet
        assert await a.get_or_init("k", fetch_a, ttl=100.0, eager_refresh=0.5) == OLD
        await wait_until(lambda: b._local.peek("k") is None, what="b to hear a's new value")
        gated.gate.set()  # the lock is free again: b takes it, and sees it has nothing to do
        await wait_until(lambda: b.stats().eager_refreshes == 1 and not b._refreshes)
        assert (fetch_a.calls, fetch_b.calls) == (1, 0)
        assert await ns_keys(redis, namespace) == [_value_key(namespace, "k").encode()]
        assert await b.get("k") == NEW
    finally:
        await b.aclose()
        await gated.aclose(close_connection_pool=True)


@pytest.mark.single_node
async def test_a_write_heard_of_is_seen_by_the_next_eager_call_while_an_older_read_is_in_flight(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, redis_url: str
) -> None:
    """Eager callers read through a batcher of their own: a write's event forgets its reads in
    flight too, so a later call does not join a read that started before the write."""
    gated = GatedRedis.connect(redis_url)
    reader = await make_cache(gated, local_max_entries=0)  # every call reads Redis
    try:
        writer = await make_cache()
        await writer.set("k", OLD, ttl=100.0)
        gated.hold_first(reads_value)
        fetch = Refetch()
        reading = asyncio.create_task(reader.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5))
        await asyncio.wait_for(gated.held.wait(), 5.0)  # Redis answered OLD; not delivered yet
        heard = reader.stats().invalidations_received
        await writer.set("k", NEW, ttl=100.0)
        await wait_until(
            lambda: reader.stats().invalidations_received > heard, what="the reader to hear it"
        )
        async with asyncio.timeout(5.0):
            assert await reader.get_or_init("k", fetch, ttl=100.0, eager_refresh=0.5) == NEW
        gated.gate.set()
        assert await reading == OLD  # what Redis held when it was read
        assert fetch.calls == 0
    finally:
        await reader.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_a_function_decorated_through_a_handle_refreshes_eagerly(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    handle = CacheHandle()

    async def report(day: str) -> dict[str, str]:
        return NEW

    decorated = handle.cached(ttl=100.0, key=lambda day: f"r:{day}", eager_refresh=0.5)(report)
    handle.bind(await make_cache())
    try:
        await _put_aged(redis, namespace, "r:d1", age=80.0, ttl=100.0)
        assert await decorated("d1") == OLD
        await wait_until(lambda: _holds_new(redis, namespace, "r:d1"), what="the refresh")
        assert handle.client.stats().eager_refreshes == 1
    finally:
        handle.unbind()


async def test_an_eager_call_that_misses_honours_its_soft_timeout(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """The options together: a miss of an eager call is the plain miss path, soft timeout
    included (a stale copy answers while the fetch goes on)."""
    cache = await make_cache(stale_ttl=60.0)
    assert await cache.get_or_init("k", Refetch(OLD), ttl=0.05) == OLD
    await wait_until(lambda: _gone(redis, _value_key(namespace, "k")), what="the value to expire")
    fetch = Refetch(held=True)
    call = cache.get_or_init("k", fetch, ttl=60.0, eager_refresh=0.5, soft_timeout=0.05)
    assert await asyncio.wait_for(call, 5.0) == OLD  # while the fetch is held
    assert fetch.calls == 1
    fetch.release.set()
    await wait_until(lambda: _holds_new(redis, namespace, "k"), what="the fetch's result")


async def _gone(redis: aioredis.Redis, name: str) -> bool:
    return not await redis.exists(name)
