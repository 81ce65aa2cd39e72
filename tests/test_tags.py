"""Tags (issue 17): ``invalidate_tags(*tags)`` removes every value stored with one of them, in
Redis and in every process's local layer, in one round trip and one event whatever their
number; a fetch that started before it stores nothing that any reader takes (the issue 8
rule); values with other tags, or none, stay."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from redicache_async import (
    CacheClient,
    ClientClosedError,
    Entry,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from redicache_async.keys import KeySpace
from redicache_async.stored import unpack

from .conftest import MakeCache
from .helpers import (
    ChannelTap,
    Fetch,
    HeldFetch,
    assert_stored_nowhere,
    command_calls,
    script_calls,
    wait_until,
)
from .model_clients import ModelCluster, ModelRedis

pytestmark = pytest.mark.topologies


async def _heard(cache: CacheClient, before: int) -> None:
    await wait_until(
        lambda: cache.stats().invalidations_received > before, what="the invalidation's event"
    )


async def test_invalidate_tags_removes_the_tagged_values_for_every_client(
    make_cache: MakeCache,
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set("user:1", {"name": "Ada"}, tags=("user:1", "users"))
    await a.set("user:2", {"name": "Bob"}, tags=["user:2", "users"])
    await a.set("page", "home", tags=("pages",))
    await a.set("plain", "untagged")
    for key in ("user:1", "user:2", "page", "plain"):
        assert await b.get(key) is not None  # b holds local copies of all four

    await a.invalidate_tags("users")

    assert await a.get("user:1") is None
    assert await a.get("user:2") is None
    # Its copies go with the event. (Counting b's events would not tell when it came: on a
    # cluster, the events of a's sets, from other masters, may still be arriving after it.)
    await wait_until(
        lambda: b.local_value("user:1") is None and b.local_value("user:2") is None,
        what="b's tagged copies to go with the invalidation's event",
    )
    assert await b.get("user:1") is None  # and Redis's value is no value to it
    # Other tags, and values without tags, stay (b's copies too).
    assert b.local_value("page") == "home"
    assert b.local_value("plain") == "untagged"
    assert await a.get("page") == "home"
    fetch = Fetch({"name": "Ada again"})
    assert await b.get_or_init("user:1", fetch, tags=("users",)) == {"name": "Ada again"}
    assert fetch.calls == 1
    assert await a.get("user:1") == {"name": "Ada again"}  # written after: a value


async def test_any_one_of_a_values_tags_removes_it(make_cache: MakeCache) -> None:
    cache = await make_cache()
    await cache.set("k", "v", tags=("a", "b", "c"))
    await cache.invalidate_tags("b")
    assert await cache.get("k") is None
    await cache.set("k", "v2", tags=("a", "b", "c"))
    await cache.invalidate_tags("zzz", "unrelated")
    assert await cache.get("k") == "v2"


async def test_invalidate_tags_takes_one_round_trip_and_one_event_whatever_the_number_of_values(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    await cache.set_many({f"k{n}": n for n in range(300)}, tags=("bulk",))
    marker = await _key_beside(redis, KeySpace(namespace), KeySpace(namespace).tag_times)
    touched_commands = ("scan", "keys", "del", "unlink", "getrange", "get", "hmget", "hget")
    async with ChannelTap(redis, KeySpace(namespace).channel) as tap:
        scripts, touched = await script_calls(redis), await command_calls(redis, touched_commands)
        await cache.invalidate_tags("bulk", "other")
        # One script call, which reads the two tags' times (one HMGET); no key is scanned,
        # read or deleted.
        assert await script_calls(redis) - scripts == 1
        assert await command_calls(redis, touched_commands) - touched == 1
        await tap.until(lambda got: any(b'"op":"tags"' in e for e in got), what="the tags event")
        # An event after it from the same node (a cluster's nodes' events reach the tap in
        # their own order, each node's in the order it published them): nothing else of the
        # tags' script can come after this one.
        await cache.set(marker, 1)
        events = await tap.until(lambda got: f'"{marker}"'.encode() in got[-1], what="the marker")
    # (On a cluster the set_many's events from other nodes may arrive after it.)
    invalidations = [json.loads(e) for e in events if not e.startswith(b'{"op":"set"')]
    assert len(invalidations) == 1  # one event, not one per value
    assert (invalidations[0]["op"], json.loads(invalidations[0]["key"])) == (
        "tags",
        ["bulk", "other"],
    )
    assert await cache.get_many([f"k{n}" for n in range(300)]) == {}


async def test_a_fetch_that_started_before_invalidate_tags_stores_nothing_anyone_takes(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    held = HeldFetch({"v": "read before the invalidation"})
    loading = asyncio.create_task(a.get_or_init("k", held, tags=("t",)))
    await held.started.wait()
    heard = a.stats().invalidations_received
    await b.invalidate_tags("t")
    await _heard(a, heard)
    held.release.set()
    # Its caller asked before the invalidation: it gets what was fetched, nobody else.
    assert await loading == {"v": "read before the invalidation"}
    await assert_stored_nowhere(a, b, redis, namespace, "k", tags=("t",))


def hooked_client(topology: str, request: pytest.FixtureRequest) -> Any:
    """A client of the test's server (not behind Sentinel) whose listener can be delayed:
    ``client.hooks.listening.clear()`` holds its messages until ``.set()``."""
    if topology == "cluster":
        return ModelCluster.from_url(request.getfixturevalue("cluster_servers").url, protocol=3)
    return ModelRedis.hooked(request.getfixturevalue("redis_url"), protocol=3)


@pytest.mark.not_on("sentinel")
async def test_an_invalidation_heard_after_a_newer_write_leaves_it_to_the_next_one(
    make_cache: MakeCache, topology: str, request: pytest.FixtureRequest
) -> None:
    """An invalidation's event that arrives after a newer write of a tagged value leaves that
    copy in place, and indexed: the next invalidation of the tag drops it (found by the
    model: the late event took the key out of the tag's index)."""
    hooked = hooked_client(topology, request)
    a = await make_cache(hooked)
    try:
        heard = a.stats().invalidations_received
        hooked.hooks.listening.clear()
        await a.invalidate_tags("t")
        await a.set("k", "newer", tags=("t",))
        hooked.hooks.listening.set()
        # the invalidation's event and the set's, heard late
        await wait_until(
            lambda: a.stats().invalidations_received >= heard + 3, what="the late events"
        )
        assert a.local_value("k") == "newer"
        await a.invalidate_tags("t")
        assert a.local_value("k") is None
        assert await a.get("k") is None
    finally:
        hooked.hooks.listening.set()
        await a.aclose()
        await hooked.aclose()


async def _marker_after(redis: Any, channel: str, topology: str, key_name: str) -> None:
    """Publish ``marker`` on the node of ``key_name`` (a listener that hears it has heard
    every event that node published before it)."""
    if topology == "cluster":
        node = redis.get_node_from_key(key_name)
        await redis.execute_command("PUBLISH", channel, b"marker", target_nodes=node)
    else:
        await redis.publish(channel, b"marker")


@pytest.mark.not_on("sentinel")  # a single server's case, behind Sentinel
async def test_a_writer_that_has_not_heard_of_the_invalidation_stores_nothing_anyone_takes(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    topology: str,
    request: pytest.FixtureRequest,
) -> None:
    """The writer's listener hears nothing from before the invalidation until after its write:
    the write must find the tag's time itself, and its value is never written, so no reader
    anywhere can see it (refused by the write script where it can read the time; on a cluster
    the writer reads it before writing). It drops its own older copy at once."""
    keys = KeySpace(namespace)
    hooked = hooked_client(topology, request)
    a = await make_cache(hooked)
    try:
        b = await make_cache()
        await a.set("k", "old", tags=("t",))
        old = unpack(await redis.get(keys.value("k")) or b"")
        assert old is not None
        held = HeldFetch("read before the invalidation")
        async with ChannelTap(redis, keys.channel) as tap:
            loading = asyncio.create_task(a.attempt_regeneration("k", held, tags=("t",)))
            await held.started.wait()
            heard = a.stats().invalidations_received
            hooked.hooks.listening.clear()  # a's listener is delayed from now on
            await b.invalidate_tags("t")
            held.release.set()
            assert await loading == "read before the invalidation"
            await _marker_after(redis, keys.channel, topology, keys.value("k"))
            events = await tap.until(lambda got: b"marker" in got, what="the marker")
        # No set of k but the first (whose event, on a cluster, may reach the tap's node late).
        sets = [json.loads(e) for e in events if e.startswith(b'{"op":"set","key":"k"')]
        assert [event for event in sets if event["version"] != old.version] == []
        assert a.stats().invalidations_received == heard  # it wrote before hearing of it
        assert a.stats().fenced_writes == 1
        # Redis holds what it held: the older value, which readers skip (its tag's time).
        stored = unpack(await redis.get(keys.value("k")) or b"")
        assert stored is not None
        assert stored.payload == b'"old"'
        assert a.local_value("k") is None
        assert await b.get("k") is None
    finally:
        hooked.hooks.listening.set()
        await a.aclose()
        await hooked.aclose()


@pytest.mark.not_on("sentinel")  # a single server's case, behind Sentinel
async def test_a_batch_that_has_not_heard_of_the_invalidation_writes_none_of_its_values(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    topology: str,
    request: pytest.FixtureRequest,
) -> None:
    """``get_or_init_many``'s writes, as a lone fetch's (above): a batch whose fetch an
    invalidation overtook, and whose listener has not heard of it, writes none of its values
    (on a cluster it reads the tag times once for the batch, before its writes)."""
    keys = KeySpace(namespace)
    hooked = hooked_client(topology, request)
    a = await make_cache(hooked)
    try:
        b = await make_cache()
        release = asyncio.Event()
        started = asyncio.Event()

        async def fetch_many(wanted: list[str]) -> dict[str, Any]:
            started.set()
            await release.wait()
            return {key: f"{key} read before the invalidation" for key in wanted}

        names = ["p", "q", "r"]
        async with ChannelTap(redis, keys.channel) as tap:
            loading = asyncio.create_task(a.get_or_init_many(names, fetch_many, tags=("t",)))
            await started.wait()
            hooked.hooks.listening.clear()  # a's listener is delayed from now on
            await b.invalidate_tags("t")
            release.set()
            assert await loading == {key: f"{key} read before the invalidation" for key in names}
            for name in names:
                await _marker_after(redis, keys.channel, topology, keys.value(name))
            events = await tap.until(
                lambda got: got.count(b"marker") == len(names), what="the markers"
            )
        assert not [e for e in events if e.startswith(b'{"op":"set"')]
        assert a.stats().fenced_writes == len(names)
        assert await b.get_many(names) == {}
    finally:
        hooked.hooks.listening.set()
        await a.aclose()
        await hooked.aclose()


@pytest.mark.not_on("single", "sentinel")
async def test_an_invalidation_during_a_cluster_write_is_found_after_it(
    make_cache: MakeCache,
    redis: aioredis.Redis,
    namespace: str,
    topology: str,
    request: pytest.FixtureRequest,
) -> None:
    """On a cluster the write's script cannot read the tag times: its writer checks them
    before writing, and an invalidation that lands between that check and the write is found
    after it, and the value taken back (Redis does not keep it; readers skip it meanwhile)."""
    keys = KeySpace(namespace)
    hooked = hooked_client(topology, request)
    a = await make_cache(hooked)
    try:
        b = await make_cache()
        held = HeldFetch("read before the invalidation")
        loading = asyncio.create_task(a.get_or_init("k", held, tags=("t",)))
        await held.started.wait()
        check = hooked.hooks.hold_next_script(keys.cleared)
        held.release.set()
        await check.held.wait()  # its check before writing found nothing invalidated
        hooked.hooks.listening.clear()  # it hears of it only by reading, after the write
        await b.invalidate_tags("t")
        check.release()
        assert await loading == "read before the invalidation"
        assert a.stats().fenced_writes == 1
        assert not await redis.exists(keys.value("k"))
        assert a.local_value("k") is None
        assert await b.get("k") is None
    finally:
        hooked.hooks.disarm()
        hooked.hooks.listening.set()
        await a.aclose()
        await hooked.aclose()


async def test_a_fetchs_entry_tags_its_value_and_a_regeneration_keeps_the_rule(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()

    async def fetch_report() -> Entry[dict[str, str]]:
        return Entry({"report": "final"}, ttl=60, tags=["reports"])

    # The Entry's tags replace the call's.
    assert await a.get_or_init("report", fetch_report, tags=("ignored",)) == {"report": "final"}
    stored = unpack(await redis.get(KeySpace(namespace).value("report")) or b"")
    assert stored is not None
    assert stored.tags == ("reports",)
    await a.invalidate_tags("ignored")
    assert await b.get("report") == {"report": "final"}

    held = HeldFetch("regenerated before the invalidation")
    regenerating = asyncio.create_task(a.attempt_regeneration("report", held, tags=("reports",)))
    await held.started.wait()
    await b.invalidate_tags("reports")
    held.release.set()
    assert await regenerating == "regenerated before the invalidation"
    assert await b.get("report") is None
    assert await a.get("report") is None


async def test_the_decorator_computes_tags_from_the_arguments(make_cache: MakeCache) -> None:
    cache = await make_cache()
    calls: list[int] = []

    @cache.cached(
        ttl=60,
        key=lambda user_id: f"profile:{user_id}",
        tags=lambda user_id: [f"user:{user_id}", "users"],
    )
    async def profile(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        return {"id": user_id, "calls": len(calls)}

    assert await profile(1) == {"id": 1, "calls": 1}
    assert await profile(2) == {"id": 2, "calls": 2}
    await cache.invalidate_tags("user:1")
    assert await profile(1) == {"id": 1, "calls": 3}  # fetched again
    assert await profile(2) == {"id": 2, "calls": 2}  # untouched
    await cache.invalidate_tags("users")
    assert await profile(2) == {"id": 2, "calls": 4}

    @cache.cached(ttl=60, key=lambda: "constant", tags=("static",))
    async def constant() -> str:
        calls.append(0)
        return "c"

    assert await constant() == "c"
    await cache.invalidate_tags("static")
    assert await constant() == "c"
    assert calls.count(0) == 2


async def test_a_client_started_after_an_invalidation_does_not_read_the_values(
    make_cache: MakeCache,
) -> None:
    a = await make_cache()
    await a.set("k", "before", tags=("t",))
    await a.set_many({"m1": 1, "m2": 2}, tags=("t",))
    await a.invalidate_tags("t")
    late = await make_cache()  # it heard no event: it reads the tag's time when it meets it
    assert await late.get("k") is None
    assert await late.get_many(["m1", "m2"]) == {}
    fetch = Fetch("fetched")
    assert await late.get_or_init("k", fetch, tags=("t",)) == "fetched"
    assert fetch.calls == 1


async def test_a_value_written_after_an_invalidation_is_a_value(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    await a.invalidate_tags("t")
    await a.set("k", "after", tags=("t",))
    assert await b.get("k") == "after"
    await a.set_many({"m": "after"}, tags=("t",))
    assert await b.get_many(["m"]) == {"m": "after"}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.set("k", 1, tags=("",)), InvalidArgumentError),
        (lambda c: c.set("k", 1, tags="users"), InvalidArgumentTypeError),
        (lambda c: c.set("k", 1, tags=(1,)), InvalidArgumentTypeError),
        (lambda c: c.set_many({"k": 1}, tags=[None]), InvalidArgumentTypeError),
        (lambda c: c.get_or_init("k", Fetch(1), tags=("",)), InvalidArgumentError),
        (lambda c: c.get_or_init("k", "not callable", tags=("t",)), InvalidArgumentTypeError),
        (lambda c: c.attempt_regeneration("k", Fetch(1), tags=5), InvalidArgumentTypeError),
        (lambda c: c.get_or_init_many(["k"], Fetch({}), tags="t"), InvalidArgumentTypeError),
        (lambda c: c.invalidate_tags(""), InvalidArgumentError),
        (lambda c: c.invalidate_tags(["a"]), InvalidArgumentTypeError),
        (lambda c: c.invalidate_tags("\ud800"), InvalidArgumentError),
        (lambda c: c.set("k", 1, tags=("x" * 70_000,)), InvalidArgumentError),
    ],
)
async def test_bad_tags_are_refused_before_any_io(
    make_cache: MakeCache, redis: aioredis.Redis, call: Any, error: type[Exception]
) -> None:
    cache = await make_cache()
    before = await script_calls(redis)
    with pytest.raises(error):
        await call(cache)
    assert await script_calls(redis) == before
    with pytest.raises(InvalidArgumentError):
        Entry("v", tags=[""])
    with pytest.raises(InvalidArgumentTypeError):
        Entry("v", tags="t")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError):
        cache.cached(tags="t")


