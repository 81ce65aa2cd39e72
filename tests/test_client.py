"""CacheClient against a real server: the behaviours of DESIGN.md 1-4 and 9."""

from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from redicache_async import (
    CacheClient,
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    PickleSerializer,
    RedicacheError,
    RegenerationInProgress,
    SerializationError,
    tls,
)
from redicache_async.keys import KeySpace
from redicache_async.stored import unpack

from .conftest import MakeCache
from .helpers import (
    ChannelTap,
    GatedRedis,
    command_calls,
    commands_processed,
    ns_keys,
    script_calls,
    wait_until,
)
from .values import put_value, reads_value, stored_payload, stored_version

pytestmark = pytest.mark.topologies


class Counter:
    """An async fetch that counts its calls and returns a new value each time."""

    def __init__(self, delay: float = 0.0, prefix: str = "v") -> None:
        self.calls = 0
        self.delay = delay
        self.prefix = prefix

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return {"value": f"{self.prefix}{self.calls}"}


# -- reads, writes, local layer -------------------------------------------------------------


async def test_get_or_init_fetches_once_then_answers_locally(make_cache: MakeCache) -> None:
    cache = await make_cache()
    fetch = Counter()
    assert await cache.get_or_init("k", fetch) == {"value": "v1"}
    assert await cache.get_or_init("k", fetch) == {"value": "v1"}
    stats = cache.stats()
    assert fetch.calls == 1
    assert (stats.fetches, stats.misses, stats.local_hits, stats.writes) == (1, 1, 1, 1)


