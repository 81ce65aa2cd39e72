"""The bad-input catalogue (issue 14, section 4): each argument the library refuses is refused
with a clear error before any I/O (no command that writes or announces anything, no key, no
lock, no event), and everything works afterwards. A call fails alike whether or not the local
layer could answer it, and one caller's bad input never fails the other callers of a batch.

Each case here was tried and failed once; see the issue for what each did before."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheBuilder,
    CacheClient,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    RedicacheError,
    SerializationError,
    Target,
)
from redicache_async.validation import MAX_SECONDS

from .conftest import MakeCache
from .helpers import Fetch, command_calls, commands_processed, ns_keys, wait_until

pytestmark = pytest.mark.topologies

#: Unicode that has no UTF-8: a lone surrogate, as a bad decode upstream leaves behind
#: (``b"\xff".decode("utf-8", "surrogateescape")``).
LONE = "\udcff"

Call = Callable[[CacheClient], Awaitable[Any]]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = _nested(100_000)


async def _fetch() -> dict[str, int]:
    return {"n": 1}


async def _fetch_deep() -> list[Any]:
    return DEEP


async def _build() -> list[dict[str, str]]:
    return [{"id": "a"}]


Check = Callable[[], Awaitable[None]]


@pytest.fixture
def quiet(redis: aioredis.Redis, namespace: str) -> Callable[[], Awaitable[Check]]:
    """``check = await quiet()``, then ``await check()``: fail unless nothing was sent in
    between (but the servers' own traffic), and nothing is under the namespace."""

    async def start() -> Check:
        writes = await command_calls(redis)
        total = await commands_processed(redis)

        async def check() -> None:
            assert await commands_processed(redis) == total
            assert await command_calls(redis) == writes
            assert await ns_keys(redis, namespace) == []
            assert not await redis.exists(f"{namespace}:stream")  # no event was announced

        return check

    return start


async def _still_works(cache: CacheClient, make_cache: MakeCache) -> None:
    """A write, its event, a read elsewhere and a fetch: the client was not poisoned."""
    other = await make_cache()
    assert await other.get_or_init("after", _fetch, ttl=60) == {"n": 1}  # fetched, stored
    assert await cache.get("after") == {"n": 1}
    await cache.set("after", {"n": 2}, ttl=60)

    async def other_sees_it() -> bool:  # once the set's event dropped its local copy
        return bool(await other.get("after") == {"n": 2})

    await wait_until(other_sees_it, what="the set's event")


# -- refused before any I/O --------------------------------------------------------------------

CLIENT_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    # A ttl that Redis's PX cannot take was accepted; the write script then failed half-way.
    ("set ttl=maxsize", lambda c: c.set("k", 1, ttl=sys.maxsize), InvalidArgumentError, "at most"),
    ("set ttl=1e16", lambda c: c.set("k", 1, ttl=1e16), InvalidArgumentError, "100 years"),
    (
        "set ttl just past the bound",
        lambda c: c.set("k", 1, ttl=MAX_SECONDS + 1),
        InvalidArgumentError,
        "at most",
    ),
    ("set ttl=10**400", lambda c: c.set("k", 1, ttl=10**400), InvalidArgumentError, "bits"),
    ("set ttl=-10**400", lambda c: c.set("k", 1, ttl=-(10**400)), InvalidArgumentError, "finite"),
    (
        "get_or_init ttl=maxsize",
        lambda c: c.get_or_init("k", _fetch, ttl=sys.maxsize),
        InvalidArgumentError,
        "at most",
    ),
    (
        "attempt_regeneration ttl=maxsize",
        lambda c: c.attempt_regeneration("k", _fetch, ttl=sys.maxsize),
        InvalidArgumentError,
        "at most",
    ),
    (
        "get_or_init ttl=True",
        lambda c: c.get_or_init("k", _fetch, ttl=True),
        InvalidArgumentTypeError,
        "number of seconds",
    ),
    (
        "get_or_init eager_refresh=1.0",
        lambda c: c.get_or_init("k", _fetch, ttl=60.0, eager_refresh=1.0),
        InvalidArgumentError,
        "eager_refresh must be greater than 0 and less than 1",
    ),
    (
        "get_or_init eager_refresh=nan",
        lambda c: c.get_or_init("k", _fetch, ttl=60.0, eager_refresh=math.nan),
        InvalidArgumentError,
        "eager_refresh",
    ),
    (
        "get_or_init eager_refresh='0.5'",
        lambda c: c.get_or_init("k", _fetch, ttl=60.0, eager_refresh="0.5"),  # type: ignore[arg-type]
        InvalidArgumentTypeError,
        "eager_refresh must be a number",
    ),
    # A key without UTF-8 raised a bare UnicodeEncodeError, after joining a batch.
    ("get lone surrogate", lambda c: c.get(LONE), InvalidArgumentError, "UTF-8"),
    (
        "get_or_init lone surrogate",
        lambda c: c.get_or_init(f"k{LONE}", _fetch),
        InvalidArgumentError,
        "UTF-8",
    ),
    ("set lone surrogate", lambda c: c.set(LONE, 1), InvalidArgumentError, "UTF-8"),
    ("delete lone surrogate", lambda c: c.delete(LONE), InvalidArgumentError, "UTF-8"),
    (
        "attempt_regeneration lone surrogate",
        lambda c: c.attempt_regeneration(LONE, _fetch),
        InvalidArgumentError,
        "UTF-8",
    ),
    ("get_target lone surrogate", lambda c: c.get_target(LONE), InvalidArgumentError, "UTF-8"),
    (
        "get_target field lone surrogate",
        lambda c: c.get_target("t", LONE),
        InvalidArgumentError,
        "field cannot be encoded",
    ),
    ("get_target empty field", lambda c: c.get_target("t", ""), InvalidArgumentError, "field"),
    # A value nested too deeply raised RecursionError.
    ("set deep value", lambda c: c.set("k", DEEP), SerializationError, "nested too deeply"),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(call, error, match, id=name) for name, call, error, match in CLIENT_CALLS],
)
async def test_bad_input_is_refused_before_any_io_and_poisons_nothing(
    make_cache: MakeCache,
    quiet: Callable[[], Awaitable[Check]],
    call: Call,
    error: type[Exception],
    match: str,
) -> None:
    cache = await make_cache()
    check = await quiet()
    with pytest.raises(error, match=match) as info:
        await call(cache)
    assert isinstance(info.value, RedicacheError)
    await check()
    await _still_works(cache, make_cache)


