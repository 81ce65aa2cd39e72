"""``@cache.cached(...)`` on a real server: keys that are the call and not its spelling, one
call per missing key across clients, invalidation by any spelling, methods, the refusal of
functions the default key cannot name, and the errors for what it cannot key or wrap."""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheClient,
    CacheHandle,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from redicache_async.decorator import CacheSource
from redicache_async.keys import MAX_KEY_BYTES
from redicache_async.validation import is_async_callable

from .conftest import MakeCache
from .helpers import wait_until


def _sources(client: CacheClient, handle: CacheHandle) -> tuple[CacheSource, CacheSource]:
    """Never called: mypy (the lint session) checks here that a client and a handle are what
    the decorator calls, which ``Decorates.cached`` can only cast ``self`` to."""
    return client, handle


pytestmark = pytest.mark.topologies

# The functions below are module-level on purpose: a function that reads variables of the
# function defining it is refused by the default key (see test_closures_need_a_key). They
# report what they computed through their results, and the tests count their calls with
# stats().fetches.

_UNSET = object()


async def report(day: str, region: str = "eu", limit: int = 10) -> dict[str, Any]:
    return {"day": day, "region": region, "limit": limit, "token": uuid.uuid4().hex}


async def slow_square(n: int) -> int:
    await asyncio.sleep(0.1)
    return n * n


async def since(day: str, start: object = _UNSET, limit: int | None = None) -> str:
    return day


#: Every spelling of the call report("d1"), the default region and limit spelled out or not.
SPELLINGS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("d1",), {}),
    ((), {"day": "d1"}),
    (("d1", "eu"), {}),
    (("d1", "eu", 10), {}),
    (("d1",), {"region": "eu"}),
    (("d1",), {"limit": 10, "region": "eu"}),
    ((), {"region": "eu", "day": "d1"}),
    ((), {"limit": 10, "region": "eu", "day": "d1"}),
]


