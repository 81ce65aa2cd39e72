"""The batch loader (issue 17): ``get_or_init_many`` answers local hits without I/O, reads or
claims the other keys in one round trip per cluster slot group, fetches the keys it claimed
with one ``fetch_many`` call, waits for the keys whose locks another client holds (never
fetching them twice), and ends every lock it took on every path."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheClient,
    ClientClosedError,
    Entry,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidResultError,
)
from redicache_async.fetching import THREAD_NAME
from redicache_async.keys import KeySpace
from redicache_async.replies import text
from redicache_async.stored import unpack
from redicache_async.testing import RedisServer
from redicache_async.value_scripts import READ_OR_LOCK_MANY

from .conftest import MakeCache, MakeRedis
from .helpers import (
    ChannelTap,
    Fetch,
    GatedRedis,
    HeldFetch,
    command_calls,
    ns_keys,
    runs_script,
    script_calls,
    wait_until,
)
from .test_many import _keys_in_slots, own_server
from .test_many import test_bad_input_is_refused_before_any_io as refused_before_any_io
from .test_processes import SpawnWorker, spawn

pytestmark = pytest.mark.topologies

LONG = {"lock_ttl": 30.0, "wait_timeout": 30.0}

__all__ = ["own_server", "spawn"]  # fixtures, used by name


class FetchMany:
    """A ``fetch_many`` that finds the keys of ``values`` (and not the others), records each
    call's keys, and, made with ``held=True``, returns only once ``release`` is set."""

    def __init__(self, values: dict[str, Any], *, held: bool = False) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not held:
            self.release.set()

    async def __call__(self, keys: list[str]) -> dict[str, Any]:
        self.calls.append(list(keys))
        self.started.set()
        await self.release.wait()
        return {key: self.values[key] for key in keys if key in self.values}

    def fetched(self) -> list[list[str]]:
        """Each call's keys, sorted (a cluster's nodes answer in any order)."""
        return [sorted(keys) for keys in self.calls]


async def _locks_left(redis: aioredis.Redis, namespace: str, keys: Iterable[str]) -> list[str]:
    """The keys among ``keys`` whose write lock exists in Redis (one by one: on a cluster the
    locks live in different slots)."""
    space = KeySpace(namespace)
    return [key for key in keys if await redis.exists(space.lock(key))]


# -- values, absences, local hits ----------------------------------------------------------------