def _hook_that_fails(value: object) -> object:
    raise KeyError("the hook's own bug")


@pytest.mark.parametrize(
    ("serializer", "value", "match"),
    [
        pytest.param(JsonSerializer(), DEEP, "nested too deeply", id="json-deep"),
        pytest.param(
            JsonSerializer(default=_hook_that_fails), {1j}, "hook's own bug", id="json-hook"
        ),
        pytest.param(MsgpackSerializer(), DEEP, "nested too deeply", id="msgpack-deep"),
        pytest.param(PickleSerializer(), DEEP, "nested too deeply", id="pickle-deep"),
    ],
)
async def test_every_encoding_failure_is_a_serialization_error(
    make_cache: MakeCache,
    quiet: Callable[[], Awaitable[Check]],
    serializer: Any,
    value: Any,
    match: str,
) -> None:
    with pytest.raises(SerializationError, match=match):
        serializer.dumps(value)
    cache = await make_cache(serializer=serializer)
    check = await quiet()
    with pytest.raises(SerializationError, match=match):
        await cache.set("k", value)
    await check()


async def test_a_fetched_value_nested_too_deeply_releases_the_lock_and_writes_nothing(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: cache.get_or_init("k", _fetch_deep),
        lambda: cache.attempt_regeneration("k", _fetch_deep),
    ]
    for call in calls:
        with pytest.raises(SerializationError, match="nested too deeply"):
            await call()
        assert await ns_keys(redis, namespace) == []  # no value, and the lock released
    await _still_works(cache, make_cache)


@pytest.mark.parametrize(
    "options",
    [
        {"lock_ttl": 1e16},
        {"lock_ttl": float(sys.maxsize)},
        {"fetch_timeout": 1e16},
        {"wait_timeout": 10**400},
        {"redis_timeout": MAX_SECONDS * 2},
        {"stale_ttl": 1e16},
    ],
    ids=lambda options: next(iter(options)),
)
def test_client_durations_beyond_the_bound_are_refused(
    redis: aioredis.Redis, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError, match="at most"):
        CacheClient(redis, **options)