def spellings(day: str, region: str, limit: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every way to write report(day, region, limit): any number of arguments by position, the
    rest by keyword in any order, each one equal to its default left out or not."""
    values = {"day": day, "region": region, "limit": limit}
    defaults = {"region": "eu", "limit": 10}
    found = []
    for by_position in range(len(values) + 1):
        names = list(values)[by_position:]
        args = tuple(values[name] for name in list(values)[:by_position])
        for count in range(len(names) + 1):
            for written in itertools.permutations(names, count):
                left_out = set(names) - set(written)
                if all(name in defaults and values[name] == defaults[name] for name in left_out):
                    found.append((args, {name: values[name] for name in written}))
    return found


def passthrough(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A decorator of the kind users stack under ``cached``: it takes any arguments."""

    @functools.wraps(function)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await function(*args, **kwargs)

    return wrapper


async def test_results_are_cached_per_call(make_cache: MakeCache) -> None:
    cache = await make_cache()
    cached_report = cache.cached(ttl=60)(report)

    assert cached_report.__name__ == "report"  # functools.wraps
    assert is_async_callable(cached_report)  # get_or_init and web frameworks await it
    first = await cached_report("mon")
    assert first == {"day": "mon", "region": "eu", "limit": 10, "token": first["token"]}
    assert await cached_report("mon") == first
    other_limit = await cached_report("mon", limit=5)
    other_region = await cached_report("mon", region="us")
    assert (other_limit["limit"], other_region["region"]) == (5, "us")
    assert len({first["token"], other_limit["token"], other_region["token"]}) == 3
    assert await cached_report("mon", limit=5) == other_limit
    stats = cache.stats()
    assert (stats.fetches, stats.local_hits) == (3, 2)


async def test_every_spelling_of_a_call_is_one_entry(make_cache: MakeCache) -> None:
    cache = await make_cache()
    cached_report = cache.cached(ttl=60)(report)

    keys = {cached_report.key(*args, **kwargs) for args, kwargs in SPELLINGS}
    assert keys == {f"{__name__}.report(day='d1', region='eu', limit=10)"}
    calls = [
        ("d1", "eu", 10),
        ("d1", "us", 10),
        ("d1", "eu", 5),
        ("eu", "d1", 10),
        ("d1", "10", 10),
    ]
    for day, region, limit in calls:
        every = spellings(day, region, limit)
        assert len(every) >= 10
        keys = {cached_report.key(*args, **kwargs) for args, kwargs in every}
        assert keys == {f"{__name__}.report(day={day!r}, region={region!r}, limit={limit!r})"}
    results = [await cached_report(*args, **kwargs) for args, kwargs in SPELLINGS]
    assert all(result == results[0] for result in results)
    assert cache.stats().fetches == 1
    # a call that differs is another entry
    assert cached_report.key("d1", "us") != cached_report.key("d1")
    assert (await cached_report("d1", region="us"))["token"] != results[0]["token"]
    assert cache.stats().fetches == 2


async def test_invalidate_takes_any_spelling(make_cache: MakeCache) -> None:
    cache = await make_cache()
    cached_report = cache.cached(ttl=60)(report)
    key = cached_report.key("d1")
    token = (await cached_report("d1"))["token"]
    fetches = 1
    for i, (args, kwargs) in enumerate(SPELLINGS):
        await cached_report.invalidate(*args, **kwargs)
        assert await cache.get(key) is None
        # another spelling computes the entry again, once; every spelling then reads it
        again, again_kwargs = SPELLINGS[(i + 1) % len(SPELLINGS)]
        new_token = (await cached_report(*again, **again_kwargs))["token"]
        assert new_token != token
        token = new_token
        fetches += 1
        for other_args, other_kwargs in SPELLINGS:
            assert (await cached_report(*other_args, **other_kwargs))["token"] == token
        assert cache.stats().fetches == fetches


def test_default_keys_tell_arguments_apart() -> None:
    cache = CacheClient(aioredis.Redis(), namespace="keys")  # keys need no server

    @cache.cached()
    async def f(*args: Any, **kwargs: Any) -> int:
        return 1

    variants: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),
        ((1,), {}),
        ((1.0,), {}),
        ((True,), {}),
        (("1",), {}),
        ((None,), {}),
        (("a, 'b'",), {}),
        (("a", "b"), {}),
        (("a, 'b'",), {"x": 1}),
        ((), {"x": 1}),
        ((), {"x": "1"}),
        ((), {"x": 1, "y": 1}),
        ((), {"x, 'y'": 1}),
        ((1,), {"y": 1}),
        (("{0}",), {"{0}": "{1!r}"}),
    ]
    keys = [f.key(*args, **kwargs) for args, kwargs in variants]
    assert len(set(keys)) == len(keys)
    name = f"{__name__}.test_default_keys_tell_arguments_apart.<locals>.f"
    assert keys[:2] == [f"{name}()", f"{name}(*args=(1,))"]
    assert (
        f.key("{0}", **{"{0}": "{1!r}"})
        == f"{name}(*args=('{{0}}',), **kwargs=[('{{0}}', '{{1!r}}')])"
    )
    # keyword order does not matter
    assert f.key(a=1, b=2) == f.key(b=2, a=1) == f"{name}(**kwargs=[('a', 1), ('b', 2)])"

    @cache.cached()
    async def g(a: int, /, b: int, *rest: int, c: int, d: int = 4, **extra: int) -> int:
        return 1

    name = f"{__name__}.test_default_keys_tell_arguments_apart.<locals>.g"
    assert g.key(1, 2, c=3) == f"{name}(a=1, b=2, c=3, d=4)"
    assert g.key(1, c=3, b=2, d=4) == g.key(1, 2, c=3)
    assert (
        g.key(1, 2, 7, 8, c=3, a=9)
        == f"{name}(a=1, b=2, *rest=(7, 8), c=3, d=4, **extra=[('a', 9)])"
    )


def test_a_default_that_is_not_a_scalar_is_keyed_as_the_default() -> None:
    cache = CacheClient(aioredis.Redis(), namespace="keys")
    cached_since = cache.cached()(since)

    assert cached_since.key("d1") == f"{__name__}.since(day='d1', start=<default>, limit=None)"
    assert cached_since.key("d1", _UNSET) == cached_since.key(day="d1", start=_UNSET)
    assert cached_since.key("d1", _UNSET) == cached_since.key("d1")
    assert cached_since.key("d1", _UNSET, None) == cached_since.key("d1")
    assert cached_since.key("d1", _UNSET, 5) == cached_since.key("d1", limit=5)
    with pytest.raises(InvalidArgumentTypeError, match=r"argument 'start'.*pass key="):
        cached_since.key("d1", object())


