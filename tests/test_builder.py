"""CacheBuilder in one process against a real server: DESIGN.md behaviours 6, 7 and 9, the data
formats, bad results, live changes, and every validation error. Several processes:
``test_builder_processes.py``."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from redicache_async import (
    BuildError,
    BuilderStats,
    CacheBuilder,
    CacheClient,
    ClientClosedError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RedicacheError,
    Target,
    UnknownRegistrationError,
)
from redicache_async.keys import KeySpace
from redicache_async.lease_scripts import RECORD_BUILD
from redicache_async.scripts import Scripts
from redicache_async.target_swap import Deposed, missing, swap, write
from redicache_async.targets import prepare

from .faults.proxy import FaultProxy
from .helpers import ChannelTap, GatedRedis, ns_keys, runs_script, wait_until

pytestmark = pytest.mark.topologies

MakeBuilder = Callable[..., Awaitable[CacheBuilder]]


@pytest.fixture
async def make_builder(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MakeBuilder]:
    builders: list[CacheBuilder] = []

    async def make(client: aioredis.Redis | None = None, **options: Any) -> CacheBuilder:
        options.setdefault("namespace", namespace)
        builder = CacheBuilder(client if client is not None else redis, **options)
        builders.append(builder)
        await builder.start()
        return builder

    yield make
    for builder in builders:
        await builder.aclose()


@pytest.fixture
async def reader(redis: aioredis.Redis, namespace: str) -> AsyncIterator[CacheClient]:
    async with CacheClient(redis, namespace=namespace) as cache:
        yield cache


class Source:
    """A fetch function over a list of items that the test changes between builds; counts its
    calls, how many run at once and how many were cancelled."""

    def __init__(self, items: Any = None, *, delay: float = 0.0) -> None:
        self.items = items if items is not None else _items(2)
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.cancelled = 0
        self.most_at_once = 0
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return self.items
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def _items(n: int, tag: str = "value") -> list[dict[str, Any]]:
    return [{"id": f"id{i}", "value": f"{tag}{i}", "score": i} for i in range(1, n + 1)]


def _all_targets(prefix: str) -> list[Target]:
    return [
        Target(f"{prefix}-list", "list"),
        Target(f"{prefix}-hash", "hash", id_field="id"),
        Target(f"{prefix}-set", "set"),
        Target(f"{prefix}-zset", "zset", score_field="score"),
        Target(f"{prefix}-string", "string"),
    ]


async def _built(builder: CacheBuilder, name: str, builds: int = 1) -> None:
    await wait_until(lambda: builder.status(name).builds >= builds, what=f"{builds} build(s)")


# -- data formats ------------------------------------------------------------------------------


async def test_smart_redis_readme_example_is_stored_byte_for_byte(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()

    def sample_data_fetching_fn() -> list[dict[str, str]]:
        return [{"id": "id1", "value": "value1"}, {"id": "id2", "value": "value2"}]

    name = await builder.register(
        sample_data_fetching_fn,
        targets=[
            Target(f"{namespace}-sample-key-list", "list"),
            Target(f"{namespace}-sample-key-hash", "hash", id_field="id"),
        ],
        refresh_interval=100,
        name="sampleCacheName",
    )
    assert name == "sampleCacheName"
    await _built(builder, name)
    assert await redis.lrange(f"{namespace}-sample-key-list", 0, 1) == [
        b'{"id":"id1","value":"value1"}',
        b'{"id":"id2","value":"value2"}',
    ]
    assert await redis.hgetall(f"{namespace}-sample-key-hash") == {
        b"id1": b'{"id":"id1","value":"value1"}',
        b"id2": b'{"id":"id2","value":"value2"}',
    }
    assert await redis.ttl(f"{namespace}-sample-key-list") == -1  # no expiry, as smart-redis


async def test_every_target_type_is_written_and_read_back(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, reader: CacheClient
) -> None:
    builder = await make_builder()
    items = [
        {"id": 2, "value": "b", "score": 2.5},
        {"id": 1, "value": "a", "score": -1},
        {"id": 3, "value": "ü", "score": 0},
    ]
    name = await builder.register(
        Source(items), targets=_all_targets(namespace), refresh_interval=100
    )
    await _built(builder, name)
    assert await redis.lrange(f"{namespace}-list", 0, -1) == [
        b'{"id":2,"value":"b","score":2.5}',
        b'{"id":1,"value":"a","score":-1}',
        b'{"id":3,"value":"\xc3\xbc","score":0}',
    ]
    assert sorted(await redis.hkeys(f"{namespace}-hash")) == [b"1", b"2", b"3"]
    assert await redis.scard(f"{namespace}-set") == 3
    zset = await redis.zrange(f"{namespace}-zset", 0, -1, withscores=True)
    assert [tuple(pair) for pair in zset] == [
        (b'{"id":1,"value":"a","score":-1}', -1.0),
        (b'{"id":3,"value":"\xc3\xbc","score":0}', 0.0),
        (b'{"id":2,"value":"b","score":2.5}', 2.5),
    ]
    assert await redis.get(f"{namespace}-string") == (
        b'[{"id":2,"value":"b","score":2.5},{"id":1,"value":"a","score":-1},'
        b'{"id":3,"value":"\xc3\xbc","score":0}]'
    )

    assert await reader.get_target(f"{namespace}-list") == items
    assert await reader.get_target(f"{namespace}-hash") == {str(i["id"]): i for i in items}
    assert await reader.get_target(f"{namespace}-hash", "3") == items[2]
    assert await reader.get_target(f"{namespace}-hash", "404") is None
    assert await reader.get_target(f"{namespace}-zset") == [items[1], items[2], items[0]]
    assert sorted(i["id"] for i in await reader.get_target(f"{namespace}-set")) == [1, 2, 3]
    assert await reader.get_target(f"{namespace}-string") == items
    assert await reader.get_target(f"{namespace}-missing") is None
    with pytest.raises(InvalidArgumentError, match="is a list, not a hash"):
        await reader.get_target(f"{namespace}-list", "1")


async def test_hash_with_duplicate_ids_keeps_the_last_item(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    items = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}]
    name = await builder.register(
        Source(items),
        targets=[Target(f"{namespace}-h", "hash", id_field="id"), Target(f"{namespace}-s", "set")],
        refresh_interval=100,
    )
    await _built(builder, name)
    assert await redis.hgetall(f"{namespace}-h") == {
        b"a": b'{"id":"a","v":3}',
        b"b": b'{"id":"b","v":2}',
    }
    assert await redis.scard(f"{namespace}-s") == 3


async def test_large_results_are_written_in_batches(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, reader: CacheClient
) -> None:
    builder = await make_builder()
    items = _items(25_000)
    name = await builder.register(
        Source(items),
        targets=[Target(f"{namespace}-h", "hash", id_field="id"), Target(f"{namespace}-l", "list")],
        refresh_interval=100,
    )
    await _built(builder, name)
    assert await redis.hlen(f"{namespace}-h") == 25_000
    assert await redis.llen(f"{namespace}-l") == 25_000
    assert (
        await redis.lindex(f"{namespace}-l", 24_999)
        == b'{"id":"id25000","value":"value25000","score":25000}'
    )
    assert await reader.get_target(f"{namespace}-h", "id12345") == items[12_344]


def test_keys_the_builder_writes_beside_targets_share_their_slot() -> None:
    keys = KeySpace("ns")
    for target in ["plain", "{user:1}:list", "a}b", "x{}y", "{", "é}{ü", "tagged{x}"]:
        slot = key_slot(target.encode())
        assert key_slot(keys.target_meta(target).encode()) == slot, target
        assert key_slot(keys.temporary(target, "token:0").encode()) == slot, target
    assert key_slot(keys.lease("n").encode()) == key_slot(keys.state("n").encode())


async def test_sync_fetch_runs_in_a_thread_with_args_and_kwargs(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    seen: list[Any] = []

    def fetch(count: int, *, tag: str) -> list[dict[str, Any]]:
        seen.append(threading.current_thread() is threading.main_thread())
        return _items(count, tag)

    name = await builder.register(
        fetch,
        targets=[Target(f"{namespace}-l", "list")],
        refresh_interval=100,
        args=(3,),
        kwargs={"tag": "x"},
    )
    await _built(builder, name)
    assert seen == [False]
    assert await redis.lindex(f"{namespace}-l", 2) == b'{"id":"id3","value":"x3","score":3}'


# -- schedule ----------------------------------------------------------------------------------


async def test_builds_at_once_then_every_interval_never_overlapping(
    make_builder: MakeBuilder, namespace: str
) -> None:
    builder = await make_builder()
    source = Source(delay=0.15)  # slower than the interval: builds run back to back, not twice
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=0.05
    )
    await _built(builder, name, 4)
    assert source.most_at_once == 1
    status = builder.status(name)
    assert status.is_leader
    assert status.failures == 0
    assert status.last_error is None
    assert status.epoch is not None
    assert status.last_duration is not None
    assert status.last_duration >= 0.15


async def test_refresh_rebuilds_now_and_readers_see_the_new_build(
    make_builder: MakeBuilder, namespace: str, reader: CacheClient
) -> None:
    builder = await make_builder()
    source = Source(_items(2, "old"))
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100
    )
    await _built(builder, name)
    assert await reader.get_target(f"{namespace}-l") == _items(2, "old")
    hits = reader.stats().local_hits
    assert await reader.get_target(f"{namespace}-l") == _items(2, "old")
    assert reader.stats().local_hits == hits + 1

    source.items = _items(3, "new")
    await builder.refresh(name)
    assert source.calls == 2
    await wait_until(lambda: reader.stats().invalidations_received >= 2, what="the rebuild's event")
    assert await reader.get_target(f"{namespace}-l") == _items(3, "new")


async def test_refresh_on_a_follower_asks_the_leader(
    make_builder: MakeBuilder, namespace: str
) -> None:
    leader = await make_builder()
    source = Source()
    target = [Target(f"{namespace}-l", "list")]
    name = await leader.register(source, targets=target, refresh_interval=100, name="shared")
    await _built(leader, name)
    follower = await make_builder()
    other = Source()
    await follower.register(other, targets=target, refresh_interval=100, name="shared")
    await follower.refresh(name)
    await _built(leader, name, 2)
    assert other.calls == 0
    assert not follower.status(name).is_leader


async def test_foreign_messages_on_the_builders_channel_are_ignored_and_counted(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    leader = await make_builder()
    source = Source()
    name = await leader.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100, name="n"
    )
    await _built(leader, name)
    junk = [b"not json", b"{}", b'{"op":"refresh","key":1,"origin":"x","version":0}', b"\xff"]
    for message in junk:
        await redis.publish(f"{namespace}:builders", message)
    await wait_until(lambda: leader.ignored_messages == 4, what="4 ignored")
    assert source.calls == 1
    await redis.publish(  # a well-formed request still works: the listener lives on
        f"{namespace}:builders", f'{{"op":"refresh","key":"{name}","origin":"x","version":0}}'
    )
    await _built(leader, name, 2)


async def test_a_new_leader_continues_the_schedule_instead_of_rebuilding(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    # A cluster spreads a PUBLISH to its other nodes over its bus, at times late: the next
    # builder must not hear of the real build (below, the test makes it older) from a node that
    # was slow to deliver it. Every node has delivered it once a subscriber on each has it.
    # (A cluster client knows its nodes once initialized: before, get_nodes() is empty.)
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        nodes = len(redis.get_nodes())
        assert nodes >= 3, redis.get_nodes()
    else:
        nodes = 1
    channel = KeySpace(namespace).builder_channel
    async with AsyncExitStack() as stack:
        taps = [
            await stack.enter_async_context(ChannelTap(redis, channel, node=node))
            for node in range(nodes)
        ]
        first = await make_builder()
        targets = [Target(f"{namespace}-l", "list")]
        name = await first.register(Source(), targets=targets, refresh_interval=30, name="sched")
        await _built(first, name)
        for tap in taps:
            await tap.until(lambda payloads: any(b'"built"' in p for p in payloads), what="built")
    built_at = first.status(name).last_built_at
    assert built_at is not None
    await first.aclose()
    # The last build is recorded as 20 s old, two thirds into its interval, so that resuming
    # its schedule (next build in 10 s) and starting a new one (in 30 s) differ by far more
    # than the test's own delays.
    state = KeySpace(namespace).state(name)
    recorded_ms = int(await redis.hget(state, "built_at") or 0)
    assert recorded_ms == pytest.approx(built_at * 1000, abs=500)
    await redis.hset(state, "built_at", recorded_ms - 20_000)
    built_at -= 20

    second = await make_builder()
    source = Source()
    await second.register(source, targets=targets, refresh_interval=30, name="sched")
    await wait_until(lambda: second.status(name).is_leader, what="the takeover")
    status = second.status(name)
    assert source.calls == 0  # the data is fresh: no extra build
    assert status.last_built_at == pytest.approx(built_at, abs=0.5)
    assert status.next_build_at == pytest.approx(built_at + 30, abs=0.5)  # no gap either


@pytest.mark.single_node
async def test_a_build_counts_as_done_once_its_record_is_written(
    make_builder: MakeBuilder, redis: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    """Whoever sees a build done may close the builder: by then the record the next leader's
    schedule starts from is in Redis (a close cancels whatever is still on the wire)."""
    gated = GatedRedis.connect(redis_url)
    builder = await make_builder(gated)
    try:
        gated.hold_first(runs_script(RECORD_BUILD))
        targets = [Target(f"{namespace}-l", "list")]
        name = await builder.register(Source(), targets=targets, refresh_interval=30)
        await gated.held.wait()  # swapped in, recorded, and its reply held back
        assert await redis.hget(KeySpace(namespace).state(name), "built_at") is not None
        assert builder.status(name).builds == 0
        gated.gate.set()
        await _built(builder, name)
    finally:
        gated.gate.set()
        await builder.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_a_new_leader_with_other_targets_builds_at_once(
    make_builder: MakeBuilder, namespace: str
) -> None:
    first = await make_builder()
    name = await first.register(
        Source(), targets=[Target(f"{namespace}-l", "list")], refresh_interval=30, name="moved"
    )
    await _built(first, name)
    await first.aclose()
    second = await make_builder()
    targets = [Target(f"{namespace}-l", "list"), Target(f"{namespace}-h", "hash", id_field="id")]
    await second.register(Source(), targets=targets, refresh_interval=30, name="moved")
    await _built(second, name)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "message"),
    [
        pytest.param(None, "returned None", id="none"),
        pytest.param({"id": "x"}, "need a list of items, got dict", id="mapping"),
        pytest.param("text", "need a list of items, got str", id="string"),
        pytest.param(42, "need a list of items, got int", id="number"),
        pytest.param([{"id": "a", "score": 1}, "b"], "item 1 is a str, not a mapping", id="item"),
        pytest.param([{"score": 1}], "item 0 has no 'id' field", id="no-id"),
        pytest.param([{"id": None, "score": 1}], "'id' must be a str or a number", id="null-id"),
        pytest.param([{"id": "a", "score": "high"}], "'score' is not a number", id="score"),
        pytest.param([{"id": "a", "score": float("nan")}], "not JSON compliant", id="nan"),
        pytest.param(
            [{"id": "a", "score": 1, "v": {1, 2}}], "item 0 cannot be serialized", id="set"
        ),
    ],
)
async def test_a_result_that_does_not_fit_keeps_the_old_data(
    make_builder: MakeBuilder,
    redis: aioredis.Redis,
    namespace: str,
    result: Any,
    message: str,
) -> None:
    builder = await make_builder()
    source = Source([{"id": "a", "score": 1}])
    targets = [
        Target(f"{namespace}-l", "list"),
        Target(f"{namespace}-h", "hash", id_field="id"),
        Target(f"{namespace}-z", "zset", score_field="score"),
    ]
    name = await builder.register(source, targets=targets, refresh_interval=100)
    await _built(builder, name)
    before = {t.key: await redis.dump(t.key) for t in targets}

    source.items = result
    with pytest.raises(BuildError, match=message) as caught:
        await builder.refresh(name)
    assert caught.value.__cause__ is not None
    assert {t.key: await redis.dump(t.key) for t in targets} == before
    status = builder.status(name)
    assert status.failures == 1
    assert status.last_error is not None
    assert message in status.last_error
    assert not [k for k in await ns_keys(redis, namespace) if b":tmp:" in k]
    state = await redis.hgetall(KeySpace(namespace).state(name))
    recorded = state[b"last_error"]
    assert isinstance(recorded, bytes)
    assert message in recorded.decode()

    source.items = [{"id": "b", "score": 2}]  # the loop goes on: the next build works
    await builder.refresh(name)
    assert await redis.lrange(f"{namespace}-l", 0, -1) == [b'{"id":"b","score":2}']
    assert builder.status(name).last_error is None


async def test_a_fetch_that_raises_keeps_the_old_data_and_is_retried(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    source = Source()
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=0.2
    )
    await _built(builder, name)
    before = await redis.lrange(f"{namespace}-l", 0, -1)
    source.error = ConnectionRefusedError("the report database is down")
    await wait_until(lambda: builder.status(name).failures >= 2, what="two failed builds")
    status = builder.status(name)
    assert status.last_error == "ConnectionRefusedError: the report database is down"
    assert await redis.lrange(f"{namespace}-l", 0, -1) == before
    source.error = None
    source.items = _items(1, "back")
    await wait_until(lambda: builder.status(name).last_error is None, what="a good build")
    assert await redis.lrange(f"{namespace}-l", 0, -1) == [
        b'{"id":"id1","value":"back1","score":1}'
    ]


async def test_a_hung_fetch_is_bounded_by_fetch_timeout(
    make_builder: MakeBuilder, namespace: str
) -> None:
    builder = await make_builder(fetch_timeout=0.1)
    source = Source()
    source.gate = asyncio.Event()  # never set
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100
    )
    await wait_until(lambda: builder.status(name).failures >= 1, what="the timeout")
    assert builder.status(name).last_error == (
        f"FetchTimeout: fetch for {name!r} did not finish within 0.1 s"
    )


async def test_an_empty_result_empties_the_targets_unless_refused(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, reader: CacheClient
) -> None:
    builder = await make_builder()
    source = Source()
    name = await builder.register(source, targets=_all_targets(namespace), refresh_interval=100)
    await _built(builder, name)
    source.items = []
    await builder.refresh(name)
    for kind in ("list", "hash", "set", "zset"):
        assert not await redis.exists(f"{namespace}-{kind}")
    assert await redis.get(f"{namespace}-string") == b"[]"
    assert await reader.get_target(f"{namespace}-list") == []
    assert await reader.get_target(f"{namespace}-hash") == {}
    assert await reader.get_target(f"{namespace}-hash", "id1") is None
    assert await reader.get_target(f"{namespace}-zset") == []

    source.items = _items(1)
    await builder.refresh(name)
    await builder.update(name, allow_empty=False)
    source.items = []
    with pytest.raises(BuildError, match="empty and allow_empty is False"):
        await builder.refresh(name)
    assert await redis.llen(f"{namespace}-list") == 1


class _Lengthless:
    """Items that can be iterated over again but tell no length (not a Sized)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