async def test_the_longest_ttl_is_taken_by_redis(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set("k", 1, ttl=MAX_SECONDS)
    assert await redis.pttl(f"{namespace}:v:{{k}}") > (MAX_SECONDS - 60) * 1000
    assert await cache.get_or_init("k2", _fetch, ttl=MAX_SECONDS) == {"n": 1}
    assert await redis.pttl(f"{namespace}:v:{{k2}}") > (MAX_SECONDS - 60) * 1000


# -- the builder -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"lease_ttl": 1e16}, {"redis_timeout": 1e16}, {"fetch_timeout": float(sys.maxsize)}],
    ids=lambda options: next(iter(options)),
)
def test_builder_durations_beyond_the_bound_are_refused(
    redis: aioredis.Redis, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError, match="at most"):
        CacheBuilder(redis, **options)


async def test_builder_calls_beyond_the_bound_are_refused_before_any_io(
    redis: aioredis.Redis, namespace: str
) -> None:
    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        Target(f"t{LONE}", "list")
    target = [Target(f"{namespace}-t", "list")]
    async with CacheBuilder(redis, namespace=namespace) as builder:
        writes = await command_calls(redis)
        with pytest.raises(InvalidArgumentError, match="at most"):
            await builder.register(_build, targets=target, refresh_interval=1e16, name="a")
        assert builder.names() == []
        assert await command_calls(redis) == writes
        assert await ns_keys(redis, namespace) == []

        name = await builder.register(_build, targets=target, refresh_interval=3600, name="b")
        await builder.wait_built(name, timeout=5)
        with pytest.raises(InvalidArgumentError, match="at most"):
            await builder.update(name, refresh_interval=float(sys.maxsize))
        assert builder.status(name).refresh_interval == 3600
        with pytest.raises(InvalidArgumentError, match="at most"):
            await builder.wait_built(name, timeout=1e16)
        await builder.refresh(name)  # still builds
        assert builder.status(name).builds == 2


async def test_a_hash_id_without_utf8_fails_the_build_before_it_writes(
    redis: aioredis.Redis, namespace: str
) -> None:
    async def fetch() -> list[dict[str, str]]:
        return [{"id": "ok"}, {"id": f"bad{LONE}"}]

    target = f"{namespace}-h"
    async with CacheBuilder(redis, namespace=namespace, serializer=PickleSerializer()) as builder:
        name = await builder.register(
            fetch, targets=[Target(target, "hash", id_field="id")], refresh_interval=3600
        )
        await wait_until(lambda: builder.status(name).failures >= 1, what="the failed build")
        assert "item 1: 'id' cannot be encoded as UTF-8" in (builder.status(name).last_error or "")
        assert not await redis.exists(target)
        assert not [key async for key in redis.scan_iter(match=f"{namespace}:tmp:*")]


# -- a local hit checks its arguments as a miss does -------------------------------------------


@pytest.fixture
async def warm_and_cold(
    redis: aioredis.Redis, namespace: str, make_cache: MakeCache
) -> tuple[CacheClient, CacheClient, dict[str, str]]:
    """A client holding a value, a hash target and a string target (a dict) locally, and a
    client that holds nothing, on the same namespace and data."""

    async def items() -> list[dict[str, str]]:
        return [{"id": "a", "v": "1"}]

    async def settings() -> dict[str, str]:
        return {"a": "1"}

    targets = {"hash": f"{namespace}-hash", "string": f"{namespace}-string"}
    async with CacheBuilder(redis, namespace=namespace) as builder:
        for fetch, target in (
            (items, Target(targets["hash"], "hash", id_field="id")),
            (settings, Target(targets["string"], "string")),
        ):
            name = await builder.register(fetch, targets=[target], refresh_interval=3600)
            await builder.wait_built(name, timeout=5)
    warm, cold = await make_cache(), await make_cache()
    await warm.get_or_init("k", Fetch({"v": 1}))
    assert await warm.get_target(targets["hash"]) == {"a": {"id": "a", "v": "1"}}
    assert await warm.get_target(targets["string"]) == {"a": "1"}  # a dict, not a hash
    return warm, cold, targets