async def test_local_hit_sends_nothing_to_redis(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    await cache.get_or_init("k", Counter())
    before = await commands_processed(redis)
    for _ in range(500):
        await cache.get_or_init("k", Counter())
        await cache.get("k")
    assert await commands_processed(redis) == before
    assert cache.stats().local_hits == 1000


# get_or_init tells a local hit itself, without LocalLayer.fresh (its hot path): each of its
# checks is proven here as well.


async def test_get_or_init_does_not_answer_an_expired_local_copy(make_cache: MakeCache) -> None:
    writer, reader = await make_cache(), await make_cache()
    await writer.set("k", "v", ttl=0.3)
    fetch = Counter()
    assert await reader.get_or_init("k", fetch) == "v"
    entry = reader._local.peek("k")
    assert entry is not None
    await wait_until(lambda: time.monotonic() > entry.expires_at, what="the local deadline")
    hits = reader.stats().local_hits
    await reader.get_or_init("k", fetch)  # Redis's answer, or the fetch's once the key is gone
    assert reader.stats().local_hits == hits


async def test_get_or_init_does_not_answer_local_copies_while_the_listener_is_away(
    make_cache: MakeCache,
) -> None:
    reader, writer = await make_cache(), await make_cache()
    await writer.set("k", "v1")
    fetch = Counter()
    assert await reader.get_or_init("k", fetch) == "v1"
    reader._listener._on_event = lambda event: None  # the writer's events will not be applied
    reader._on_listener_lost()  # as the listener reports a lost connection
    await writer.set("k", "v2")
    hits = reader.stats().local_hits
    assert await reader.get_or_init("k", fetch) == "v2"
    assert reader.stats().local_hits == hits
    assert fetch.calls == 0


async def test_a_get_or_init_hit_spares_its_entry_from_eviction(make_cache: MakeCache) -> None:
    cache = await make_cache(local_max_entries=2)
    fetch = Counter()
    await cache.get_or_init("a", fetch)
    await cache.get_or_init("b", fetch)
    await cache.get_or_init("a", fetch)  # a hit: "a" was read since it was put, "b" was not
    await cache.get_or_init("c", fetch)  # one entry too many: the least recently read goes
    assert cache._local.holds("a")
    assert not cache._local.holds("b")
    assert cache.stats().local_evictions == 1


async def test_second_process_reads_redis_not_fetch(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.get_or_init("k", Counter(prefix="a"))
    fetch_b = Counter(prefix="b")
    assert await b.get_or_init("k", fetch_b) == {"value": "a1"}
    assert fetch_b.calls == 0
    assert b.stats().redis_hits == 1


async def test_concurrent_callers_share_one_read_and_one_fetch(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    await cache.get_or_init("warm-up", Counter())  # connect and load the scripts first
    fetch = Counter(delay=0.05)
    before = await script_calls(redis)
    results = await asyncio.gather(*(cache.get_or_init("k", fetch) for _ in range(100)))
    assert all(r == {"value": "v1"} for r in results)
    assert fetch.calls == 1
    # one read (a GET: no value yet), then one read-or-lock (takes the lock) and one write;
    # on a cluster, where the write's script cannot read the namespace's clear and tag times,
    # one read of them before the write and one after; the watchdog has no time to renew in
    # 50 ms
    checks = 2 if isinstance(redis, RedisCluster) else 0
    assert await script_calls(redis) - before == 2 + checks
    # and 100 concurrent reads of a warm key in a fresh client: a single Redis read, a GET
    other = await make_cache()
    await other.get("warm-up")
    before, gets = await script_calls(redis), await command_calls(redis, ("get",))
    await asyncio.gather(*(other.get("k") for _ in range(100)))
    assert await command_calls(redis, ("get",)) - gets == 1
    assert await script_calls(redis) == before
    assert other.stats().redis_hits == 2  # the warm-up read and this one


async def test_set_get_delete_round_trip(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("k", {"n": [1, 2, 3]}, ttl=60)
    assert await b.get("k") == {"n": [1, 2, 3]}
    await a.delete("k")
    await wait_until(lambda: b.stats().invalidations_received >= 2, what="b saw the delete")
    assert await b.get("k") is None
    assert await a.get("k") is None
    assert await ns_keys(redis, namespace) == []


async def test_values_are_json_round_tripped_the_same_in_every_process(
    make_cache: MakeCache,
) -> None:
    a, b = await make_cache(), await make_cache()

    async def fetch() -> Any:
        return {"t": (1, 2), 3: "int key"}

    mine = await a.get_or_init("k", fetch)
    theirs = await b.get("k")
    assert mine == theirs == {"t": [1, 2], "3": "int key"}


async def test_stored_format_is_a_string_with_a_header_and_the_payload(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    value_key = f"{namespace}:v:{{cms::homepage}}"
    await cache.set("cms::homepage", {"title": "Hi"})
    assert await ns_keys(redis, namespace) == [value_key.encode()]
    raw = await redis.get(value_key)
    assert isinstance(raw, bytes)
    assert raw.startswith(b"\x01")
    assert raw.endswith(b'{"title":"Hi"}')
    version, expires_ms, payload, _ = unpack(raw) or (0, -1, b"", ())
    (seconds, micros) = await redis.time()
    assert 0 < version <= seconds * 1_000_000 + micros  # the server's clock, in µs
    assert (expires_ms, payload) == (0, b'{"title":"Hi"}')
    assert await redis.pttl(value_key) == -1
    # with a ttl: the key expires in Redis, and the header tells when, in server time
    await cache.set("cms::homepage", {"title": "Hi"}, ttl=60)
    version, expires_ms, _, _ = unpack(await redis.get(value_key) or b"") or (0, 0, b"", ())
    pttl = await redis.pttl(value_key)
    (seconds, micros) = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    assert 59_000 < pttl <= 60_000
    # never later than the key's own expiry (taken 1 ms early), within the calls' time
    assert now_ms + pttl - 1_000 <= expires_ms <= now_ms + pttl


async def test_keys_with_braces_keep_value_and_lock_in_one_slot(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    for key in ["a{b}c", "}x", "{", "{}"]:
        assert await cache.get_or_init(key, Counter()) == {"value": "v1"}
        assert await cache.get(key) == {"value": "v1"}
    assert len(await ns_keys(redis, namespace)) == 4
    space = KeySpace(namespace)
    for key in ["a{b}c", "}x", "{", "{}", "plain"]:
        assert key_slot(space.value(key).encode()) == key_slot(space.lock(key).encode())
    assert space.value("a{b}c") != space.value("a{b}d")


async def test_versions_grow_even_after_delete(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    key = f"{namespace}:v:{{k}}"
    await cache.set("k", 1)
    first = await stored_version(redis, key)
    await cache.set("k", 2)
    second = await stored_version(redis, key)
    await cache.delete("k")
    await cache.set("k", 3)
    third = await stored_version(redis, key)
    assert first < second < third


# -- ttl ------------------------------------------------------------------------------------


async def test_short_ttl_is_a_hit_not_a_miss(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """redicache rounded a TTL under 0.5 s to 0 and took the key for a miss."""
    writer, reader = await make_cache(), await make_cache()
    await writer.set("k", "fresh", ttl=0.4)
    fetch = Counter()
    assert await reader.get_or_init("k", fetch, ttl=0.4) == "fresh"
    assert fetch.calls == 0


async def test_local_copy_never_outlives_the_redis_ttl(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    writer, reader = await make_cache(), await make_cache()
    await writer.set("k", "v", ttl=0.3)
    assert await reader.get("k") == "v"
    entry = reader._local.peek("k")
    pttl = await redis.pttl(f"{namespace}:v:{{k}}")
    answered = time.monotonic()
    assert entry is not None
    assert pttl > 0
    # PTTL counted from a moment before its answer came (by a whole round trip, on a busy
    # machine), and truncates to the millisecond: the key expires by answered + pttl + 1 ms,
    # which the local copy must not outlive.
    assert entry.expires_at <= answered + (pttl + 1) / 1000
    await wait_until(
        lambda: _key_gone(redis, f"{namespace}:v:{{k}}"), what="the key to expire in Redis"
    )
    assert await reader.get("k") is None
    assert await writer.get("k") is None


async def _key_gone(redis: aioredis.Redis, key: str) -> bool:
    return await redis.exists(key) == 0


async def test_ttl_none_means_no_expiry_and_set_without_ttl_persists(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("k", 1, ttl=30)
    await cache.set("k", 2)
    assert await redis.pttl(f"{namespace}:v:{{k}}") == -1
    assert cache._local.peek("k") is not None
    assert math.isinf(cache._local.peek("k").expires_at)  # type: ignore[union-attr]


# -- None and exceptions --------------------------------------------------------------------


async def test_none_is_returned_but_not_cached(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    calls = 0

    async def fetch() -> None:
        nonlocal calls
        calls += 1

    assert await cache.get_or_init("k", fetch) is None
    assert await cache.get_or_init("k", fetch) is None
    assert calls == 2
    assert await ns_keys(redis, namespace) == []  # no value, and the lock was released


async def test_fetch_error_reaches_every_waiter_releases_lock_and_keeps_old_value(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("old", "previous")

    async def failing() -> Any:
        await asyncio.sleep(0.05)  # a slow backend: the other nine callers join meanwhile
        raise LookupError("backend down")

    results = await asyncio.gather(
        *(cache.get_or_init("k", failing) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
    assert cache.stats().fetches == 1
    assert cache.stats().fetch_errors == 1
    assert await redis.exists(f"{namespace}:lock:{{k}}") == 0
    # regeneration failing leaves the previous value in place
    with pytest.raises(LookupError):
        await cache.attempt_regeneration("old", failing)
    other = await make_cache()
    assert await other.get("old") == "previous"
    assert await redis.exists(f"{namespace}:lock:{{old}}") == 0


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stretch a waiter's fallback poll (first at 100 ms) to an hour, so that only an event on
    the channel can wake it. The tests that use it give their lock holders ``lock_ttl=60``, so
    that the lock's expiry cannot wake it either."""
    monkeypatch.setattr("redicache_async.client.loads._FIRST_POLL", 3600.0)


async def test_failed_fetch_wakes_waiters_in_other_processes_at_once(
    make_cache: MakeCache, no_polling: None
) -> None:
    holder, waiter = await make_cache(lock_ttl=60), await make_cache()
    fetch_started = asyncio.Event()
    fail_now = asyncio.Event()

    async def failing() -> Any:
        fetch_started.set()
        await fail_now.wait()
        raise LookupError("nope")

    holding = asyncio.create_task(holder.get_or_init("k", failing))
    await fetch_started.wait()
    waiter_fetch = Counter(prefix="w")
    waiting = asyncio.create_task(waiter.get_or_init("k", waiter_fetch))
    await wait_until(lambda: waiter.stats().lock_waits == 1, what="the waiter to wait")
    fail_now.set()
    with pytest.raises(LookupError):
        await holding
    # woken by the unlock event (it would poll in an hour), it takes the lock and fetches
    assert await asyncio.wait_for(waiting, 5) == {"value": "w1"}
    assert waiter_fetch.calls == 1


@pytest.mark.parametrize("outcome", ["raises", "returns-none"])
async def test_a_release_deletes_only_the_holders_own_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, outcome: str
) -> None:
    """A holder whose lock expired and went to another caller, and whose fetch then fails or
    finds nothing, releases nothing: compare-and-delete, never a plain DEL."""
    holder = await make_cache()
    lock = f"{namespace}:lock:{{k}}"
    started, proceed = asyncio.Event(), asyncio.Event()

    async def fetch() -> Any:
        started.set()
        await proceed.wait()
        if outcome == "raises":
            raise LookupError("backend down")
        return None

    regenerating = asyncio.create_task(holder.attempt_regeneration("k", fetch))
    await started.wait()
    assert await redis.exists(lock)
    # its lease ran out and another caller took the lock
    await redis.set(lock, "successor", px=10_000)
    proceed.set()
    if outcome == "raises":
        with pytest.raises(LookupError):
            await regenerating
    else:
        assert await regenerating is None
    # (that it does release its own lock: test_fetch_error_reaches_every_waiter_...)
    assert await redis.get(lock) == b"successor"
    assert not await redis.exists(f"{namespace}:v:{{k}}")


async def test_a_release_without_a_value_is_announced_once(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """A fetch that raises or returns None releases the lock with an ``unlock`` event, so that
    waiters elsewhere retry at once; a write announces itself with its own event instead."""
    cache = await make_cache()

    async def fails() -> Any:
        raise LookupError("backend down")

    async def finds_nothing() -> Any:
        return None

    async with ChannelTap(redis, f"{namespace}:events") as tap:
        with pytest.raises(LookupError):
            await cache.get_or_init("failed", fails)
        assert await cache.get_or_init("empty", finds_nothing) is None
        assert await cache.get_or_init("written", Counter()) == {"value": "v1"}

        def seen(payloads: list[bytes]) -> collections.Counter[tuple[str, str]]:
            return collections.Counter(
                (event["op"], event["key"]) for event in map(json.loads, payloads)
            )

        await tap.until(lambda p: len(seen(p)) == 3, what="three kinds of event")
    assert seen(tap.payloads) == {
        ("unlock", "failed"): 1,
        ("unlock", "empty"): 1,
        ("set", "written"): 1,
    }


async def test_fetch_timeout_bounds_a_hung_fetch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(fetch_timeout=0.1)

    async def hangs() -> Any:
        await asyncio.Event().wait()

    with pytest.raises(FetchTimeout) as info:
        async with asyncio.timeout(10):  # a plain TimeoutError here: fetch_timeout did nothing
            await cache.get_or_init("k", hangs)
    assert isinstance(info.value, TimeoutError)
    assert await redis.exists(f"{namespace}:lock:{{k}}") == 0


async def test_a_fetch_that_raises_timeout_error_itself_is_not_a_fetch_timeout(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(fetch_timeout=10)

    async def raises() -> Any:
        raise TimeoutError("the backend's own timeout")

    with pytest.raises(TimeoutError) as info:
        await cache.get_or_init("k", raises)
    assert not isinstance(info.value, FetchTimeout)


async def test_each_kind_of_fetch_is_called_as_the_readme_says(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    loop_thread = threading.get_ident()

    async def on_the_loop(tag: str = "async") -> list[Any]:
        return [tag, threading.get_ident() == loop_thread]

    def in_a_thread() -> list[Any]:
        return ["plain", threading.get_ident() == loop_thread]

    # an async def (or a partial of one) is awaited, in the event loop's thread
    assert await cache.get_or_init("a", on_the_loop) == ["async", True]
    assert await cache.get_or_init("p", functools.partial(on_the_loop, "partial")) == [
        "partial",
        True,
    ]
    # a plain function runs in a worker thread, so it cannot block the loop
    assert await cache.get_or_init("t", in_a_thread) == ["plain", False]
    # a plain function that returns a coroutine is refused, with the fix in the message
    with pytest.raises(InvalidArgumentTypeError, match=r"functools\.partial"):
        await cache.get_or_init("c", lambda: on_the_loop())
    assert await ns_keys(redis, namespace) == [
        f"{namespace}:v:{{{key}}}".encode() for key in ("a", "p", "t")
    ]


async def test_caller_cancelled_does_not_cancel_the_shared_load(make_cache: MakeCache) -> None:
    cache = await make_cache()
    fetch = Counter(delay=0.1)
    first = asyncio.create_task(cache.get_or_init("k", fetch))
    second = asyncio.create_task(cache.get_or_init("k", fetch))
    await wait_until(lambda: fetch.calls == 1, what="the shared fetch to start")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == {"value": "v1"}
    assert fetch.calls == 1


def _joined(flight: Any, held: int) -> bool:
    """Whether a caller joined ``flight`` since it held ``held`` futures: one more is held,
    or fewer when joining dropped those of the callers that had left."""
    return len(flight.waiters) != held


async def test_callers_that_gave_up_on_a_load_are_not_held_while_it_runs(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache()
    done = asyncio.Event()
    calls = 0

    async def fetch() -> str:  # runs until the test is done joining and leaving
        nonlocal calls
        calls += 1
        await done.wait()
        return "v"

    staying = [asyncio.create_task(cache.get_or_init("k", fetch)) for _ in range(10)]
    await wait_until(lambda: calls == 1, what="the shared fetch to start")
    flight = cache._loads._flights["k"]
    await wait_until(lambda: len(flight.waiters) == 10, what="the 10 callers to join the load")
    for _ in range(200):  # joined, then given up, one after the other
        held = len(flight.waiters)
        leaving = asyncio.create_task(cache.get_or_init("k", fetch))
        await wait_until(functools.partial(_joined, flight, held), what="the caller to join")
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
    # what the load still holds of its callers: the 10 that stay, not the 200 that left
    assert len(flight.waiters) < 50
    done.set()
    async with asyncio.timeout(10):  # a caller dropped with those that left would wait forever
        assert await asyncio.gather(*staying) == ["v"] * 10
    assert calls == 1


# -- attempt_regeneration -------------------------------------------------------------------


async def test_attempt_regeneration_replaces_value_everywhere(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    fetch = Counter()
    await a.get_or_init("k", fetch)
    assert await b.get("k") == {"value": "v1"}
    assert await a.attempt_regeneration("k", fetch) == {"value": "v2"}
    await wait_until(lambda: b._local.peek("k") is None, what="b to drop its old copy")
    assert await b.get("k") == {"value": "v2"}
    assert a.stats().local_hits == 0
    assert await a.get("k") == {"value": "v2"}


async def test_attempt_regeneration_raises_while_another_holds_the_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("k", "old")
    await redis.set(f"{namespace}:lock:{{k}}", "someone-else", px=10_000)
    fetch = Counter()
    with pytest.raises(RegenerationInProgress) as info:
        await cache.attempt_regeneration("k", fetch)
    assert info.value.key == "k"
    assert fetch.calls == 0
    assert await redis.get(f"{namespace}:lock:{{k}}") == b"someone-else"
    assert await cache.get("k") == "old"


async def test_attempt_regeneration_while_a_load_runs_in_this_process(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache()
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "loaded"

    loading = asyncio.create_task(cache.get_or_init("k", slow))
    await wait_until(lambda: cache.stats().fetches == 1, what="the load to take the lock")
    with pytest.raises(RegenerationInProgress):
        await cache.attempt_regeneration("k", slow)
    gate.set()
    assert await loading == "loaded"


# -- locks across clients ------------------------------------------------------------------


async def test_watchdog_keeps_the_lock_of_a_fetch_slower_than_lock_ttl(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    # The watchdog renews every third of the lease: only a loop stalled for two thirds of it
    # loses the lock, which is the lease doing its job. A second of lease leaves a loaded
    # machine that room; 0.4 s did not (it failed once under four parallel suites).
    ttl = 1.0
    holder = await make_cache(lock_ttl=ttl)
    other = await make_cache(lock_ttl=ttl)
    finish = asyncio.Event()

    async def slow_fetch() -> dict[str, Any]:
        await finish.wait()
        return {"value": "v1"}

    loading = asyncio.create_task(holder.get_or_init("k", slow_fetch))
    await wait_until(lambda: holder.stats().fetches == 1, what="the fetch to start")
    loop = asyncio.get_running_loop()
    fetch_started = loop.time()
    rival = Counter(prefix="rival")
    # still held three and a half leases after the fetch began: renewed, not merely not yet
    # expired
    while loop.time() - fetch_started < 3.5 * ttl:
        with pytest.raises(RegenerationInProgress):
            await other.attempt_regeneration("k", rival)
        await asyncio.sleep(0.05)
    assert not loading.done()
    finish.set()
    assert await loading == {"value": "v1"}
    assert rival.calls == 0
    assert await other.get_or_init("k", rival) == {"value": "v1"}


async def test_fencing_rejects_the_write_of_a_holder_that_lost_its_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    holder = await make_cache()
    await holder.set("k", "current")
    proceed = asyncio.Event()

    async def fetch() -> str:
        await proceed.wait()
        return "late"

    regenerating = asyncio.create_task(holder.attempt_regeneration("k", fetch))
    await wait_until(lambda: holder.stats().fetches == 1, what="the fetch to start")
    # the lease expires and a successor takes the lock
    await redis.set(f"{namespace}:lock:{{k}}", "successor", px=10_000)
    proceed.set()
    assert await regenerating == "late"  # the caller still gets what it fetched
    assert holder.stats().fenced_writes == 1
    assert await stored_payload(redis, f"{namespace}:v:{{k}}") == b'"current"'
    assert await redis.get(f"{namespace}:lock:{{k}}") == b"successor"
    assert await holder.get("k") == "current"  # nor kept locally


async def test_waiter_is_woken_by_the_new_value_not_by_polling(
    make_cache: MakeCache, no_polling: None
) -> None:
    holder, waiter = await make_cache(lock_ttl=60), await make_cache()
    release = asyncio.Event()

    async def fetch() -> str:
        await release.wait()
        return "done"

    holding = asyncio.create_task(holder.get_or_init("k", fetch))
    await wait_until(lambda: holder.stats().fetches == 1, what="the holder's fetch")
    waiting = asyncio.create_task(waiter.get_or_init("k", Counter()))
    await wait_until(lambda: waiter.stats().lock_waits == 1, what="the waiter to wait")
    release.set()
    await holding
    # its next poll is an hour away: only the new value's event can explain an answer
    assert await asyncio.wait_for(waiting, 5) == "done"
    assert waiter.stats().lock_takeovers == 0  # it got the holder's value


async def test_waiter_takes_over_when_the_holder_vanishes(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    waiter = await make_cache()
    # a holder that died: its lock stays until its ttl runs out, and it never announces
    await redis.set(f"{namespace}:lock:{{k}}", "dead-holder", px=300)
    fetch = Counter()
    assert await waiter.get_or_init("k", fetch) == {"value": "v1"}
    stats = waiter.stats()
    assert (stats.lock_waits, stats.lock_takeovers, stats.fetches, stats.lock_wait_timeouts) == (
        1,
        1,
        1,
        0,
    )


async def test_wait_timeout_answers_with_an_in_process_fetch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    waiter = await make_cache(wait_timeout=0.2)
    await redis.set(f"{namespace}:lock:{{k}}", "stuck-holder", px=60_000)
    fetch = Counter()
    async with asyncio.timeout(10):  # not a minute, until the stuck lock expires
        assert await waiter.get_or_init("k", fetch) == {"value": "v1"}
    assert waiter.stats().lock_wait_timeouts == 1
    # not written: only the lock holder may write
    assert await redis.exists(f"{namespace}:v:{{k}}") == 0


# -- coherence ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
async def test_invalidation_reaches_other_clients_under_both_protocols(
    make_cache: MakeCache, make_redis: Callable[..., aioredis.Redis], protocol: int
) -> None:
    a = await make_cache(make_redis(protocol=protocol))
    b = await make_cache(make_redis(protocol=protocol))
    await a.set("k", 1)
    assert await b.get("k") == 1
    await a.set("k", 2)
    await wait_until(lambda: b._local.peek("k") is None, what="b to drop its copy")
    assert await b.get("k") == 2
    assert b.stats().invalidations_received == 2


async def test_events_carry_the_key_and_version_never_the_value(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    secret = f"secret-{namespace}"

    async def fetch() -> dict[str, str]:
        return {"payload": secret}

    async with ChannelTap(redis, f"{namespace}:events") as tap:
        await cache.set("written", {"payload": secret})
        await cache.get_or_init("fetched", fetch)
        await cache.delete("written")
        await tap.until(lambda payloads: len(payloads) == 3, what="three events")
    stream = f"{namespace}:stream"
    streamed = []
    for _, fields in await redis.xrange(stream) or []:  # none on a cluster
        assert fields is not None
        event = fields[b"e"]
        streamed.append(event if isinstance(event, bytes) else event.encode())
    for payload in tap.payloads + streamed:
        assert secret.encode() not in payload
        assert set(json.loads(payload)) <= {"op", "key", "origin", "version", "id"}


async def test_decode_responses_clients_work_too(
    make_cache: MakeCache, make_redis: Callable[..., aioredis.Redis]
) -> None:
    a = await make_cache(make_redis(decode_responses=True))
    b = await make_cache(make_redis(decode_responses=True))
    await a.set("k", {"x": "é"})
    assert await b.get_or_init("k", Counter()) == {"x": "é"}
    await a.set("k", 2)
    await wait_until(lambda: b._local.peek("k") is None, what="b to drop its copy")


@pytest.mark.parametrize("write_meanwhile", [True, False])
@pytest.mark.single_node
async def test_a_read_that_raced_an_invalidation_is_not_kept(
    make_cache: MakeCache, redis_url: str, write_meanwhile: bool
) -> None:
    """The server answers "old"; its reply is held back while (or without, for the control
    case) another client's write and its event go by."""
    gated = GatedRedis.connect(redis_url)
    reader = await make_cache(gated)
    try:
        writer = await make_cache()
        await writer.set("k", "old")
        gated.holds = reads_value
        gated.gate.clear()
        reading = asyncio.create_task(reader.get("k"))
        await gated.held.wait()
        if write_meanwhile:
            received = reader.stats().invalidations_received
            await writer.set("k", "new")
            await wait_until(
                lambda: reader.stats().invalidations_received > received,
                what="the reader's listener to see the write",
            )
        gated.gate.set()
        assert await reading == "old"  # what Redis held when it was read
        kept = reader._local.peek("k")
        if write_meanwhile:
            assert kept is None  # ... but not kept
            assert await reader.get("k") == "new"
        else:
            assert kept is not None
            assert kept.value == "old"
    finally:
        await reader.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_own_write_stays_local_when_its_event_comes_back(make_cache: MakeCache) -> None:
    cache = await make_cache()
    await cache.set("k", "mine")
    await wait_until(lambda: cache.stats().invalidations_received == 1, what="own event")
    assert cache._local.peek("k") is not None


async def _write_unannounced(r: aioredis.Redis, namespace: str, key: str, value: str) -> None:
    """Change ``key`` the way a write does, but with its pub/sub event lost: only the stream
    has it (as when a listener is disconnected at the time of the write)."""
    value_key = f"{namespace}:v:{{{key}}}"
    version = await stored_version(r, value_key) + 1
    await put_value(r, value_key, json.dumps(value), version=version)
    event = {"op": "set", "key": key, "origin": "elsewhere", "version": version}
    await r.xadd(f"{namespace}:stream", {"e": json.dumps(event)})


@pytest.mark.single_node
async def test_reconnected_listener_replays_missed_events_from_the_stream(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("k", "v1")
    await a.set("other", "kept")
    assert await b.get("k") == "v1"
    assert await b.get("other") == "kept"
    await _write_unannounced(redis, namespace, "k", "v2")
    assert b._local.peek("k") is not None  # b missed it: nothing told it
    await redis.client_kill_filter(_type="pubsub")
    await wait_until(lambda: b.stats().replays >= 1, what="b to resubscribe and replay")
    stats = b.stats()
    assert stats.local_flushes == 0
    assert b._local.peek("k") is None
    assert b._local.peek("other") is not None  # only what changed was dropped
    assert await b.get("k") == "v2"
    assert b.stats().local_hits == stats.local_hits


@pytest.mark.single_node
async def test_a_listener_that_was_subscribed_reconnects_without_a_tls_probe(
    make_cache: MakeCache, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain server that answered, then reset the connection, is having an outage: probing
    it for TLS (a handshake it never completes) would hold the reconnection for
    ``redis_timeout``. Only an attempt that never subscribed is probed."""
    probes: list[tuple[str, int]] = []
    probe = tls.speaks_tls

    async def counted(host: str, port: int, timeout: float) -> bool:
        probes.append((host, port))
        return await probe(host, port, timeout)

    monkeypatch.setattr(tls, "speaks_tls", counted)
    cache = await make_cache(redis_timeout=30.0)
    for round_ in range(1, 4):
        await redis.client_kill_filter(_type="pubsub")
        await wait_until(
            lambda: cache.stats().replays >= round_,  # noqa: B023 (awaited at once)
            what=f"resubscription {round_} and its replay",
        )
    assert probes == []


@pytest.mark.single_node
async def test_reconnected_listener_flushes_when_the_gap_was_trimmed(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    b = await make_cache()
    await b.set("k", "v1")
    await b.set("other", "v1")
    await _write_unannounced(redis, namespace, "k", "v2")
    await redis.xtrim(f"{namespace}:stream", maxlen=0, approximate=False)  # past its horizon
    await redis.client_kill_filter(_type="pubsub")
    await wait_until(lambda: b.stats().local_flushes >= 1, what="b to resubscribe")
    assert b._local.peek("k") is None
    assert b._local.peek("other") is None  # it cannot know what else changed
    assert await b.get("k") == "v2"


@pytest.mark.single_node
async def test_reconnected_listener_flushes_when_the_server_lost_its_data(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    b = await make_cache()
    await b.set("k", "v1")
    await redis.delete(f"{namespace}:stream", f"{namespace}:v:{{k}}")  # as a restart would
    await redis.client_kill_filter(_type="pubsub")
    await wait_until(lambda: b.stats().local_flushes >= 1, what="b to resubscribe")
    assert await b.get("k") is None


async def test_foreign_messages_on_the_channel_are_ignored_and_counted(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("k", 1)
    for junk in [b"not json", b"{}", b'{"op":"set","key":1,"origin":"x","version":1}', b"\xff"]:
        await redis.publish(f"{namespace}:events", junk)
    await wait_until(lambda: cache.stats().invalidations_ignored == 4, what="4 ignored")
    assert cache._local.peek("k") is not None
    await cache.set("k", 2)  # the listener still works
    assert await cache.get("k") == 2


async def test_undecodable_value_in_redis_is_a_miss_and_is_refetched(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await put_value(redis, f"{namespace}:v:{{k}}", b"\x80not json")
    assert await cache.get("k") is None
    assert await cache.get_or_init("k", Counter()) == {"value": "v1"}
    assert cache.stats().decode_errors == 2
    # a string without the format's header is another layout: a counted miss, then replaced
    await redis.set(f"{namespace}:v:{{w}}", "a string written by hand")
    assert await cache.get("w") is None
    assert await cache.get_or_init("w", Counter()) == {"value": "v1"}
    assert cache.stats().foreign_values == 2
    assert cache.stats().decode_errors == 2


async def test_json_is_the_default_and_pickle_an_explicit_choice(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    plain = await make_cache()
    await plain.set("j", {"when": "2026-11-23", "tags": ["a"]})
    stored = await stored_payload(redis, f"{namespace}:v:{{j}}")
    assert stored is not None
    assert json.loads(stored) == {
        "when": "2026-11-23",
        "tags": ["a"],
    }
    with pytest.raises(SerializationError):
        await plain.set("d", datetime.date(2026, 11, 23))

    a = await make_cache(serializer=PickleSerializer())
    b = await make_cache(serializer=PickleSerializer())
    value = {"when": datetime.date(2026, 11, 23), "tags": {"a", "b"}}
    await a.set("p", value)
    assert await b.get("p") == value
    with pytest.raises(SerializationError):
        await a.set("bad", lambda: None)
    await put_value(redis, f"{namespace}:v:{{junk}}", b"not a pickle")
    assert await b.get("junk") is None  # undecodable: a miss, not a crash
    assert b.stats().decode_errors == 1


# -- bad input ------------------------------------------------------------------------------


async def _returns_a_set() -> object:
    return {1, 2}


async def _load() -> int:
    return 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.get_or_init(1, Counter()), InvalidArgumentTypeError),
        (lambda c: c.get_or_init("", Counter()), InvalidArgumentError),
        (lambda c: c.get_or_init("x" * 2000, Counter()), InvalidArgumentError),
        (lambda c: c.get_or_init(["k"], Counter()), InvalidArgumentTypeError),
        (lambda c: c.get_or_init("k", "not callable"), InvalidArgumentTypeError),
        (lambda c: c.get_or_init("k", Counter(), ttl=-1), InvalidArgumentError),
        (lambda c: c.get_or_init("k", Counter(), ttl=0), InvalidArgumentError),
        (lambda c: c.get_or_init("k", Counter(), ttl=math.nan), InvalidArgumentError),
        (lambda c: c.get_or_init("k", Counter(), ttl=math.inf), InvalidArgumentError),
        (lambda c: c.get_or_init("k", Counter(), ttl="60"), InvalidArgumentTypeError),
        (lambda c: c.attempt_regeneration("k", None), InvalidArgumentTypeError),
        (lambda c: c.set("k", object()), SerializationError),
        (lambda c: c.set("k", {"x": math.nan}), SerializationError),
        (lambda c: c.set("k", None), InvalidArgumentError),
        (lambda c: c.set("k", 1, ttl=-5), InvalidArgumentError),
        (lambda c: c.get(b"k"), InvalidArgumentTypeError),
        (lambda c: c.delete(""), InvalidArgumentError),
        # fetch results: refused after the fetch, with the lock released and nothing written
        (lambda c: c.get_or_init("k", _returns_a_set), SerializationError),
        (lambda c: c.get_or_init("k", lambda: _load()), InvalidArgumentTypeError),
        (lambda c: c.get_or_init("k", lambda: object()), SerializationError),
        (lambda c: c.attempt_regeneration("k", _returns_a_set), SerializationError),
        (lambda c: c.get_or_init("é" * 513, Counter()), InvalidArgumentError),  # 1,026 bytes
        (lambda c: c.get_target("k", field=1), InvalidArgumentTypeError),
        (lambda c: c.delete(None), InvalidArgumentTypeError),
    ],
)
async def test_bad_arguments_raise_clear_errors_and_write_nothing(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    call: Callable[[CacheClient], Awaitable[Any]],
    error: type[Exception],
) -> None:
    cache = await make_cache()
    with pytest.raises(error) as info:
        await call(cache)
    assert isinstance(info.value, RedicacheError)
    assert str(info.value)
    assert await ns_keys(redis, namespace) == []
    assert not await redis.exists(f"{namespace}:stream")  # nothing announced either


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"namespace": "a{b}"}, InvalidArgumentError),
        ({"namespace": ""}, InvalidArgumentError),
        ({"namespace": 3}, InvalidArgumentTypeError),
        ({"local_max_entries": -1}, InvalidArgumentError),
        ({"local_max_bytes": 1.5}, InvalidArgumentTypeError),
        ({"lock_ttl": 0}, InvalidArgumentError),
        ({"fetch_timeout": -1}, InvalidArgumentError),
        ({"wait_timeout": math.nan}, InvalidArgumentError),
        ({"stale_ttl": -1}, InvalidArgumentError),
        ({"redis_timeout": None}, InvalidArgumentTypeError),
        ({"serializer": "json"}, InvalidArgumentTypeError),
    ],
)
def test_bad_options_raise_at_construction(
    redis: aioredis.Redis, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        CacheClient(redis, **options)


# -- lifecycle ------------------------------------------------------------------------------


async def test_unstarted_and_closed_clients_refuse_work(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = CacheClient(redis, namespace=namespace)
    with pytest.raises(ClientClosedError, match="not started"):
        await cache.get("k")
    async with cache:
        await cache.set("k", 1)
    with pytest.raises(ClientClosedError):
        await cache.get_or_init("k", Counter())
    with pytest.raises(ClientClosedError):
        await cache.start()
    await cache.aclose()  # idempotent


@pytest.mark.single_node
async def test_aclose_leaves_no_task_and_no_connection(
    redis_url: str, namespace: str, server_client_count: Callable[[], Awaitable[int]]
) -> None:
    baseline_tasks = asyncio.all_tasks()
    baseline_connections = await server_client_count()
    r = aioredis.Redis.from_url(redis_url)
    cache = CacheClient(r, namespace=namespace, lock_ttl=0.3)
    async with cache:
        gate = asyncio.Event()

        async def slow() -> str:
            await gate.wait()
            return "x"

        pending = asyncio.create_task(cache.get_or_init("slow", slow))
        await cache.get_or_init("k", Counter())
        await wait_until(lambda: cache.stats().fetches == 2, what="the slow fetch to start")
        assert await server_client_count() > baseline_connections
    # closing cancelled the in-flight load (and released its lock); its caller is told why
    with pytest.raises(ClientClosedError, match="closed while this call waited"):
        await pending
    assert await r.exists(f"{namespace}:lock:{{slow}}") == 0
    await cache.aclose()
    await r.aclose()
    assert asyncio.all_tasks() - baseline_tasks == set()
    await wait_until(
        lambda: _equals(server_client_count(), baseline_connections),
        what="connections to close",
    )


async def test_aclose_leaves_no_connection_on_any_node(
    make_redis: Callable[..., aioredis.Redis],
    namespace: str,
    data_node_connections: Callable[..., Awaitable[int]],
) -> None:
    baseline = await data_node_connections()
    subscribers = await data_node_connections(subscribed=True)
    r = make_redis()
    async with CacheClient(r, namespace=namespace) as cache:
        await cache.get_or_init("k", Counter())
        await cache.set("j", 1)
        assert await cache.get("j") == 1
        assert await data_node_connections(subscribed=True) == subscribers + 1  # the listener
    # The listener's connection is closed by aclose() (the server sees it go a moment later);
    # the pool's belong to the caller's Redis, closed next.
    await wait_until(
        lambda: _equals(data_node_connections(subscribed=True), subscribers),
        timeout=2.0,
        what="the listener's connection to close",
    )
    await r.aclose()
    await wait_until(
        lambda: _equals(data_node_connections(), baseline), what="connections to close"
    )


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_aclose_is_shielded_from_the_callers_cancellation(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = CacheClient(redis, namespace=namespace)
    await cache.start()
    closing = asyncio.create_task(cache.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await cache.aclose()  # finishes the same shutdown
    assert cache._listener._task is None


# -- JSON decoding with and without orjson ---------------------------------------------------

_EDGE_PAYLOADS = [
    b'{"id":18446744073709551615,"n":-9223372036854775808}',  # 64-bit limits: orjson's range
    b'{"big":123456789012345678901234567890}',  # beyond: orjson would give a float
    b"[18446744073709551616,-9223372036854775809]",
    b'{"x":NaN,"y":Infinity}',  # others may write these; orjson rejects them
    b'"\\ud800"',  # a lone surrogate
    b'{"f":0.1,"g":1e300,"h":-0.0,"s":"\\u00e9\\n","u":"\xc3\xa9","t":[true,false,null]}',
    b'{"a":1,"a":2}',
    b'{"id":"12345678901234567890123"}',  # digits in a string only
]


@pytest.mark.parametrize("payload", _EDGE_PAYLOADS)
def test_json_reads_the_same_with_orjson_or_without(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redicache_async import JsonSerializer, serializers

    expected = json.loads(payload)
    with_orjson = JsonSerializer().loads(payload)
    monkeypatch.setattr(serializers, "_orjson_loads", None)
    without = JsonSerializer().loads(payload)
    for got in (with_orjson, without):
        assert repr(got) == repr(expected)  # repr: tells 1 from 1.0, and nan matches itself


def test_json_decoding_uses_orjson_when_installed() -> None:
    # the test extra installs orjson, so that the suite covers the path most users run
    from redicache_async import serializers

    assert serializers._orjson_loads is not None
