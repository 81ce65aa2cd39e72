"""A build's bulk writes (``target_swap.write``): on one server they are packed here and sent on
one connection of the client's pool, so a refused or cancelled write must leave that pool's
connections in step (no reply left behind for the next command to read)."""

from __future__ import annotations

import asyncio
import json

import pytest

from redicache_async.keys import KeySpace
from redicache_async.target_swap import write
from redicache_async.targets import Target, prepare
from tests.conftest import MakeRedis

pytestmark = pytest.mark.topologies


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def test_a_build_is_written_whole(make_redis: MakeRedis, namespace: str) -> None:
    redis = make_redis()
    items = [{"id": i, "name": f"n{i}"} for i in range(2500)]  # three commands
    targets = [
        Target(f"{namespace}-hash", "hash", id_field="id"),
        Target(f"{namespace}-zset", "zset", score_field="id"),
        Target(f"{namespace}-list", "list"),
    ]
    prepared = await prepare(targets, items, _dumps)
    writes = [(KeySpace(namespace).temporary(p.target.key, "t"), p) for p in prepared]
    await write(redis, writes, timeout=10.0)
    hash_key, zset_key, list_key = (temporary for temporary, _ in writes)
    assert await redis.hlen(hash_key) == 2500
    last = await redis.hget(hash_key, "2499")
    assert last is not None
    assert json.loads(last) == items[2499]
    assert await redis.zscore(zset_key, _dumps(items[7]).decode()) == 7.0
    assert [json.loads(raw) for raw in await redis.lrange(list_key, 0, -1)] == items
    for key in (hash_key, zset_key, list_key):
        assert 0 < await redis.pttl(key) <= 60_000  # temporary: it expires unless swapped


async def test_a_refused_write_raises_and_leaves_the_connection_in_step(
    make_redis: MakeRedis, namespace: str
) -> None:
    redis = make_redis()
    target = Target(f"{namespace}-hash", "hash", id_field="id")
    (prepared,) = await prepare([target], [{"id": i} for i in range(2500)], _dumps)
    temporary = KeySpace(namespace).temporary(target.key, "t")
    await redis.set(temporary, "a string: every HSET is refused")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await write(redis, [(temporary, prepared)], timeout=10.0)
    for i in range(20):  # each answer is its own command's, on whichever pooled connection
        await redis.set(f"{namespace}-probe", str(i))
        assert await redis.get(f"{namespace}-probe") == str(i).encode()


async def test_a_cancelled_write_leaves_the_connections_in_step(
    make_redis: MakeRedis, namespace: str
) -> None:
    redis = make_redis()
    target = Target(f"{namespace}-list", "list")
    (prepared,) = await prepare(
        [target], [{"i": i, "pad": "x" * 50} for i in range(60_000)], _dumps
    )
    temporary = KeySpace(namespace).temporary(target.key, "t")
    for hops in (1, 2, 3, 5, 8):  # cancelled at different points of the write
        task = asyncio.create_task(write(redis, [(temporary, prepared)], timeout=10.0))
        for _ in range(hops):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for i in range(5):
            await redis.set(f"{namespace}-probe", f"{hops}-{i}")
            assert await redis.get(f"{namespace}-probe") == f"{hops}-{i}".encode()