async def test_a_fetch_returning_none_with_tags_caches_nothing(make_cache: MakeCache) -> None:
    cache = await make_cache()
    fetch = Fetch(None)
    assert await cache.get_or_init("k", fetch, tags=("t",)) is None
    assert await cache.get_or_init("k", fetch, tags=("t",)) is None
    assert fetch.calls == 2


async def test_invalidate_tags_without_tags_does_nothing(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    before = await script_calls(redis)
    await cache.invalidate_tags()
    assert await script_calls(redis) == before


async def test_invalidate_tags_on_a_closed_client_raises(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = CacheClient(redis, namespace=namespace)
    async with cache:
        pass
    with pytest.raises(ClientClosedError):
        await cache.invalidate_tags("t")


async def test_a_write_after_an_invalidation_is_newer_than_it_whatever_the_clocks(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    """On a cluster the clear and tag times come from the namespace's node and a value's
    version from its own node, whose clock may lag: a write made after an invalidation the
    writer knows of is newer than it all the same (here the namespace's node runs 10 s
    ahead)."""
    keys = KeySpace(namespace)
    a, b = await make_cache(), await make_cache()
    seconds, micros = await redis.time()
    ahead = (seconds + 10) * 1_000_000 + micros
    await redis.set(keys.cleared, ahead)
    await redis.hset(keys.tag_times, "t", ahead)
    await a.clear()  # both now later than ahead
    await a.invalidate_tags("t")
    await a.set("k", "set after", tags=("t",))
    await a.set_many({"m": "set_many after"}, tags=("t",))
    assert await a.get("k") == "set after"
    assert await b.get_many(["k", "m"]) == {"k": "set after", "m": "set_many after"}


async def _key_beside(redis: aioredis.Redis, keys: KeySpace, name: str) -> str:
    """A key whose value lives on the node of ``name`` (any key, on one server)."""
    if not isinstance(redis, RedisCluster):
        return "marker"
    await redis.initialize()
    node = redis.get_node_from_key(name)
    for n in range(10_000):
        if redis.get_node_from_key(keys.value(f"marker{n}")).name == node.name:
            return f"marker{n}"
    raise AssertionError(f"no key found on the node of {name}")