@pytest.mark.parametrize(
    "empty",
    [
        pytest.param(lambda: (item for item in _items(0)), id="generator"),
        pytest.param(lambda: iter([]), id="iterator"),
        pytest.param(lambda: map(dict, []), id="map"),
        pytest.param(lambda: _Lengthless([]), id="lengthless"),
        pytest.param(lambda: (), id="tuple"),
    ],
)
async def test_allow_empty_false_refuses_an_empty_result_of_any_kind(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, empty: Callable[[], Any]
) -> None:
    builder = await make_builder()
    source = Source()
    targets = [Target(f"{namespace}-l", "list"), Target(f"{namespace}-h", "hash", id_field="id")]
    name = await builder.register(source, targets=targets, refresh_interval=3600, allow_empty=False)
    await _built(builder, name)
    source.items = empty()
    with pytest.raises(BuildError, match="empty and allow_empty is False"):
        await builder.refresh(name)
    assert await redis.llen(f"{namespace}-l") == 2  # the old data stays
    assert await redis.hlen(f"{namespace}-h") == 2
    # A generator with items is read once, for every target.
    source.items = (item for item in _items(3))
    await builder.refresh(name)
    assert await redis.llen(f"{namespace}-l") == 3
    assert await redis.hlen(f"{namespace}-h") == 3