async def test_hits_answer_and_the_missing_keys_are_fetched_in_one_call(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("in-redis", "from redis")
    await b.set("held", "local")
    fetch = FetchMany({"m1": 1, "m2": Entry([2], ttl=5.0)})
    wanted = ["held", "in-redis", "m1", "absent", "m2", "held", "m1"]
    answer = await b.get_or_init_many(wanted, fetch, ttl=600)
    assert list(answer.items()) == [
        ("held", "local"),
        ("in-redis", "from redis"),
        ("m1", 1),
        ("m2", [2]),
    ]
    assert fetch.fetched() == [["absent", "m1", "m2"]]  # once, exactly the missing keys
    stats = b.stats()
    assert (stats.local_hits, stats.redis_hits, stats.misses, stats.fetches) == (1, 1, 3, 1)
    space = KeySpace(namespace)
    assert 0 < await redis.pttl(space.value("m2")) <= 5000  # the Entry's ttl, not the call's
    assert 5000 < await redis.pttl(space.value("m1")) <= 600_000
    # what it fetched is shared: another client reads it; what it did not find is not cached
    assert await a.get_many(["m1", "m2", "absent"]) == {"m1": 1, "m2": [2]}
    assert await _locks_left(redis, namespace, ["m1", "m2", "absent"]) == []
    again = FetchMany({"absent": "found now"})
    assert await b.get_or_init_many(["m1", "absent"], again) == {"m1": 1, "absent": "found now"}
    assert again.fetched() == [["absent"]]
    # all held locally: no I/O, no fetch
    total = await command_calls(redis)
    assert await b.get_or_init_many(("m1", "m2", "absent"), again) == {
        "m1": 1,
        "m2": [2],
        "absent": "found now",
    }
    assert await command_calls(redis) == total
    assert len(again.calls) == 1


async def test_empty_input_and_an_empty_fetch(make_cache: MakeCache) -> None:
    cache = await make_cache()
    fetch = FetchMany({})
    assert await cache.get_or_init_many([], fetch) == {}
    assert fetch.calls == []
    assert await cache.get_or_init_many(["x", "y"], fetch) == {}
    assert fetch.fetched() == [["x", "y"]]


async def test_a_plain_function_fetch_many_runs_in_a_thread(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """As a plain ``fetch``: called in a thread of its own, so the loop is not blocked; its
    lone-key fetch after a takeover goes the same way."""
    cache = await make_cache(**LONG)
    threads: list[str] = []

    def fetch_many(keys: list[str]) -> dict[str, str]:
        threads.append(threading.current_thread().name)
        return {key: key.upper() for key in keys}

    assert await cache.get_or_init_many(["a", "b"], fetch_many) == {"a": "A", "b": "B"}
    lock = KeySpace(namespace).lock("c")
    assert await redis.set(lock, "someone else", nx=True, px=30_000)
    call = asyncio.create_task(cache.get_or_init_many(["c"], fetch_many))
    await wait_until(lambda: cache.stats().lock_waits == 1, what="the wait for the lock")
    await redis.delete(lock)
    assert await asyncio.wait_for(call, 5) == {"c": "C"}
    assert len(threads) == 2
    assert all(name.startswith(THREAD_NAME) for name in threads)


# -- one fetch per key across clients ----------------------------------------------------------


async def test_overlapping_batches_of_two_clients_fetch_each_key_once(
    make_cache: MakeCache, make_redis: MakeRedis, redis: aioredis.Redis, namespace: str
) -> None:
    """Two clients with connection pools of their own, as two processes would be: the second
    batch fetches only the key the first does not hold, and waits for the others."""
    a, b = await make_cache(make_redis(), **LONG), await make_cache(make_redis(), **LONG)
    fetch_a = FetchMany({"k1": "a1", "k2": "a2", "k3": "a3"}, held=True)
    fetch_b = FetchMany({"k2": "b2", "k3": "b3", "k4": "b4"})
    first = asyncio.create_task(a.get_or_init_many(["k1", "k2", "k3"], fetch_a))
    await fetch_a.started.wait()
    second = asyncio.create_task(b.get_or_init_many(["k2", "k3", "k4"], fetch_b))
    await wait_until(lambda: b.stats().lock_waits == 2, what="b to wait for k2 and k3")
    assert fetch_b.fetched() == [["k4"]]
    fetch_a.release.set()
    assert await first == {"k1": "a1", "k2": "a2", "k3": "a3"}
    assert await asyncio.wait_for(second, 10) == {"k2": "a2", "k3": "a3", "k4": "b4"}
    assert fetch_a.fetched() == [["k1", "k2", "k3"]]
    assert fetch_b.fetched() == [["k4"]]
    assert await _locks_left(redis, namespace, ["k1", "k2", "k3", "k4"]) == []


@pytest.mark.slow
@pytest.mark.single_node
async def test_overlapping_batches_of_processes_fetch_each_key_once(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str
) -> None:
    """Real processes, each one batch of six of ten keys (every key asked by two or more):
    each key is fetched by one process, and every process answers it with that value."""
    counter, go = f"{namespace}:test:fetched", f"{namespace}:test:go"
    keys = [f"k{i}" for i in range(10)]
    workers = [
        await spawn(
            "batch",
            {
                "keys": [keys[(start + i) % 10] for i in range(6)],
                "counter": counter,
                "go": go,
                "fetch_seconds": 0.3,
                "options": LONG,
            },
        )
        for start in (0, 2, 5, 7)
    ]
    await redis.rpush(go, *range(len(workers)))
    reports = [await worker.line() for worker in workers]
    fetched = await redis.hgetall(counter)
    assert {text(key): int(n) for key, n in fetched.items()} == dict.fromkeys(keys, 1)
    answers: dict[str, set[str]] = {}
    for report in reports:
        assert len(report["values"]) == 6
        for key, value in report["values"].items():
            answers.setdefault(key, set()).add(value)
    assert sorted(answers) == keys
    assert all(len(values) == 1 for values in answers.values())
    assert sum(report["fetches"] for report in reports) <= len(workers) + len(keys)


async def test_a_key_locked_elsewhere_is_waited_for_and_its_write_delivers_the_value(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    lock = KeySpace(namespace).lock("held")
    assert await redis.set(lock, "someone else", nx=True, px=30_000)
    fetch = FetchMany({"held": "fetched here", "free": "free value"})
    call = asyncio.create_task(b.get_or_init_many(["held", "free"], fetch))
    await wait_until(lambda: b.stats().lock_waits == 1, what="b to wait for the lock")
    assert fetch.fetched() == [["free"]]
    await a.set("held", "written by the holder")  # deletes the lock; its event wakes b
    assert await asyncio.wait_for(call, 5) == {
        "held": "written by the holder",
        "free": "free value",
    }
    assert fetch.fetched() == [["free"]]


async def test_a_lock_left_without_a_value_is_taken_over_and_fetched_alone(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(**LONG)
    lock = KeySpace(namespace).lock("held")
    assert await redis.set(lock, "someone else", nx=True, px=30_000)
    fetch = FetchMany({"held": "fetched here", "free": "free value"})
    call = asyncio.create_task(cache.get_or_init_many(["held", "free"], fetch))
    await wait_until(lambda: cache.stats().lock_waits == 1, what="the wait for the lock")
    await redis.delete(lock)  # no event: the waiter's polling finds it gone
    assert await asyncio.wait_for(call, 5) == {"held": "fetched here", "free": "free value"}
    assert fetch.fetched() == [["free"], ["held"]]
    assert cache.stats().lock_takeovers == 1


# -- one load per key in a process -------------------------------------------------------------


async def test_batches_and_get_or_init_in_one_process_join_each_others_loads(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(**LONG)
    single = HeldFetch("by get_or_init")
    loading = asyncio.create_task(cache.get_or_init("k", single))
    await single.started.wait()
    batch = FetchMany({"k": "by the batch", "j": "j", "i": "i"}, held=True)
    first = asyncio.create_task(cache.get_or_init_many(["k", "j"], batch))
    await batch.started.wait()
    other = FetchMany({"k": "other", "j": "other", "i": "other i"})
    second = asyncio.create_task(cache.get_or_init_many(["j", "i", "k"], other))
    late = Fetch("late")
    joined = asyncio.create_task(cache.get_or_init("j", late))
    await wait_until(lambda: len(other.calls) == 1, what="the second batch's fetch")
    single.release.set()
    batch.release.set()
    assert await first == {"k": "by get_or_init", "j": "j"}
    assert await second == {"j": "j", "i": "other i", "k": "by get_or_init"}
    assert await joined == "j"
    assert await loading == "by get_or_init"
    assert (single.calls, batch.fetched(), other.fetched(), late.calls) == (1, [["j"]], [["i"]], 0)
    # joined here, not met as a lock held elsewhere and waited for
    assert cache.stats().lock_waits == 0


# -- every lock ends -----------------------------------------------------------------------------


async def test_a_fetch_that_raises_fails_the_call_and_releases_every_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)

    async def broken(keys: list[str]) -> dict[str, Any]:
        raise ValueError("the source is down")

    keys = ["x", "y", "z"]
    with pytest.raises(ValueError, match="the source is down"):
        await a.get_or_init_many(keys, broken)
    assert await _locks_left(redis, namespace, keys) == []
    assert a.stats().fetch_errors == 1
    # a waiter elsewhere looks again at once (the release is announced), and fetches
    held = FetchMany({"x": "1"}, held=True)
    first = asyncio.create_task(a.get_or_init_many(["x"], held))
    await held.started.wait()
    other = asyncio.create_task(b.get_or_init("x", Fetch("b's")))
    await wait_until(lambda: b.stats().lock_waits == 1, what="b to wait")
    held.values = {}  # a finds nothing: its lock is released, b takes over
    held.release.set()
    assert await first == {}
    assert await asyncio.wait_for(other, 5) == "b's"


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (["x"], "must return a mapping"),
        ({"x": 1, "stranger": 2}, "not asked for.*stranger"),
    ],
)
async def test_a_fetch_returning_a_non_mapping_or_unasked_keys_is_refused(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, result: Any, match: str
) -> None:
    cache = await make_cache()

    async def fetch_many(keys: list[str]) -> Any:
        return result

    with pytest.raises(InvalidResultError, match=match):
        await cache.get_or_init_many(["x", "y"], fetch_many)
    assert await _locks_left(redis, namespace, ["x", "y"]) == []
    assert await ns_keys(redis, namespace) == []


async def test_the_locks_of_keys_the_fetch_did_not_return_are_released_and_announced(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(**LONG)
    fetch = FetchMany({"found": "yes"})

    def seen(payloads: list[bytes]) -> list[tuple[str, str]]:
        return sorted((event["op"], event["key"]) for event in map(json.loads, payloads))

    async with ChannelTap(redis, KeySpace(namespace).channel) as tap:
        assert await cache.get_or_init_many(["found", "lost1", "lost2"], fetch) == {"found": "yes"}
        await tap.until(lambda p: len(p) == 3, what="three events")
    assert seen(tap.payloads) == [("set", "found"), ("unlock", "lost1"), ("unlock", "lost2")]
    assert await _locks_left(redis, namespace, ["found", "lost1", "lost2"]) == []
    assert await cache.get_many(["found", "lost1", "lost2"]) == {"found": "yes"}


async def test_a_cancelled_caller_leaves_the_load_to_end_and_its_locks_with_it(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(**LONG)
    fetch = FetchMany({"p": "P"}, held=True)
    call = asyncio.create_task(cache.get_or_init_many(["p", "q"], fetch))
    await fetch.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert sorted(await _locks_left(redis, namespace, ["p", "q"])) == ["p", "q"]  # still fetching
    fetch.release.set()
    await wait_until(
        lambda: _no_locks(redis, namespace, ["p", "q"]), what="the load to write and release"
    )
    assert await cache.get_or_init_many(["p", "q"], FetchMany({})) == {"p": "P"}
    assert len(fetch.calls) == 1


async def _no_locks(redis: aioredis.Redis, namespace: str, keys: list[str]) -> bool:
    return await _locks_left(redis, namespace, keys) == []


async def test_a_close_mid_fetch_fails_the_call_and_releases_every_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(**LONG)
    fetch = FetchMany({"p": "P", "q": "Q"}, held=True)
    call = asyncio.create_task(cache.get_or_init_many(["p", "q"], fetch))
    await fetch.started.wait()
    await cache.aclose()
    with pytest.raises(ClientClosedError):
        await call
    assert await _locks_left(redis, namespace, ["p", "q"]) == []
    assert await ns_keys(redis, namespace) == []


async def test_a_fetch_past_fetch_timeout_fails_the_call_and_releases_every_lock(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache(fetch_timeout=0.2, lock_ttl=30.0, wait_timeout=30.0)
    never = asyncio.Event()

    async def hangs(keys: list[str]) -> dict[str, Any]:
        await never.wait()
        return {}

    with pytest.raises(FetchTimeout):
        await cache.get_or_init_many(["p", "q"], hangs)
    assert await _locks_left(redis, namespace, ["p", "q"]) == []
    assert cache.stats().fetch_errors == 1


@pytest.mark.single_node
async def test_a_close_with_the_claims_reply_on_the_wire_releases_every_lock(
    make_cache: MakeCache, redis: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """The claims ran on the server, their reply is on its way, and the client closes: the
    claims are released before ``aclose()`` returns, and nothing is fetched."""
    gated = GatedRedis.connect(redis_url)
    try:
        cache = await make_cache(gated, **LONG)
        gated.hold_first(runs_script(READ_OR_LOCK_MANY))
        fetch = FetchMany({"p": "P", "q": "Q"})
        call = asyncio.create_task(cache.get_or_init_many(["p", "q"], fetch))
        await gated.held.wait()
        assert sorted(await _locks_left(redis, namespace, ["p", "q"])) == ["p", "q"]
        await cache.aclose()
        with pytest.raises(ClientClosedError):
            await call
        assert await _locks_left(redis, namespace, ["p", "q"]) == []
        assert fetch.calls == []
    finally:
        gated.gate.set()
        await gated.aclose(close_connection_pool=True)


@pytest.mark.slow
@pytest.mark.single_node
async def test_with_redis_lost_during_the_fetch_the_call_answers_with_what_it_fetched(
    own_server: tuple[RedisServer, aioredis.Redis], namespace: str
) -> None:
    server, client = own_server
    async with CacheClient(
        client, namespace=namespace, redis_timeout=0.3, lock_ttl=30.0, wait_timeout=30.0
    ) as cache:
        fetch = FetchMany({"p": "P", "q": "Q"}, held=True)
        call = asyncio.create_task(cache.get_or_init_many(["p", "q", "r"], fetch))
        await fetch.started.wait()
        server.kill()
        fetch.release.set()
        assert await asyncio.wait_for(call, 10) == {"p": "P", "q": "Q"}
        assert cache.stats().writes == 0


# -- round trips -----------------------------------------------------------------------------------


async def test_one_read_or_claim_per_slot_group(
    make_cache: MakeCache, redis: aioredis.Redis, topology: str
) -> None:
    groups = _keys_in_slots((3, 2, 2))
    keys = [key for group in groups for key in group]
    expected = len(groups) if topology == "cluster" else 1
    writer, reader = await make_cache(), await make_cache()
    await writer.set("warm", 1)  # the scripts are loaded and connections open
    await reader.get("warm")
    await writer.set_many({key: key.upper() for key in keys})

    before = await script_calls(redis)
    fetch = FetchMany({})
    assert await reader.get_or_init_many(keys, fetch) == {key: key.upper() for key in keys}
    assert await script_calls(redis) - before == expected
    assert fetch.calls == []

    cold = [f"cold-{key}" for key in keys]  # the same number of keys, other slots
    before = await script_calls(redis)
    fetch = FetchMany({key: key for key in cold})
    assert await reader.get_or_init_many(cold, fetch) == {key: key for key in cold}
    claims = len(reader._slot_groups(cold)) if topology == "cluster" else 1
    # the claims, one a slot group, then the fenced write of each key (on a cluster, where the
    # write's script cannot read the clear and tag times, one read of them for the batch before
    # the writes, and one after each)
    writes = len(cold) * 2 + 1 if topology == "cluster" else len(cold)
    assert await script_calls(redis) - before == claims + writes
    assert len(fetch.calls) == 1


# -- no write is undone (the issue 8 rule) ----------------------------------------------------


async def test_a_write_or_delete_during_the_fetch_wins(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    fetch = FetchMany({"p": "old", "q": "old", "r": "old"}, held=True)
    call = asyncio.create_task(a.get_or_init_many(["p", "q", "r"], fetch))
    await fetch.started.wait()
    await b.set("p", "new")
    await b.delete("q")
    fetch.release.set()
    # its callers asked before the changes: they get what it fetched
    assert await call == {"p": "old", "q": "old", "r": "old"}
    assert a.stats().fenced_writes == 2
    await wait_until(lambda: _sees(a, {"p": "new", "r": "old"}), what="the changes at a")
    assert await _sees(b, {"p": "new", "r": "old"})
    fresh = FetchMany({"p": "fresh", "q": "fresh"})
    assert await a.get_or_init_many(["p", "q"], fresh) == {"p": "new", "q": "fresh"}
    assert fresh.fetched() == [["q"]]
    assert await _locks_left(redis, namespace, ["p", "q", "r"]) == []


async def _sees(cache: CacheClient, expected: dict[str, Any]) -> bool:
    return await cache.get_many(["p", "q", "r"]) == expected


async def test_tags_of_fetched_entries_are_kept_and_their_invalidation_wins(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """An ``Entry``'s tags are stored with its value; a value whose tag was invalidated is
    fetched again, not answered; an invalidation during the batch's fetch wins."""
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    fetch = FetchMany({"t": Entry("tagged", tags=("x",)), "u": "plain"})
    assert await a.get_or_init_many(["t", "u"], fetch) == {"t": "tagged", "u": "plain"}
    await b.invalidate_tags("x")
    assert await b.get_many(["t", "u"]) == {"u": "plain"}
    c = await make_cache(**LONG)  # started after the invalidation: it learns of it as it reads
    again = FetchMany({"t": Entry("tagged again", tags=("x",))})
    assert await c.get_or_init_many(["t", "u"], again) == {"t": "tagged again", "u": "plain"}
    assert again.fetched() == [["t"]]

    held = FetchMany({"t2": Entry("old", tags=("x",)), "v2": Entry("v", tags=("y",))}, held=True)
    call = asyncio.create_task(a.get_or_init_many(["t2", "v2"], held))
    await held.started.wait()
    await b.invalidate_tags("x")
    held.release.set()
    assert await call == {"t2": "old", "v2": "v"}  # its callers asked before the invalidation
    assert a.stats().fenced_writes == 1
    for cache in (a, b):
        assert await cache.get_many(["t2", "v2"]) == {"v2": "v"}
    assert await _locks_left(redis, namespace, ["t2", "v2"]) == []


async def test_the_calls_tags_go_with_each_value_and_an_entrys_replace_them(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    fetch = FetchMany({"p": "one", "q": Entry("two", tags=("own",))})
    answer = await a.get_or_init_many(["p", "q"], fetch, tags=("batch",))
    assert answer == {"p": "one", "q": "two"}
    stored = [unpack(await redis.get(KeySpace(namespace).value(k)) or b"") for k in "pq"]
    assert [s.tags if s else None for s in stored] == [("batch",), ("own",)]
    await b.invalidate_tags("batch")
    assert await b.get_many(["p", "q"]) == {"q": "two"}
    await b.invalidate_tags("own")
    assert await b.get_many(["p", "q"]) == {}


# -- Redis unreachable -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.single_node
async def test_with_redis_dead_stale_copies_answer_and_the_rest_is_fetched_in_one_call(
    own_server: tuple[RedisServer, aioredis.Redis], namespace: str
) -> None:
    server, client = own_server
    async with CacheClient(client, namespace=namespace, stale_ttl=30.0, redis_timeout=0.3) as c:
        await c.set("old", "stale", ttl=0.05)
        await wait_until(lambda: c._local.peek("old") is None, what="the value to expire")
        server.kill()
        fetch = FetchMany({"old": "refetched", "new": "fetched", "other": Entry("x", ttl=60)})
        answer = await c.get_or_init_many(["old", "new", "other", "none"], fetch)
        assert answer == {"old": "stale", "new": "fetched", "other": "x"}
        assert fetch.fetched() == [["new", "none", "other"]]
        # kept for a moment, so that a call right after fetches nothing
        assert await c.get_or_init_many(["new"], fetch) == {"new": "fetched"}
        assert len(fetch.calls) == 1


# -- bad input ---------------------------------------------------------------------------------


Call = Callable[[CacheClient], Coroutine[Any, Any, Any]]


async def _found(keys: list[str]) -> dict[str, Any]:
    return {}


BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    ("a str", lambda c: c.get_or_init_many("ab", _found), InvalidArgumentTypeError, "iterable"),
    (
        "a non-str key",
        lambda c: c.get_or_init_many(["a", 1], _found),  # type: ignore[list-item]
        InvalidArgumentTypeError,
        "must be a str",
    ),
    (
        "an empty key",
        lambda c: c.get_or_init_many(["a", ""], _found),
        InvalidArgumentError,
        "not be empty",
    ),
    (
        "not iterable",
        lambda c: c.get_or_init_many(3, _found),  # type: ignore[arg-type]
        InvalidArgumentTypeError,
        "iterable",
    ),
    (
        "fetch not callable",
        lambda c: c.get_or_init_many(["a"], {"a": 1}),  # type: ignore[arg-type]
        InvalidArgumentTypeError,
        "fetch_many must be callable",
    ),
    ("a bad ttl", lambda c: c.get_or_init_many(["a"], _found, ttl=-1), InvalidArgumentError, "ttl"),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(call, error, match, id=name) for name, call, error, match in BAD_CALLS],
)
async def test_bad_input_is_refused_before_any_io(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    call: Call,
    error: type[Exception],
    match: str,
) -> None:
    """As the many-key calls refuse theirs (the same check, with a key "a" held locally)."""
    await refused_before_any_io(make_cache, redis, namespace, call, error, match)
