"""``@cache.cached(...)`` on a real server: keys, one call per missing key across clients,
invalidation, and the errors for what it cannot key or wrap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient, InvalidArgumentError, InvalidArgumentTypeError
from redicache_async.keys import MAX_KEY_BYTES

from .conftest import MakeCache
from .helpers import wait_until

pytestmark = pytest.mark.topologies


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []


async def test_results_are_cached_per_arguments(make_cache: MakeCache) -> None:
    cache = await make_cache()
    calls = Calls()

    @cache.cached(ttl=60)
    async def report(day: str, limit: int = 10, *, region: str | None = None) -> dict[str, Any]:
        calls.seen.append((day, limit, region))
        return {"day": day, "limit": limit, "region": region}

    assert report.__name__ == "report"  # functools.wraps
    assert await report("mon") == {"day": "mon", "limit": 10, "region": None}
    assert await report("mon") == {"day": "mon", "limit": 10, "region": None}
    assert await report("mon", 5) == {"day": "mon", "limit": 5, "region": None}
    assert await report("mon", region="eu") == {"day": "mon", "limit": 10, "region": "eu"}
    assert await report("mon", region="eu") == {"day": "mon", "limit": 10, "region": "eu"}
    assert calls.seen == [("mon", 10, None), ("mon", 5, None), ("mon", 10, "eu")]
    stats = cache.stats()
    assert (stats.fetches, stats.local_hits) == (3, 2)


def test_default_keys_tell_arguments_apart() -> None:
    cache = CacheClient(aioredis.Redis(), namespace="keys")  # keys need no server

    @cache.cached()
    async def f(*args: Any, **kwargs: Any) -> int:
        return 1

    variants: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1.0,), {}),
        ((True,), {}),
        (("1",), {}),
        ((None,), {}),
        (("a, 'b'",), {}),
        (("a", "b"), {}),
        ((), {"x": 1}),
        ((), {"x": "1"}),
        ((1,), {"y": 1}),
    ]
    keys = [f.key(*args, **kwargs) for args, kwargs in variants]
    assert len(set(keys)) == len(keys)
    assert keys[0] == f"{__name__}.test_default_keys_tell_arguments_apart.<locals>.f(1,)"
    # keyword order does not matter
    assert f.key(a=1, b=2) == f.key(b=2, a=1)


def test_long_arguments_are_hashed_into_a_valid_key() -> None:
    cache = CacheClient(aioredis.Redis(), namespace="keys")

    @cache.cached()
    async def f(text: str) -> int:
        return 1

    long_a, long_b = "a" * 5000, "a" * 4999 + "b"
    assert len(f.key(long_a).encode()) <= MAX_KEY_BYTES
    assert f.key(long_a) != f.key(long_b)
    assert f.key(long_a) == f.key("a" * 5000)


async def test_one_call_for_a_missing_key_across_clients(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    calls = Calls()

    async def slow_square(n: int) -> int:
        calls.seen.append((n,))
        await asyncio.sleep(0.1)
        return n * n

    # the same function decorated on two clients (two processes, in real life)
    on_a, on_b = a.cached(ttl=60)(slow_square), b.cached(ttl=60)(slow_square)
    results = await asyncio.gather(*(f(7) for f in (on_a, on_b) for _ in range(50)))
    assert results == [49] * 100
    assert calls.seen == [(7,)]


async def test_invalidate_drops_the_entry_everywhere(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    version = {"n": 0}

    async def current(name: str) -> str:
        version["n"] += 1
        return f"{name} v{version['n']}"

    on_a, on_b = a.cached()(current), b.cached()(current)
    assert await on_a("x") == "x v1"
    assert await on_b("x") == "x v1"  # from Redis, then local
    await on_a.invalidate("x")
    await wait_until(lambda: b._local.fresh(on_b.key("x")) is None, what="b to drop its copy")
    assert await on_b("x") == "x v2"
    assert await on_a("x") == "x v2"


async def test_custom_keys_and_methods(make_cache: MakeCache, redis: aioredis.Redis) -> None:
    cache = await make_cache()

    class Repository:
        def __init__(self) -> None:
            self.loads = 0

        @cache.cached(ttl=30, key=lambda self, user_id: f"user:{user_id}")
        async def user(self, user_id: int) -> dict[str, int]:
            self.loads += 1
            return {"id": user_id}

    repo = Repository()
    assert await repo.user(3) == {"id": 3}
    assert await repo.user(3) == {"id": 3}
    assert repo.loads == 1
    assert await cache.get("user:3") == {"id": 3}
    assert 29_000 < await redis.pttl(f"{cache.namespace}:v:{{user:3}}") <= 30_000
    await Repository.user.invalidate(repo, 3)
    assert await cache.get("user:3") is None


async def test_a_none_result_is_returned_but_not_cached(make_cache: MakeCache) -> None:
    cache = await make_cache()
    calls = Calls()

    @cache.cached()
    async def find(name: str) -> str | None:
        calls.seen.append((name,))
        return None

    assert await find("nobody") is None
    assert await find("nobody") is None
    assert len(calls.seen) == 2


async def test_what_cannot_be_keyed_or_wrapped_is_refused(make_cache: MakeCache) -> None:
    cache = await make_cache()

    @cache.cached()
    async def f(value: Any) -> int:
        return 1

    for unkeyable in (object(), [1], {"a": 1}, (1, 2), b"bytes"):
        with pytest.raises(InvalidArgumentTypeError, match="pass key="):
            await f(unkeyable)
        with pytest.raises(InvalidArgumentTypeError, match="pass key="):
            await f(value=unkeyable)

    def plain() -> int:
        return 1

    with pytest.raises(InvalidArgumentTypeError, match="coroutine functions"):
        cache.cached()(plain)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="ttl"):
        cache.cached(ttl=-1)
    with pytest.raises(InvalidArgumentTypeError, match="key must be callable"):
        cache.cached(key="not callable")  # type: ignore[arg-type]

    @cache.cached(key=lambda: "")
    async def empty_key() -> int:
        return 1

    with pytest.raises(InvalidArgumentError, match="empty"):
        await empty_key()
    assert cache.stats().fetches == 0