@pytest.mark.parametrize("empty", ["", [], {}])
async def test_allow_empty_false_refuses_an_empty_result_for_a_string_target(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, empty: Any
) -> None:
    builder = await make_builder()
    source = Source()
    name = await builder.register(
        source, targets=[Target(f"{namespace}-s", "string")], refresh_interval=3600
    )
    await _built(builder, name)
    await builder.update(name, allow_empty=False)
    source.items = empty
    with pytest.raises(BuildError, match="empty and allow_empty is False"):
        await builder.refresh(name)
    stored = await redis.get(f"{namespace}-s")
    assert stored is not None
    assert json.loads(stored) == _items(2)


# -- targets lost behind the builder's back ----------------------------------------------------


async def test_what_counts_as_a_lost_target(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    keys = KeySpace(namespace)
    kinds = ("list", "hash", "set", "zset", "string")
    targets = _all_targets(namespace)
    builder = await make_builder()
    source = Source()
    name = await builder.register(source, targets=targets, refresh_interval=3600)
    await _built(builder, name)
    assert await missing(redis, keys, targets, timeout=1.0) == []

    await redis.delete(f"{namespace}-list")  # deleted by hand, or evicted
    await redis.delete(f"{namespace}-hash")
    await redis.set(f"{namespace}-set", "overwritten")  # another type
    assert await missing(redis, keys, targets, timeout=1.0) == [
        f"{namespace}-{kind}" for kind in ("list", "hash", "set")
    ]
    never_built = [Target(f"{namespace}-new", "list")]
    assert await missing(redis, keys, never_built, timeout=1.0) == [f"{namespace}-new"]

    source.items = []  # an empty build deletes its collections: that is its data, not a loss
    await builder.refresh(name)
    assert [await redis.exists(f"{namespace}-{kind}") for kind in kinds] == [0, 0, 0, 0, 1]
    assert await missing(redis, keys, targets, timeout=1.0) == []


async def test_a_lost_target_is_rebuilt_at_once_when_a_leader_takes_over(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    first, second = await make_builder(), await make_builder()
    sources = Source(), Source()
    targets = [Target(f"{namespace}-l", "list"), Target(f"{namespace}-h", "hash", id_field="id")]
    await first.register(sources[0], targets=targets, refresh_interval=3600, name="lost")
    await _built(first, "lost")
    await second.register(sources[1], targets=targets, refresh_interval=3600, name="lost")
    # a follower that found the targets intact, and was refused the lease
    await wait_until(lambda: second.status("lost").last_built_at is not None, what="a campaign")
    assert not second.status("lost").is_leader

    await redis.delete(f"{namespace}-h")  # evicted, or deleted by hand
    await first.aclose()  # a graceful handover: the schedule would wait an hour
    await _built(second, "lost")
    assert await redis.hlen(f"{namespace}-h") == 2
    assert (sources[0].calls, sources[1].calls) == (1, 1)


async def test_a_lost_target_is_rebuilt_at_once_when_registered_again(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    source = Source()
    targets = [Target(f"{namespace}-l", "list")]
    name = await builder.register(source, targets=targets, refresh_interval=3600)
    await _built(builder, name)
    await builder.unregister(name)
    await redis.delete(f"{namespace}-l")
    await builder.register(source, targets=targets, refresh_interval=3600, name=name)
    await _built(builder, name)
    assert source.calls == 2
    assert await redis.llen(f"{namespace}-l") == 2


async def test_a_follower_registering_asks_the_leader_to_rebuild_a_lost_target(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    leader, follower = await make_builder(), await make_builder()
    sources = Source(), Source()
    targets = [Target(f"{namespace}-l", "list")]
    await leader.register(sources[0], targets=targets, refresh_interval=3600, name="ask")
    await _built(leader, "ask")
    await redis.delete(f"{namespace}-l")
    await follower.register(sources[1], targets=targets, refresh_interval=3600, name="ask")
    await _built(leader, "ask", 2)
    assert await redis.llen(f"{namespace}-l") == 2
    assert sources[1].calls == 0
    assert not follower.status("ask").is_leader


# -- readers never see a gap -------------------------------------------------------------------


async def test_readers_never_see_a_missing_or_partial_target_during_rebuilds(
    make_builder: MakeBuilder, make_redis: Callable[..., aioredis.Redis], namespace: str
) -> None:
    builder = await make_builder()
    source = Source(_items(3000))
    # One hash tag: on a cluster too, both targets are swapped in one step and read in one.
    listed, hashed = f"{{{namespace}}}-l", f"{{{namespace}}}-h"
    name = await builder.register(
        source,
        targets=[Target(listed, "list"), Target(hashed, "hash", id_field="id")],
        refresh_interval=0.01,
    )
    await _built(builder, name)
    watcher = make_redis()
    sizes: set[tuple[Any, ...]] = set()
    reads = 0
    # Reads go on through at least 8 rebuilds, and at least 50 of them (a loaded machine may
    # rebuild faster than it reads).
    while builder.status(name).builds < 8 or reads < 50:
        async with watcher.pipeline(transaction=True) as pipe:
            pipe.llen(listed)
            pipe.hlen(hashed)
            sizes.add(tuple(await pipe.execute()))
        reads += 1
    assert sizes == {(3000, 3000)}


# -- live changes ------------------------------------------------------------------------------


async def test_update_changes_interval_fetch_and_targets_live(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    source = Source(_items(1, "a"))
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100
    )
    await _built(builder, name)

    await builder.update(name, refresh_interval=0.05)  # rescheduled from the last build's start
    await _built(builder, name, 3)
    assert builder.status(name).refresh_interval == 0.05
    await builder.update(name, refresh_interval=100)

    builds = builder.status(name).builds
    other = Source(_items(2, "b"))
    await builder.update(
        name, fetch=other, targets=[Target(f"{namespace}-h", "hash", id_field="id")]
    )
    await _built(builder, name, builds + 1)
    assert other.calls == 1
    assert await redis.hlen(f"{namespace}-h") == 2
    assert await redis.llen(f"{namespace}-l") >= 1  # a target left out keeps its data
    assert builder.status(name).targets == (f"{namespace}-h",)


async def test_unregister_stops_the_loop_releases_the_lease_and_keeps_the_data(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    source = Source()
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=0.05
    )
    await _built(builder, name, 2)
    await builder.unregister(name)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == f"redicache-builder:{name}"]
    assert not await redis.exists(KeySpace(namespace).lease(name))
    assert await redis.llen(f"{namespace}-l") == 2
    assert builder.names() == []
    with pytest.raises(UnknownRegistrationError):
        builder.status(name)
    with pytest.raises(UnknownRegistrationError):
        await builder.unregister(name)


# -- leadership --------------------------------------------------------------------------------


async def test_one_leader_per_name_and_a_closed_leader_is_replaced_at_once(
    make_builder: MakeBuilder, namespace: str
) -> None:
    first, second = await make_builder(), await make_builder()
    sources = Source(), Source()
    targets = [Target(f"{namespace}-l", "list")]
    for builder, source in zip((first, second), sources, strict=True):
        await builder.register(source, targets=targets, refresh_interval=100, name="one")
    await wait_until(lambda: first.status("one").is_leader or second.status("one").is_leader)
    leader, follower = (first, second) if first.status("one").is_leader else (second, first)
    assert not follower.status("one").is_leader
    await _built(leader, "one")

    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    await leader.aclose()
    await wait_until(lambda: follower.status("one").is_leader, timeout=1.0, what="the takeover")
    assert loop.time() - closed_at < 0.5  # announced: no wait for the 10 s lease to expire
    assert sum(source.calls for source in sources) == 1  # the data was fresh: no extra build


async def test_registrations_spread_across_instances(
    make_builder: MakeBuilder, namespace: str
) -> None:
    """Both instances register both names, as every instance of an application does; each
    name has its own leader, so one instance need not build them all."""
    first, second = await make_builder(), await make_builder()

    async def register(builder: CacheBuilder, name: str) -> None:
        target = Target(f"{namespace}-{name}", "list")
        await builder.register(Source(), targets=[target], refresh_interval=100, name=name)

    await register(first, "a")
    await _built(first, "a")
    await register(second, "b")
    await _built(second, "b")
    await register(first, "b")
    await register(second, "a")
    # A follower learns of the leader's build from its first refused campaign.
    await first.wait_built("b", timeout=5)
    await second.wait_built("a", timeout=5)
    assert first.status("a").is_leader
    assert second.status("b").is_leader
    assert not first.status("b").is_leader
    assert not second.status("a").is_leader
    assert (first.stats().leading, second.stats().leading) == (1, 1)


async def test_a_deposed_leader_cannot_overwrite_its_successor(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    await _deposed_leader_finishes_a_build(make_builder, redis, namespace, successor_built=True)


@pytest.mark.single_node
async def test_a_deposed_leader_cannot_swap_even_before_its_successor_builds(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    """The targets still carry the deposed leader's own epoch, so only the lease token, checked
    in the swap where the lease shares the node, refuses it."""
    await _deposed_leader_finishes_a_build(make_builder, redis, namespace, successor_built=False)


async def _deposed_leader_finishes_a_build(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str, *, successor_built: bool
) -> None:
    keys = KeySpace(namespace)
    old = await make_builder(lease_ttl=6.0)  # renewed every 2 s: not during this test
    slow = Source(_items(1, "old"))
    target = f"{namespace}-l"
    await old.register(slow, targets=[Target(target, "list")], refresh_interval=100, name="fenced")
    await _built(old, "fenced")
    first_build = await redis.lrange(target, 0, -1)
    slow.items = _items(1, "deposed")
    slow.gate = asyncio.Event()
    refresh = asyncio.ensure_future(old.refresh("fenced"))
    await wait_until(lambda: slow.running == 1, what="the old leader's fetch")

    # The old leader's lease vanishes (as if it had been frozen past its expiry).
    await redis.delete(keys.lease("fenced"))
    new = await make_builder(lease_ttl=6.0)
    await new.register(
        Source(_items(1, "new")),
        targets=[Target(target, "list")],
        refresh_interval=100,
        name="fenced",
    )
    await wait_until(lambda: new.status("fenced").is_leader, what="the new leader")
    if successor_built:
        await new.refresh("fenced")

    slow.gate.set()
    with pytest.raises(BuildError, match="stopped leading"):
        await refresh
    if successor_built:
        assert await redis.lrange(target, 0, -1) == [b'{"id":"id1","value":"new1","score":1}']
    else:
        assert await redis.lrange(target, 0, -1) == first_build
    assert not old.status("fenced").is_leader
    # Stepping down, the old leader released nothing of its successor's (compare-and-delete).
    assert new.status("fenced").is_leader
    assert await redis.get(keys.lease("fenced")) is not None
    assert not [k for k in await ns_keys(redis, namespace) if b":tmp:" in k]


async def test_the_swap_refuses_an_epoch_older_than_the_targets(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Where the lease cannot be checked (a cluster), the epochs beside the targets fence."""
    keys, scripts = KeySpace(namespace), Scripts(redis)
    target = Target(f"{namespace}-l", "list")

    async def build(epoch: str, tag: str) -> None:
        temporary = keys.temporary(target.key, f"{tag}:0")
        prepared = await prepare([target], _items(1, tag), lambda v: repr(v).encode())
        writes = [(temporary, prepared[0])]
        await write(redis, writes, timeout=1.0)
        await swap(
            redis,
            scripts,
            keys,
            writes,
            name="n",
            origin="o",
            token="",  # no lease check: the epoch alone fences
            lease_key=keys.lease("n"),
            epoch=epoch,
            timeout=1.0,
        )

    await build("200", "newer")
    with pytest.raises(Deposed, match="a newer leader"):
        await build("100", "older")
    assert await redis.lrange(target.key, 0, -1) == [repr(_items(1, "newer")[0]).encode()]
    await build("200", "same")  # the same term builds again
    assert await redis.hget(keys.target_meta(target.key), "epoch") == b"200"


async def test_an_incomplete_copy_is_never_swapped_in(
    redis: aioredis.Redis, namespace: str
) -> None:
    """A temporary copy that lacks part of the build (a batch that never landed, a copy that
    expired before its swap) is refused by the swap, and the target keeps its data."""
    keys, scripts = KeySpace(namespace), Scripts(redis)
    target = Target(f"{namespace}-l", "list")

    async def build(tag: str, *, lose: int = 0) -> None:
        temporary = keys.temporary(target.key, f"{tag}:0")
        prepared = await prepare([target], _items(3, tag), lambda v: json.dumps(v).encode())
        writes = [(temporary, prepared[0])]
        await write(redis, writes, timeout=1.0)
        if lose:
            await redis.rpop(temporary, lose)
        await swap(
            redis,
            scripts,
            keys,
            writes,
            name="n",
            origin="o",
            token="",
            lease_key=keys.lease("n"),
            epoch="1",
            timeout=1.0,
        )

    await build("complete")
    with pytest.raises(RedicacheError, match="incomplete"):
        await build("partial", lose=1)
    assert [json.loads(item) for item in await redis.lrange(target.key, 0, -1)] == _items(
        3, "complete"
    )


async def test_a_crashed_leaders_lease_is_taken_as_soon_as_it_expires(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    """A crashed leader announces nothing: its lease just expires. A follower asks again just
    after that expiry (it read the lease's PTTL), not a whole lease of its own later."""
    await redis.set(KeySpace(namespace).lease("crashed"), "a-dead-leader", px=300)
    builder = await make_builder(lease_ttl=10.0)
    source = Source()
    name = await builder.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100, name="crashed"
    )
    await _built(builder, name)  # within 5 s, not 10
    assert builder.status(name).is_leader
    assert source.calls == 1


@pytest.mark.single_node
async def test_a_failed_renewal_stops_the_build_at_once(
    make_builder: MakeBuilder,
    make_redis: Callable[..., aioredis.Redis],
    redis: aioredis.Redis,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One renewal fails (the server refuses it) while the lease has most of its time left and
    the next renewal would succeed: the leader steps down at once all the same, cancelling its
    build, because it cannot confirm that it still leads. It then campaigns again."""
    user = f"builder-{namespace}"

    async def acl(*commands: str) -> None:
        await redis.acl_setuser(user, enabled=True, commands=commands)

    await redis.acl_setuser(
        user, enabled=True, passwords="+pw", keys=["*"], channels=["*"], categories=["+@all"]
    )
    try:
        client = make_redis(username=user, password="pw")
        builder = await make_builder(client, lease_ttl=1.5)  # renewed every 0.5 s
        source = Source()
        source.gate = asyncio.Event()
        name = await builder.register(
            source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100
        )
        await wait_until(lambda: source.running == 1, what="the first build's fetch")
        await acl("-evalsha")  # the scripts: renewals among them
        await wait_until(lambda: "renewing" in caplog.text, what="a refused renewal")
        await acl("+evalsha")
        await wait_until(lambda: builder.stats().terms == 2, what="a new term")
        assert source.cancelled == 1  # the first term's build never finished
        source.gate.set()
        await _built(builder, name)
        status = builder.status(name)
        assert (source.calls, status.builds, status.is_leader) == (2, 1, True)
    finally:
        await redis.acl_deluser(user)


async def test_close_releases_every_lease_and_leaves_nothing_running(
    make_builder: MakeBuilder, redis: aioredis.Redis, namespace: str
) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    builder = await make_builder()
    for n in range(3):
        await builder.register(
            Source(), targets=[Target(f"{namespace}-{n}", "list")], refresh_interval=0.05
        )
    for name in builder.names():
        await _built(builder, name)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # none installed
    await builder.aclose()
    await builder.aclose()  # idempotent
    assert not [k for k in await ns_keys(redis, namespace) if k.endswith(b":lease")]
    with pytest.raises(ClientClosedError):
        await builder.register(
            Source(), targets=[Target(f"{namespace}-x", "list")], refresh_interval=1
        )
    # the autouse fixture fails the test if a refresh loop or the listener still runs


@pytest.mark.single_node
async def test_close_during_a_build_removes_its_temporary_keys(
    make_builder: MakeBuilder, redis: aioredis.Redis, redis_url: str, namespace: str
) -> None:
    # Through a proxy that adds 20 ms to every round trip, the build's 50 write batches take a
    # second or more, so that it is surely still writing when the test closes the builder.
    port = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with FaultProxy("127.0.0.1", port) as proxy:
        slow = aioredis.Redis.from_url(proxy.url)
        try:
            await _close_during_a_build(make_builder, slow, proxy, redis, namespace)
        finally:
            await slow.aclose()


async def _close_during_a_build(
    make_builder: MakeBuilder,
    slow: aioredis.Redis,
    proxy: FaultProxy,
    redis: aioredis.Redis,
    namespace: str,
) -> None:
    builder = await make_builder(slow)
    proxy.set_latency(0.01)
    items = _items(50_000)

    class SlowToWrite:
        calls = 0

        async def __call__(self) -> list[dict[str, Any]]:
            self.calls += 1
            return items

    name = await builder.register(
        SlowToWrite(),
        targets=[Target(f"{namespace}-h", "hash", id_field="id")],
        refresh_interval=100,
    )
    await wait_until(
        lambda: _has_temporary(redis, namespace), timeout=10, what="the build to start writing"
    )
    assert builder.status(name).builds == 0  # closed mid-build, not after it
    await builder.aclose()
    # A batch still on the wire may land after the clean-up; it expires like every batch.
    for key in [k for k in await ns_keys(redis, namespace) if b":tmp:" in k]:
        assert 0 < await redis.pttl(key) <= 60_000
    assert not await redis.exists(KeySpace(namespace).lease(name))


async def _has_temporary(redis: aioredis.Redis, namespace: str) -> bool:
    return any(b":tmp:" in k for k in await ns_keys(redis, namespace))


# -- validation --------------------------------------------------------------------------------


async def _fetch() -> list[Any]:
    return []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fetch": 42}, InvalidArgumentTypeError, "fetch must be callable"),
        ({"targets": []}, InvalidArgumentError, "targets must not be empty"),
        ({"targets": Target("k", "list")}, InvalidArgumentTypeError, "list of Target"),
        ({"targets": ["k"]}, InvalidArgumentTypeError, "must hold Target objects"),
        (
            {"targets": [Target("k", "list"), Target("k", "set")]},
            InvalidArgumentError,
            "listed twice",
        ),
        ({"refresh_interval": 0}, InvalidArgumentError, "refresh_interval must be finite"),
        ({"refresh_interval": -1}, InvalidArgumentError, "refresh_interval must be finite"),
        ({"refresh_interval": float("nan")}, InvalidArgumentError, "refresh_interval"),
        ({"refresh_interval": "10"}, InvalidArgumentTypeError, "refresh_interval"),
        ({"name": "bad name"}, InvalidArgumentError, "letters, digits"),
        ({"name": "a{b}"}, InvalidArgumentError, "letters, digits"),
        ({"name": ""}, InvalidArgumentError, "letters, digits"),
        ({"name": 7}, InvalidArgumentTypeError, "name must be a str"),
        ({"args": "ab"}, InvalidArgumentTypeError, "args must be a tuple"),
        ({"kwargs": [1]}, InvalidArgumentTypeError, "kwargs must be a mapping"),
        ({"kwargs": {1: 2}}, InvalidArgumentTypeError, "kwargs keys"),
        ({"allow_empty": 1}, InvalidArgumentTypeError, "allow_empty must be a bool"),
    ],
)
async def test_register_rejects_bad_arguments_before_doing_anything(
    make_builder: MakeBuilder,
    redis: aioredis.Redis,
    namespace: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    builder = await make_builder()
    arguments: dict[str, Any] = {
        "fetch": _fetch,
        "targets": [Target(f"{namespace}-k", "list")],
        "refresh_interval": 1.0,
        **kwargs,
    }
    fetch = arguments.pop("fetch")
    with pytest.raises(error, match=message):
        await builder.register(fetch, **arguments)
    assert builder.names() == []
    assert await ns_keys(redis, namespace) == []


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("k", "json"), InvalidArgumentError, "type must be one of string, list, hash"),
        (("k", "hash"), InvalidArgumentError, "hash target 'k' needs id_field"),
        (("k", "zset"), InvalidArgumentError, "zset target 'k' needs score_field"),
        (("k", "list", "id"), InvalidArgumentError, "id_field does not apply to list"),
        (("k", "hash", "id", "s"), InvalidArgumentError, "score_field does not apply to hash"),
        (("k", "hash", 5), InvalidArgumentTypeError, "id_field must be a str"),
        (("k", "hash", ""), InvalidArgumentError, "id_field must not be empty"),
        (("", "list"), InvalidArgumentError, "key must not be empty"),
        ((b"k", "list"), InvalidArgumentTypeError, "key must be a str"),
    ],
)
def test_target_rejects_bad_arguments(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Target(*args)


async def test_names_and_targets_are_unique_per_builder(
    make_builder: MakeBuilder, namespace: str
) -> None:
    builder = await make_builder()
    target = Target(f"{namespace}-k", "list")
    name = await builder.register(_fetch, targets=[target], refresh_interval=100)
    assert name.startswith("targets-")
    with pytest.raises(InvalidArgumentError, match="already exists"):
        await builder.register(_fetch, targets=[target], refresh_interval=100)
    with pytest.raises(InvalidArgumentError, match="already built by registration"):
        await builder.register(_fetch, targets=[target], refresh_interval=100, name="other")
    second = await builder.register(
        _fetch, targets=[Target(f"{namespace}-k2", "list")], refresh_interval=100, name="two"
    )
    with pytest.raises(InvalidArgumentError, match="already built by registration"):
        await builder.update(second, targets=[target])
    with pytest.raises(UnknownRegistrationError):
        await builder.update("nope", refresh_interval=1)
    with pytest.raises(UnknownRegistrationError):
        await builder.refresh("nope")
    with pytest.raises(InvalidArgumentError, match="refresh_interval"):
        await builder.update(second, refresh_interval=0)


async def test_generated_names_agree_across_instances(make_builder: MakeBuilder) -> None:
    first, second = await make_builder(), await make_builder()
    targets = [Target("same-key", "list")]
    assert await first.register(_fetch, targets=targets, refresh_interval=100) == (
        await second.register(_fetch, targets=targets, refresh_interval=100)
    )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"namespace": "a{b}"}, InvalidArgumentError, "namespace"),
        ({"lease_ttl": 0}, InvalidArgumentError, "lease_ttl"),
        ({"lease_ttl": 0.05}, InvalidArgumentError, "at least 0.1"),
        ({"redis_timeout": -1}, InvalidArgumentError, "redis_timeout"),
        ({"fetch_timeout": 0}, InvalidArgumentError, "fetch_timeout"),
        ({"serializer": object()}, InvalidArgumentTypeError, "serializer"),
    ],
)
def test_builder_rejects_bad_options(
    redis: aioredis.Redis, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CacheBuilder(redis, **options)


async def test_a_builder_must_be_started(redis: aioredis.Redis, namespace: str) -> None:
    builder = CacheBuilder(redis, namespace=namespace)
    with pytest.raises(ClientClosedError, match="not started"):
        await builder.register(
            _fetch, targets=[Target(f"{namespace}-k", "list")], refresh_interval=1
        )


async def test_wait_built_returns_when_any_instance_has_built(
    make_builder: MakeBuilder, namespace: str
) -> None:
    leader = await make_builder()
    source = Source()
    source.gate = asyncio.Event()
    targets = [Target(f"{namespace}-l", "list")]
    await leader.register(source, targets=targets, refresh_interval=100, name="ready")
    await wait_until(lambda: source.running == 1, what="the first build")
    follower = await make_builder()
    await follower.register(Source(), targets=targets, refresh_interval=100, name="ready")
    waiting = asyncio.ensure_future(follower.wait_built("ready"))
    with pytest.raises(TimeoutError):
        await leader.wait_built("ready", timeout=0.05)
    assert not waiting.done()
    assert follower.status("ready").last_built_at is None

    source.gate.set()
    await asyncio.wait_for(waiting, timeout=5)  # the leader's announcement reached the follower
    assert follower.status("ready").last_built_at == pytest.approx(
        leader.status("ready").last_built_at, abs=0.05
    )
    late = await make_builder()  # registered after the build: learns it from Redis
    await late.register(Source(), targets=targets, refresh_interval=100, name="ready")
    await late.wait_built("ready", timeout=5)


async def test_calls_waiting_on_a_builder_end_with_client_closed_when_it_closes(
    make_builder: MakeBuilder, namespace: str
) -> None:
    """``wait_built`` on a follower and ``refresh`` on the leader are in flight when their
    builder closes: they end at once with ``ClientClosedError``, instead of waiting for a
    build that will not come (for ever, without a timeout)."""
    leader = await make_builder()
    source = Source()
    source.gate = asyncio.Event()
    targets = [Target(f"{namespace}-l", "list")]
    await leader.register(source, targets=targets, refresh_interval=100, name="slow")
    await wait_until(lambda: source.running == 1, what="the first build")
    follower = await make_builder()
    await follower.register(Source(), targets=targets, refresh_interval=100, name="slow")
    waiting = asyncio.ensure_future(follower.wait_built("slow"))
    refreshing = asyncio.ensure_future(leader.refresh("slow"))  # behind the running build
    await follower.aclose()
    with pytest.raises(ClientClosedError, match="closed"):
        await asyncio.wait_for(waiting, 5)
    await leader.aclose()
    with pytest.raises(ClientClosedError, match="closed"):
        await asyncio.wait_for(refreshing, 5)
    assert source.cancelled == 1


async def test_unregistering_ends_a_wait_for_the_first_build_with_a_build_error(
    make_builder: MakeBuilder, namespace: str
) -> None:
    leader = await make_builder()
    source = Source()
    source.gate = asyncio.Event()
    await leader.register(
        source, targets=[Target(f"{namespace}-l", "list")], refresh_interval=100, name="slow"
    )
    waiting = asyncio.ensure_future(leader.wait_built("slow"))
    await wait_until(lambda: source.running == 1, what="the first build")
    await leader.unregister("slow")
    with pytest.raises(BuildError, match="stopped before it was built"):
        await asyncio.wait_for(waiting, 5)


async def test_close_never_hangs_on_a_cancellation_lost_in_the_users_fetch(
    make_redis: Callable[..., aioredis.Redis], namespace: str
) -> None:
    """A fetch that makes its own Redis calls can swallow the builder's cancellation (redis-py
    on Python 3.11); closing must still end the loop and release the lease."""
    r = make_redis()
    calls = 0
    for round_ in range(10):

        async def fetch() -> list[dict[str, int]]:
            nonlocal calls
            for call in range(2000):
                await r.get(f"{namespace}:x")
                calls += call == 100
            return [{"id": 1}]

        builder = CacheBuilder(r, namespace=namespace)
        await builder.start()
        name = await builder.register(
            fetch, targets=[Target(f"{namespace}-{round_}", "list")], refresh_interval=0.01
        )

        def fetching(started_before: int = round_) -> bool:
            return calls > started_before

        await wait_until(fetching, what="the fetch to be making its calls")
        async with asyncio.timeout(5):
            await builder.aclose()
        assert not await r.exists(KeySpace(namespace).lease(name))


@pytest.mark.single_node
async def test_a_reader_that_missed_a_rebuild_replays_it_from_the_stream(
    make_builder: MakeBuilder, reader: CacheClient, redis: aioredis.Redis, namespace: str
) -> None:
    builder = await make_builder()
    source = Source(_items(2))
    key = f"{namespace}-l"
    name = await builder.register(source, targets=[Target(key, "list")], refresh_interval=100)
    await _built(builder, name)
    assert await reader.get_target(key) == _items(2)
    # Every swap's event is in the stream, with the id its published copy carries.
    entries = await redis.xrange(f"{namespace}:stream") or []
    assert [json.loads((fields or {})[b"e"])["op"] for _, fields in entries] == ["target"]

    # A rebuild whose event the reader never got (as if its listener was away): only the
    # stream has it. Then the reader's listener reconnects.
    meta = f"{namespace}:target:{{{key}}}{key}"
    version = int(await redis.hget(meta, "v") or 0) + 1
    new = [json.dumps(item, separators=(",", ":")) for item in _items(3, "new")]
    await redis.delete(key)
    await redis.rpush(key, *new)
    await redis.hset(meta, mapping={"v": version, "n": 3})
    event = {"op": "target", "key": key, "origin": "elsewhere", "version": version}
    await redis.xadd(f"{namespace}:stream", {"e": json.dumps(event)})
    assert await reader.get_target(key) == _items(2)  # nothing told it yet
    await redis.client_kill_filter(_type="pubsub")
    await wait_until(lambda: reader.stats().replays >= 1, what="the reader to replay")
    assert await reader.get_target(key) == _items(3, "new")
    assert reader.stats().local_flushes == 0


async def test_aclose_closes_the_listener_and_releases_the_lease_on_every_topology(
    make_redis: Callable[..., aioredis.Redis],
    namespace: str,
    data_node_connections: Callable[..., Awaitable[int]],
) -> None:
    subscribers = await data_node_connections(subscribed=True)
    r = make_redis()
    async with CacheBuilder(r, namespace=namespace) as builder:
        name = await builder.register(
            Source(), targets=[Target(f"{namespace}-l", "list")], refresh_interval=100
        )
        await _built(builder, name)
        assert await data_node_connections(subscribed=True) == subscribers + 1  # its listener
    assert await r.exists(KeySpace(namespace).lease(name)) == 0

    async def closed() -> bool:
        return await data_node_connections(subscribed=True) == subscribers

    await wait_until(closed, timeout=2.0, what="the listener's connection to close")


async def test_stats_sum_the_registrations_of_an_instance(
    make_builder: MakeBuilder, namespace: str
) -> None:
    builder = await make_builder()
    assert builder.stats() == BuilderStats(0, 0, 0, 0, 0, 0)
    good, bad = Source(), Source()
    bad.error = RuntimeError("the report database is down")
    first = await builder.register(
        good, targets=[Target(f"{namespace}-a", "list")], refresh_interval=100
    )
    second = await builder.register(
        bad, targets=[Target(f"{namespace}-b", "list")], refresh_interval=100
    )
    await _built(builder, first)
    await wait_until(lambda: builder.status(second).failures >= 1, what="a failed build")
    stats = builder.stats()
    assert (stats.registrations, stats.leading, stats.terms) == (2, 2, 2)
    assert (stats.builds, stats.failures) == (1, builder.status(second).failures)
    await builder.unregister(second)
    assert builder.stats().registrations == 1