def test_long_arguments_are_hashed_into_a_valid_key() -> None:
    cache = CacheClient(aioredis.Redis(), namespace="keys")

    @cache.cached()
    async def f(text: str) -> int:
        return 1

    long_a, long_b = "a" * 5000, "a" * 4999 + "b"
    assert len(f.key(long_a).encode()) <= MAX_KEY_BYTES
    assert f.key(long_a) != f.key(long_b)
    assert f.key(long_a) == f.key("a" * 5000) == f.key(text="a" * 5000)


async def test_a_call_that_does_not_bind_raises_the_functions_own_error(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache()
    by_default = cache.cached()(report)
    by_key = cache.cached(key=lambda *args, **kwargs: "report:any")(report)
    await by_key("d1")  # a local copy that a wrong call must not be answered from
    before = cache.stats()

    wrong_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((), {}),
        (("d1", "eu", 10, "extra"), {}),
        (("d1",), {"nope": 1}),
        (("d1",), {"day": "d2"}),
        ((), {"region": "eu"}),
    ]
    for args, kwargs in wrong_calls:
        with pytest.raises(TypeError) as own:
            report(*args, **kwargs)  # type: ignore[unused-coroutine]
        for decorated in (by_default, by_key):
            raised: list[BaseException] = []
            for call in (decorated, decorated.invalidate):
                with pytest.raises(TypeError) as error:
                    await call(*args, **kwargs)
                raised.append(error.value)
            with pytest.raises(TypeError) as error:
                decorated.key(*args, **kwargs)
            raised.append(error.value)
            assert [(type(e), str(e)) for e in raised] == [(TypeError, str(own.value))] * 3
    after = cache.stats()
    # no lookup, no fetch, no delete: nothing reached Redis or the local layer
    assert (after.local_hits, after.misses, after.fetches, after.deletes) == (
        before.local_hits,
        before.misses,
        before.fetches,
        before.deletes,
    )

    # a wrapper that takes anything: the wrapped function's signature decides, still before I/O
    wrapped = cache.cached()(passthrough(report))
    with pytest.raises(TypeError, match=r"report.*'day'"):
        await wrapped(region="eu")
    assert cache.stats().misses == before.misses


