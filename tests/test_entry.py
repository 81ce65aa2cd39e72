"""``Entry``: a fetch that chooses its value's TTL (adaptive caching). The Entry's ttl is what
Redis holds and what the local copy's deadline follows; callers get the plain value; a bad
Entry fails the call like any fetch that raises, and caches nothing."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheClient,
    Entry,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    PickleSerializer,
)
from redicache_async.entry import UNSET

from .conftest import MakeCache
from .helpers import ns_keys

pytestmark = pytest.mark.topologies


class EntryFetch:
    """An async fetch that returns ``Entry(value, **options)`` and counts its calls."""

    def __init__(self, value: Any, **options: Any) -> None:
        self.value = value
        self.options = options
        self.calls = 0

    async def __call__(self) -> Entry[Any]:
        self.calls += 1
        return Entry(self.value, **self.options)


def _value_key(namespace: str, key: str) -> str:
    return f"{namespace}:v:{{{key}}}"


async def _local_ttl(cache: CacheClient, key: str) -> float:
    """Seconds until the local copy of ``key`` stops being fresh (inf: never)."""
    entry = cache._local.peek(key)
    assert entry is not None, "no fresh local copy"
    return entry.expires_at - time.monotonic()


async def test_an_entrys_ttl_is_what_redis_holds_and_the_local_copy_follows(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    fetch = EntryFetch({"report": "draft"}, ttl=30.0)
    value = await cache.get_or_init("report", fetch, ttl=86_400.0)
    assert value == {"report": "draft"}  # the plain value, not the Entry
    assert 29_000 < await redis.pttl(_value_key(namespace, "report")) <= 30_000
    assert 29.0 < await _local_ttl(cache, "report") <= 30.0
    # a local hit answers the plain value too
    assert await cache.get_or_init("report", fetch, ttl=86_400.0) == {"report": "draft"}
    assert fetch.calls == 1
    # and so does another process's Redis hit, whose copy follows the same TTL
    other = await make_cache()
    assert await other.get_or_init("report", fetch, ttl=86_400.0) == {"report": "draft"}
    assert fetch.calls == 1
    assert 28.0 < await _local_ttl(other, "report") <= 30.0


async def test_an_entry_without_ttl_keeps_the_calls_and_ttl_none_means_no_expiry(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    assert await cache.get_or_init("a", EntryFetch("x"), ttl=40.0) == "x"
    assert 39_000 < await redis.pttl(_value_key(namespace, "a")) <= 40_000
    assert await cache.get_or_init("b", EntryFetch("y", ttl=None), ttl=40.0) == "y"
    assert await redis.pttl(_value_key(namespace, "b")) == -1
    assert math.isinf(await _local_ttl(cache, "b"))


async def test_attempt_regeneration_stores_an_entry_with_its_ttl(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("final", "old", ttl=5.0)
    fetch = EntryFetch("new", ttl=86_400.0)
    assert await cache.attempt_regeneration("final", fetch, ttl=5.0) == "new"
    assert await redis.pttl(_value_key(namespace, "final")) > 86_000_000
    assert await _local_ttl(cache, "final") > 86_000
    assert await cache.get("final") == "new"


async def test_a_decorated_function_may_return_an_entry(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    calls = 0

    async def status(job: str) -> Any:
        nonlocal calls
        calls += 1
        return Entry({"job": job, "done": False}, ttl=2.0)

    decorated = cache.cached(ttl=3_600.0, key=lambda job: f"job:{job}")(status)
    assert await decorated("j1") == {"job": "j1", "done": False}
    assert await decorated("j1") == {"job": "j1", "done": False}  # a local hit
    assert calls == 1
    assert 1_000 < await redis.pttl(_value_key(namespace, "job:j1")) <= 2_000


@pytest.mark.single_node
async def test_a_bad_entry_fails_the_call_and_caches_nothing(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    with pytest.raises(InvalidArgumentError, match="ttl must be finite and greater than zero"):
        await cache.get_or_init("k", EntryFetch("v", ttl=0), ttl=10.0)
    with pytest.raises(InvalidArgumentError, match=r"Entry\(None\)"):
        await cache.get_or_init("k", EntryFetch(None), ttl=10.0)
    with pytest.raises(InvalidArgumentTypeError, match="ttl must be a number"):
        await cache.attempt_regeneration("k", EntryFetch("v", ttl="60"), ttl=10.0)
    # set() takes the value itself, whatever the serializer would make of an Entry
    pickling = await make_cache(serializer=PickleSerializer())
    with pytest.raises(InvalidArgumentTypeError, match="an Entry is what a fetch returns"):
        await pickling.set("k", Entry("v", ttl=5.0))
    # nothing written, no lock left behind: the next call fetches at once
    assert await ns_keys(redis, namespace) == []
    assert await cache.get_or_init("k", EntryFetch("good"), ttl=10.0) == "good"


def test_entry_checks_its_arguments_when_made() -> None:
    assert Entry(0).value == 0  # falsy values are values
    assert Entry("v").ttl is UNSET
    assert Entry("v", ttl=None).ttl is None
    assert Entry("v", ttl=5).ttl == 5
    assert repr(Entry("v", ttl=5)) == "Entry('v', ttl=5)"
    assert repr(Entry("v")) == "Entry('v', ttl=<unset>)"
    with pytest.raises(InvalidArgumentError):
        Entry(None)
    with pytest.raises(InvalidArgumentTypeError):
        Entry(Entry("v"))
    for bad in (-1, 0, math.nan, math.inf, 0.0001):
        with pytest.raises(InvalidArgumentError):
            Entry("v", ttl=bad)
    wrongs: tuple[Any, ...] = ("60", True, [60])
    for wrong in wrongs:
        with pytest.raises(InvalidArgumentTypeError):
            Entry("v", ttl=wrong)
    with pytest.raises(TypeError):
        Entry("v", 60)  # type: ignore[call-arg]  # ttl is keyword-only
    entry = Entry("v", ttl=5)
    with pytest.raises(AttributeError):
        entry.ttl = 10  # type: ignore[misc]  # read-only: it was checked when made
