"""The many-key calls (issue 17): ``get_many``, ``set_many`` and ``delete_many`` answer each key
as its one-key call would, in one round trip per cluster slot of the keys (one on a single
node or behind Sentinel), with the same coherence and the issue 8 rule (no write is undone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import Redis as SyncRedis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from redicache_async import (
    CacheClient,
    Entry,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RedisUnavailableError,
    SerializationError,
)
from redicache_async.keys import KeySpace
from redicache_async.testing import ClusterServers, RedisServer
from redicache_async.value_scripts import DELETE_MANY, WRITE_MANY

from .conftest import MakeCache
from .helpers import (
    Fetch,
    GatedRedis,
    HeldFetch,
    command_calls,
    commands_processed,
    ns_keys,
    runs_script,
    script_calls,
    wait_until,
)
from .values import put_value

pytestmark = pytest.mark.topologies

LONG = {"lock_ttl": 30.0, "wait_timeout": 30.0}


def _keys_in_slots(sizes: tuple[int, ...]) -> list[list[str]]:
    """Groups of plain keys, ``sizes[i]`` keys in group i, each group in a cluster slot of its
    own (a value key's slot is its user key's: see ``keys.py``)."""
    by_slot: dict[int, list[str]] = {}
    for n in range(50_000):  # about three keys a slot
        key = f"m{n}"
        by_slot.setdefault(key_slot(key.encode()), []).append(key)
    slots = iter(by_slot.values())  # shared: each group takes slots the others did not
    return [next(keys for keys in slots if len(keys) >= size)[:size] for size in sizes]


# -- values and absences -----------------------------------------------------------------------


async def test_get_many_gives_the_present_keys_and_leaves_out_the_others(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a, b = await make_cache(), await make_cache()
    await a.set_many({"x": {"n": 1}, "y": [1, 2], "z": "text"}, ttl=60)
    await a.set("w", 4)
    space = KeySpace(namespace)
    await redis.set(space.value("foreign"), b"not this layout")
    await put_value(redis, space.value("undecodable"), b"{not json")
    wanted = ["x", "y", "absent", "z", "w", "x", "foreign", "undecodable"]
    assert await b.get_many(wanted) == {"x": {"n": 1}, "y": [1, 2], "z": "text", "w": 4}
    stats = b.stats()
    # counted as get counts them: each missing key a miss, the others where get counts them
    assert (stats.redis_hits, stats.misses, stats.foreign_values, stats.decode_errors) == (
        4,
        2,
        1,
        1,
    )
    # kept locally as get keeps them: answered again without Redis
    assert await b.get_many(iter(["z", "y"])) == {"z": "text", "y": [1, 2]}
    assert b.stats().local_hits == 2


async def test_set_many_writes_what_set_writes_and_keeps_it_locally(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a = await make_cache()
    await a.set_many({"t": "timed", "f": ["forever"]}, ttl=30)
    await a.set_many({"f": ["forever"]})
    space = KeySpace(namespace)
    assert 0 < await redis.pttl(space.value("t")) <= 30_000
    assert await redis.pttl(space.value("f")) == -1  # ttl=None: no expiry
    assert a.stats().writes == 3
    for key, value in (("t", "timed"), ("f", ["forever"])):
        entry = a._local.peek(key)
        assert entry is not None
        assert entry.value == value
    other = await make_cache()
    assert await other.get("t") == "timed"
    assert await other.get_many(["f"]) == {"f": ["forever"]}


async def test_empty_input_returns_at_once_without_io(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    await cache.set("warm", 1)  # connected, scripts loaded
    writes, total = await command_calls(redis), await commands_processed(redis)
    assert await cache.get_many([]) == {}
    assert await cache.get_many({}) == {}
    await cache.set_many({})
    await cache.delete_many(())
    assert await command_calls(redis) == writes
    assert await commands_processed(redis) == total


# -- local hits, round trips ------------------------------------------------------------------


async def test_local_hits_send_nothing_to_redis(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    a = await make_cache()
    keys = [f"k{i}" for i in range(20)]
    await a.set_many({key: i for i, key in enumerate(keys)})
    reads = await script_calls(redis)
    total = await commands_processed(redis)
    for _ in range(50):
        assert await a.get_many(keys) == {key: i for i, key in enumerate(keys)}
    assert await script_calls(redis) == reads
    assert await commands_processed(redis) == total
    assert a.stats().local_hits == 1000
    assert a.stats().redis_hits == 0
    # a mix: only the keys not held locally are read
    b = await make_cache()
    await b.get("k0")
    answer = await b.get_many(["k1", "k0", "k2"])
    assert list(answer.items()) == [("k1", 1), ("k0", 0), ("k2", 2)]  # in the order asked
    assert (b.stats().local_hits, b.stats().redis_hits) == (1, 3)  # k0 by get, k1 and k2


async def test_one_round_trip_per_slot_group(
    make_cache: MakeCache, redis: aioredis.Redis, topology: str
) -> None:
    groups = _keys_in_slots((3, 2, 2))
    keys = [key for group in groups for key in group]
    expected = len(groups) if topology == "cluster" else 1
    writer, reader = await make_cache(), await make_cache()
    await writer.set("warm", 1)  # the scripts are loaded and connections open
    await reader.get("warm")

    before = await script_calls(redis)
    await writer.set_many({key: key.upper() for key in keys}, ttl=60)
    assert await script_calls(redis) - before == expected

    before = await script_calls(redis)
    assert await reader.get_many(keys) == {key: key.upper() for key in keys}
    assert await script_calls(redis) - before == expected

    before = await script_calls(redis)
    await writer.delete_many(keys)
    assert await script_calls(redis) - before == expected
    assert await writer.get_many(keys) == {}  # the reader may not have heard of it yet

    # a slot's lone key is read as get reads it alone: one GET, no script
    scripts, gets = await script_calls(redis), await command_calls(redis, ("get",))
    assert await reader.get_many(["never-written"]) == {}
    assert await script_calls(redis) == scripts
    assert await command_calls(redis, ("get",)) - gets == 1


class NodeCalls:
    """A spy on a cluster client's node calls (they run as usual): the node of each round
    trip, a pipeline or a command sent alone."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.round_trips: list[str] = []
        pipeline, command = ClusterNode.execute_pipeline, ClusterNode.execute_command

        async def spied_pipeline(node: ClusterNode, commands: list[Any]) -> Any:
            self.round_trips.append(node.name)
            return await pipeline(node, commands)

        async def spied_command(node: ClusterNode, *args: Any, **options: Any) -> Any:
            self.round_trips.append(node.name)
            return await command(node, *args, **options)

        monkeypatch.setattr(ClusterNode, "execute_pipeline", spied_pipeline)
        monkeypatch.setattr(ClusterNode, "execute_command", spied_command)

    def at_most_one_round_trip_per_node(self) -> bool:
        seen, self.round_trips = self.round_trips, []
        return len(seen) == len(set(seen))