WARM_OR_COLD: list[tuple[str, Callable[[CacheClient, dict[str, str]], Awaitable[Any]]]] = [
    ("ttl=-1", lambda c, t: c.get_or_init("k", _fetch, ttl=-1)),
    ("ttl=0", lambda c, t: c.get_or_init("k", _fetch, ttl=0)),
    ("ttl below 1 ms", lambda c, t: c.get_or_init("k", _fetch, ttl=0.0005)),
    ("ttl=nan", lambda c, t: c.get_or_init("k", _fetch, ttl=math.nan)),
    ("ttl=inf", lambda c, t: c.get_or_init("k", _fetch, ttl=math.inf)),
    ("ttl=maxsize", lambda c, t: c.get_or_init("k", _fetch, ttl=sys.maxsize)),
    ("ttl=10**400", lambda c, t: c.get_or_init("k", _fetch, ttl=10**400)),
    ("ttl='60'", lambda c, t: c.get_or_init("k", _fetch, ttl="60")),  # type: ignore[arg-type]
    ("ttl=True", lambda c, t: c.get_or_init("k", _fetch, ttl=True)),
    ("fetch=None", lambda c, t: c.get_or_init("k", None)),  # type: ignore[arg-type]
    ("fetch='x'", lambda c, t: c.get_or_init("k", "x")),  # type: ignore[arg-type]
    # a tuple found the local copy of a builder target
    (
        "get_or_init tuple key",
        lambda c, t: c.get_or_init(("target", t["hash"]), _fetch),  # type: ignore[arg-type]
    ),
    ("get tuple key", lambda c, t: c.get(("target", t["hash"]))),  # type: ignore[arg-type]
    ("field=5", lambda c, t: c.get_target(t["hash"], 5)),  # type: ignore[arg-type]
    ("field=''", lambda c, t: c.get_target(t["hash"], "")),
    ("field of a string target", lambda c, t: c.get_target(t["string"], "a")),
    (
        "cached() with a key function that returns a tuple",
        lambda c, t: c.cached(key=lambda: ("target", t["hash"]))(_fetch)(),  # type: ignore[arg-type,return-value]
    ),
]


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in WARM_OR_COLD])
async def test_a_call_fails_alike_whether_or_not_it_would_hit(
    warm_and_cold: tuple[CacheClient, CacheClient, dict[str, str]],
    make_cache: MakeCache,
    call: Callable[[CacheClient, dict[str, str]], Awaitable[Any]],
) -> None:
    warm, cold, targets = warm_and_cold
    failures: list[BaseException] = []
    for cache in (cold, warm):
        with pytest.raises(RedicacheError) as info:
            await call(cache, targets)
        failures.append(info.value)
    assert [(type(e), str(e)) for e in failures[1:]] == [(type(e), str(e)) for e in failures[:1]]
    assert isinstance(failures[0], InvalidArgumentError | InvalidArgumentTypeError)
    assert warm.stats().local_hits == 0  # nothing was answered from the local layer
    await _still_works(warm, make_cache)


# -- batches -----------------------------------------------------------------------------------


async def test_a_bad_key_never_fails_the_other_callers_of_its_batch(
    make_cache: MakeCache,
) -> None:
    writer, cache = await make_cache(), await make_cache()
    await writer.set("a", 1)
    await writer.set("b", 2)
    results = await asyncio.gather(
        cache.get("first"),  # in flight alone: the others gather into one batch behind it
        cache.get("a"),
        cache.get(LONE),
        cache.get_or_init(f"x{LONE}", _fetch),
        cache.get("b"),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[1] == 1
    assert results[4] == 2
    for result in results[2:4]:
        assert isinstance(result, InvalidArgumentError)


async def test_a_value_that_breaks_its_read_fails_no_other_caller_of_its_batch(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    writer, cache = await make_cache(), await make_cache()
    await writer.set("a", 1)
    await writer.set("b", 2)
    # A key of another type (a hash, as an older release stored values): no value of ours.
    await redis.hset(f"{namespace}:v:{{odd}}", mapping={"d": b"1"})
    results = await asyncio.gather(
        cache.get("first"),  # in flight alone: the others gather into one batch behind it
        cache.get("a"),
        cache.get("odd"),
        cache.get("b"),
        return_exceptions=True,
    )
    # It reads as missing (counted), its neighbours get their values, and a get_or_init
    # fetches and replaces it.
    assert list(results) == [None, 1, None, 2]
    assert cache.stats().foreign_values == 1
    fetch = Fetch("fetched")
    assert await cache.get_or_init("odd", fetch) == "fetched"
    assert fetch.calls == 1
    assert await writer.get("odd") == "fetched"