async def test_one_call_for_a_missing_key_across_clients(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()

    # the same module-level function decorated on two clients (two processes, in real life)
    on_a, on_b = a.cached(ttl=60)(slow_square), b.cached(ttl=60)(slow_square)
    assert on_a.key(7) == on_b.key(n=7) == f"{__name__}.slow_square(n=7)"
    results = await asyncio.gather(
        *(call for f in (on_a, on_b) for call in (f(7), f(n=7)) for _ in range(25))
    )
    assert results == [49] * 100
    assert a.stats().fetches + b.stats().fetches == 1


async def test_a_nested_function_that_reads_nothing_outside_is_shared(
    make_cache: MakeCache,
) -> None:
    a, b = await make_cache(), await make_cache()

    def define() -> Callable[[str], Awaitable[str]]:
        async def stamp(day: str) -> str:
            return f"{day} {uuid.uuid4().hex}"

        return stamp

    # two function objects made by one def, as two processes would make them
    on_a, on_b = a.cached()(define()), b.cached()(define())
    assert on_a.key("d1") == on_b.key("d1")
    assert await on_a("d1") == await on_b("d1")
    assert a.stats().fetches + b.stats().fetches == 1


async def test_invalidate_drops_the_entry_everywhere(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()

    on_a, on_b = a.cached()(report), b.cached()(report)
    first = await on_a("x")
    assert await on_b("x") == first  # from Redis, then local
    await on_a.invalidate(day="x", limit=10)
    await wait_until(lambda: b._local.peek(on_b.key("x")) is None, what="b to drop its copy")
    second = await on_b("x", "eu")
    assert second["token"] != first["token"]
    assert await on_a("x") == second


async def test_methods_are_keyed_through_self(make_cache: MakeCache, redis: aioredis.Redis) -> None:
    cache = await make_cache()

    class Repository:
        def __init__(self, region: str) -> None:
            self.region = region
            self.loads = 0

        @cache.cached(ttl=30, key=lambda self, day, limit=10: f"sales:{self.region}:{day}:{limit}")
        async def sales(self, day: str, limit: int = 10) -> dict[str, Any]:
            """Sales of one region."""
            self.loads += 1
            return {"region": self.region, "day": day, "limit": limit}

    eu, us = Repository("eu"), Repository("us")
    assert eu.sales.__self__ is eu
    assert (eu.sales.__name__, eu.sales.__doc__) == ("sales", "Sales of one region.")
    assert is_async_callable(eu.sales)
    assert eu.sales.key("d1") == eu.sales.key(day="d1", limit=10) == "sales:eu:d1:10"
    assert us.sales.key("d1") == Repository.sales.key(us, "d1") == "sales:us:d1:10"

    assert await eu.sales("d1") == {"region": "eu", "day": "d1", "limit": 10}
    assert await eu.sales(day="d1") == {"region": "eu", "day": "d1", "limit": 10}
    assert await us.sales("d1") == {"region": "us", "day": "d1", "limit": 10}
    assert (eu.loads, us.loads) == (1, 1)
    assert 29_000 < await redis.pttl(f"{cache.namespace}:v:{{sales:eu:d1:10}}") <= 30_000

    await eu.sales.invalidate("d1")  # eu's entry only
    assert await cache.get("sales:eu:d1:10") is None
    assert await cache.get("sales:us:d1:10") == {"region": "us", "day": "d1", "limit": 10}
    await Repository.sales.invalidate(us, day="d1")  # through the class, self passed
    assert await cache.get("sales:us:d1:10") is None
    assert await eu.sales("d1", 10) == {"region": "eu", "day": "d1", "limit": 10}
    assert (eu.loads, us.loads) == (2, 1)

    # a call the method refuses is refused before any I/O, self bound or not
    with pytest.raises(TypeError, match="'day'"):
        await eu.sales()
    with pytest.raises(TypeError, match="'day'"):
        eu.sales.key()

    class Unkeyed:
        @cache.cached()
        async def total(self, day: str) -> int:
            return 1

    with pytest.raises(InvalidArgumentTypeError, match=r"not Unkeyed \(argument 'self'\).*key="):
        await Unkeyed().total("d1")


async def test_closures_need_a_key(make_cache: MakeCache) -> None:
    cache = await make_cache()

    def make(n: int) -> Callable[[], Awaitable[int]]:
        async def value() -> int:
            return n

        return value

    # make(1) and make(2) would share one default key, here and in every other process
    for function in (make(1), passthrough(make(2))):
        with pytest.raises(InvalidArgumentError, match="reads n from the function that defines"):
            cache.cached()(function)
    with pytest.raises(InvalidArgumentError, match=r"functools\.partial"):
        cache.cached()(functools.partial(report, "d1"))
    with pytest.raises(InvalidArgumentError, match="bound method"):
        cache.cached()(Doubler(2).double)
    assert cache.stats().fetches == 0

    # with key=, closures are keyed apart by what they hold
    one = cache.cached(key=lambda: "value:1")(make(1))
    two = cache.cached(key=lambda: "value:2")(make(2))
    assert (await one(), await two(), await one(), await two()) == (1, 2, 1, 2)
    assert cache.stats().fetches == 2

    # a wrapper's own closure (the function it wraps) is not what the key misses
    wrapped = cache.cached()(passthrough(slow_square))
    assert wrapped.key(3) == f"{__name__}.slow_square(n=3)"

    class Static:
        @staticmethod
        @cache.cached()
        async def name(day: str) -> str:
            return f"{__class__.__name__} {day}"  # type: ignore[name-defined]  # named by the qualname

    assert await Static.name("d1") == "Static d1"


class Doubler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    async def double(self, n: int) -> int:
        return n * self.factor


async def test_a_none_result_is_returned_but_not_cached(make_cache: MakeCache) -> None:
    cache = await make_cache()

    @cache.cached()
    async def find(name: str) -> str | None:
        return None

    assert await find("nobody") is None
    assert await find("nobody") is None
    assert cache.stats().fetches == 2


async def test_what_cannot_be_keyed_or_wrapped_is_refused(make_cache: MakeCache) -> None:
    cache = await make_cache()

    @cache.cached()
    async def f(value: Any) -> int:
        return 1

    for unkeyable in (object(), [1], {"a": 1}, (1, 2), b"bytes"):
        with pytest.raises(InvalidArgumentTypeError, match=r"argument 'value'.*pass key="):
            await f(unkeyable)
        with pytest.raises(InvalidArgumentTypeError, match=r"argument 'value'.*pass key="):
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