@pytest.mark.not_on("single", "sentinel")
async def test_on_a_cluster_each_node_s_slots_share_one_pipeline(
    make_cache: MakeCache, redis: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys rarely share a slot (a value's key is hashed whole): the calls for one node's
    slots go together, one round trip per node. A slot whose command fails there (a script
    the node lost, a key of another type) is sent again alone, as the one-key calls send it."""
    groups = _keys_in_slots((3, 2, *(1,) * 10))  # 15 slots: several per node
    keys = [key for group in groups for key in group]
    writer, reader = await make_cache(), await make_cache(local_max_entries=0)
    await writer.get("warm")  # connected
    await reader.get("warm")
    spy = NodeCalls(monkeypatch)
    values = {key: key.upper() for key in keys}
    await writer.set_many(values)
    assert spy.at_most_one_round_trip_per_node()
    assert await reader.get_many(keys) == values
    assert spy.at_most_one_round_trip_per_node()
    await writer.delete_many(keys[:10])
    assert spy.at_most_one_round_trip_per_node()
    monkeypatch.undo()

    # every EVALSHA of the pipelines fails (NOSCRIPT): each slot is sent again alone
    await redis.script_flush()
    await writer.set_many(values)
    await redis.script_flush()
    assert await reader.get_many(keys) == values
    await redis.script_flush()
    await writer.delete_many(keys[:10])
    for key in keys[:10]:
        del values[key]
    assert await reader.get_many(keys) == values
    foreign = groups[-1][0]  # alone in its slot: its GET fails (WRONGTYPE)
    value_key = KeySpace(namespace).value(foreign)
    await redis.delete(value_key)
    await redis.hset(value_key, "f", "v")
    del values[foreign]
    assert await reader.get_many(keys) == values
    assert reader.stats().foreign_values == 1


# -- coherence across clients; no write is undone ---------------------------------------------


async def test_another_client_drops_its_copies_after_set_many_and_delete_many(
    make_cache: MakeCache,
) -> None:
    a, b = await make_cache(), await make_cache()
    keys = ["p", "q", "r"]
    await a.set_many(dict.fromkeys(keys, "old"))
    assert await b.get_many(keys) == dict.fromkeys(keys, "old")  # now held locally by b

    await a.set_many(dict.fromkeys(keys, "new"))

    async def b_sees(expected: dict[str, Any]) -> bool:
        return await b.get_many(keys) == expected

    await wait_until(lambda: b_sees(dict.fromkeys(keys, "new")), what="set_many's events")
    await a.delete_many(keys)
    await wait_until(lambda: b_sees({}), what="delete_many's events")
    assert b.stats().invalidations_received >= 6


@pytest.mark.parametrize("op", ["set_many", "delete_many"])
async def test_a_fetch_that_started_before_a_many_key_change_never_stores_its_result(
    make_cache: MakeCache, op: str
) -> None:
    a, b = await make_cache(**LONG), await make_cache(**LONG)
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    if op == "set_many":
        await b.set_many({"other": 1, "p": "new"})
    else:
        await b.delete_many(["other", "p"])
    old.release.set()
    assert await loading == "old"  # its callers asked before the change
    assert a.stats().fenced_writes == 1
    expected = "new" if op == "set_many" else None
    for cache in (a, b):
        assert await cache.get("p") == expected
    fresh = Fetch("fresh")
    assert await a.get_or_init("p", fresh) == (expected or "fresh")
    assert fresh.calls == (0 if op == "set_many" else 1)


@pytest.mark.parametrize("op", ["set_many", "delete_many"])
async def test_a_many_key_change_in_the_same_process_is_not_undone_by_its_running_load(
    make_cache: MakeCache, op: str
) -> None:
    a = await make_cache(**LONG)
    lagging: list[Any] = []
    a._listener._on_event = lagging.append  # only the change itself may detach the load
    await a.set("q", "before")
    old = HeldFetch("old")
    loading = asyncio.create_task(a.get_or_init("p", old))
    await old.started.wait()
    if op == "set_many":
        await a.set_many({"p": "new", "q": "new"})
    else:
        await a.delete_many(["p", "q"])
    # The next calls neither join the load that started before the change nor see old copies
    # (after delete_many, the load finds the lock revoked and fetches afresh).
    expected = "new" if op == "set_many" else "fresh"
    assert await asyncio.wait_for(a.get_or_init("p", Fetch("fresh")), 2.0) == expected
    assert await a.get_many(["q"]) == ({"q": "new"} if op == "set_many" else {})
    old.release.set()
    assert await loading == "old"
    assert await a.get("p") == expected


@pytest.mark.single_node
@pytest.mark.parametrize("op", ["set_many", "delete_many"])
async def test_a_many_key_call_cancelled_with_its_reply_on_the_wire_keeps_no_old_copy(
    make_cache: MakeCache, redis_url: str, op: str
) -> None:
    """The script ran but its caller never learnt it: the keys' local copies, older than what
    Redis now holds, must go (as after a cancelled ``set`` or ``delete``)."""
    gated = GatedRedis.connect(redis_url)
    cache = await make_cache(gated)
    try:
        await cache.set_many({"a": "old", "b": "old"})
        lagging: list[Any] = []
        cache._listener._on_event = lagging.append  # only the call itself may drop them
        gated.hold_first(runs_script(WRITE_MANY if op == "set_many" else DELETE_MANY))
        if op == "set_many":
            call = asyncio.create_task(cache.set_many({"a": "new", "b": "new"}))
        else:
            call = asyncio.create_task(cache.delete_many(["a", "b"]))
        await gated.held.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gated.gate.set()
        expected = {"a": "new", "b": "new"} if op == "set_many" else {}
        assert await cache.get_many(["a", "b"]) == expected  # what Redis holds, not "old"
    finally:
        gated.gate.set()
        await cache.aclose()
        await gated.aclose(close_connection_pool=True)


# -- Redis unreachable ------------------------------------------------------------------------


@pytest.fixture
async def own_server() -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            yield server, client
        finally:
            await client.aclose()


@pytest.mark.slow
async def test_with_redis_dead_get_many_gives_stale_copies_and_writes_raise(
    own_server: tuple[RedisServer, aioredis.Redis], namespace: str
) -> None:
    server, client = own_server
    async with CacheClient(client, namespace=namespace, stale_ttl=30.0, redis_timeout=0.3) as c:
        await c.set_many({"old": "stale", "kept": "fresh"}, ttl=0.05)
        await c.set("kept", "fresh")  # no expiry
        await wait_until(lambda: c._local.peek("old") is None, what="the value to expire")
        server.kill()
        assert await c.get_many(["old", "kept", "never"]) == {"old": "stale", "kept": "fresh"}
        # "old" at least (and "kept" too, once the listener noticed: its copies are then
        # fallbacks, not answers)
        assert c.stats().stale_served >= 1
        with pytest.raises(RedisUnavailableError):
            await c.set_many({"a": 1})
        with pytest.raises(RedisUnavailableError):
            await c.delete_many(["kept"])
        assert c._local.peek("kept") is None  # a delete that may have happened: copy dropped


@pytest.fixture
def cluster_serving_its_own_slots() -> Iterator[ClusterServers]:
    """A cluster of its own, whose healthy masters keep serving their slots while one is
    dead (``cluster-require-full-coverage no``, as ``test_node_breakers.py`` explains)."""
    with ClusterServers(masters=3, replicas=0) as cluster:
        for node in cluster.nodes:
            client = SyncRedis(host=node.host, port=node.port, socket_timeout=5)
            try:
                client.config_set("cluster-require-full-coverage", "no")
            finally:
                client.close()
        yield cluster


@pytest.mark.slow
async def test_a_dead_cluster_master_costs_the_many_key_calls_only_its_own_keys(
    cluster_serving_its_own_slots: ClusterServers, namespace: str
) -> None:
    cluster = cluster_serving_its_own_slots
    space = KeySpace(namespace)
    victim, entry, _ = cluster.masters()
    keys = [f"k{i}" for i in range(30)]
    dead = {key for key in keys if cluster.master_for_key(space.value(key)) is victim}
    assert dead
    assert len(dead) < len(keys)
    redis: Any = RedisCluster(host=entry.host, port=entry.port)
    try:
        async with CacheClient(
            redis, namespace=namespace, local_max_entries=0, redis_timeout=1.0
        ) as cache:
            await cache.set_many({key: f"{key} v1" for key in keys})
            victim.kill()
            # the healthy masters' keys are read; the dead one's are absent (no stale copies)
            healthy = {key: f"{key} v1" for key in keys if key not in dead}
            assert await cache.get_many(keys) == healthy
            with pytest.raises(RedisUnavailableError):
                await cache.set_many({key: f"{key} v2" for key in keys})
            # ... but the healthy masters' keys were written
            assert await cache.get_many(keys) == {key: f"{key} v2" for key in healthy}
            with pytest.raises(RedisUnavailableError):
                await cache.delete_many(keys)
            assert await cache.get_many(keys) == {}
    finally:
        await redis.aclose()


# -- bad input -------------------------------------------------------------------------------

Call = Callable[[CacheClient], Awaitable[Any]]

BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    ("get_many str", lambda c: c.get_many("abc"), InvalidArgumentTypeError, "iterable"),
    ("get_many bytes", lambda c: c.get_many(b"abc"), InvalidArgumentTypeError, "iterable"),  # type: ignore[arg-type]
    ("get_many None", lambda c: c.get_many(None), InvalidArgumentTypeError, "iterable"),  # type: ignore[arg-type]
    ("get_many int key", lambda c: c.get_many(["ok", 1]), InvalidArgumentTypeError, "str"),  # type: ignore[list-item]
    ("get_many empty key", lambda c: c.get_many(["ok", ""]), InvalidArgumentError, "empty"),
    ("set_many list", lambda c: c.set_many([("k", 1)]), InvalidArgumentTypeError, "mapping"),  # type: ignore[arg-type]
    (
        "set_many None value",
        lambda c: c.set_many({"a": 1, "b": None}),
        InvalidArgumentError,
        "None",
    ),
    (
        "set_many Entry value",
        lambda c: c.set_many({"a": 1, "b": Entry(2, ttl=5)}),
        InvalidArgumentTypeError,
        "an Entry is what a fetch returns",
    ),
    ("set_many int key", lambda c: c.set_many({"a": 1, 2: 3}), InvalidArgumentTypeError, "str"),  # type: ignore[dict-item]
    ("set_many ttl", lambda c: c.set_many({"a": 1}, ttl=-1), InvalidArgumentError, "ttl"),
    ("set_many ttl type", lambda c: c.set_many({"a": 1}, ttl="1"), InvalidArgumentTypeError, "ttl"),  # type: ignore[arg-type]
    ("set_many value", lambda c: c.set_many({"a": 1, "b": object()}), SerializationError, "JSON"),
    ("delete_many str", lambda c: c.delete_many("abc"), InvalidArgumentTypeError, "iterable"),
    ("delete_many key", lambda c: c.delete_many(["a", 5]), InvalidArgumentTypeError, "str"),  # type: ignore[list-item]
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
    cache = await make_cache()
    await cache.get("warm")  # connected, scripts loaded
    cache._local.put("a", "held", version=1, size=4, expires_at=float("inf"), stale_ttl=0.0)
    writes, total = await command_calls(redis), await commands_processed(redis)
    with pytest.raises(error, match=match):
        await call(cache)
    assert await command_calls(redis) == writes
    assert await commands_processed(redis) == total
    assert await ns_keys(redis, namespace) == []
