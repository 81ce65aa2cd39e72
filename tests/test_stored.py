"""The stored layout (``redicache_async/stored.py``): a value another layout wrote reads as a
counted miss and is replaced by the next fetch; a fleet mixing this release with the previous
one (values as hashes) does not crash either side; local deadlines come from the header's
expiry and the server's clock offset."""

from __future__ import annotations

import asyncio
import json
from time import monotonic
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient
from redicache_async.invalidation import OP_DELETE, OP_SET, event_prefix
from redicache_async.keys import KeySpace
from redicache_async.leases import new_token
from redicache_async.status import read_status
from redicache_async.status_report import render
from redicache_async.stored import HEADER_SIZE, Stored, pack, unpack

from .conftest import MakeCache
from .helpers import Fetch, wait_until
from .old_layout import OLD_DELETE, OLD_READ_MANY, OLD_READ_OR_LOCK, OLD_WRITE
from .values import stored_payload

pytestmark = pytest.mark.topologies


class OldProcess:
    """A process of the previous release, as far as values go: its own scripts, verbatim."""

    def __init__(self, r: aioredis.Redis, namespace: str, *, stream: bool) -> None:
        self.keys = KeySpace(namespace)
        self._stream = [self.keys.stream] if stream else []
        self._write = r.register_script(OLD_WRITE)
        self._delete = r.register_script(OLD_DELETE)
        self._read_many = r.register_script(OLD_READ_MANY)
        self._read_or_lock = r.register_script(OLD_READ_OR_LOCK)

    def _keys(self, key: str) -> list[str]:
        return [self.keys.value(key), self.keys.lock(key), *self._stream]

    async def set(self, key: str, value: Any, ttl_ms: int = 0) -> int:
        prefix = event_prefix(OP_SET, key, "old-release")
        args: list[str | int] = ["", json.dumps(value), ttl_ms, self.keys.channel, prefix]
        return int(await self._write(keys=self._keys(key), args=args))

    async def delete(self, key: str) -> None:
        prefix = event_prefix(OP_DELETE, key, "old-release")
        await self._delete(keys=self._keys(key), args=[self.keys.channel, prefix])

    async def get(self, key: str) -> Any:
        (reply,) = await self._read_many(keys=[self.keys.value(key)])
        return None if not reply else json.loads(reply[0])

    async def get_or_lock(self, key: str) -> list[Any]:
        return list(
            await self._read_or_lock(keys=self._keys(key)[:2], args=[new_token(), 10_000, "0"])
        )


def _old(cache: CacheClient, r: aioredis.Redis) -> OldProcess:
    return OldProcess(r, cache.namespace, stream=bool(cache._stream_keys))


async def test_an_old_release_s_value_reads_as_a_counted_miss_and_is_rewritten(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    old = _old(cache, redis)
    await old.set("k", {"from": "old"})
    assert await redis.type(old.keys.value("k")) == b"hash"
    assert await cache.get("k") is None
    stats = cache.stats()
    assert (stats.foreign_values, stats.misses, stats.redis_errors) == (1, 1, 0)
    fetch = Fetch({"from": "new"})
    assert await cache.get_or_init("k", fetch) == {"from": "new"}
    assert fetch.calls == 1
    assert await stored_payload(redis, old.keys.value("k")) == b'{"from":"new"}'
    assert cache.stats().foreign_values == 2  # the GET of get_or_init saw it too
    assert await cache.get("k") == {"from": "new"}
    assert cache.stats().foreign_values == 2


async def test_an_old_release_s_value_in_a_batch_of_reads_is_a_counted_miss(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    """Concurrent reads go to Redis together (``batching.py``: one MGET in a script, which
    answers a hash as it answers a missing key): the old value is still told apart, and
    counted."""
    writer = await make_cache()
    await _old(writer, redis).set("old", {"from": "old"})
    await writer.set("new", "new")
    reader = await make_cache(local_max_entries=0)
    # the first read is sent at once; the two issued while it is in flight go together
    answers = await asyncio.gather(reader.get("new"), reader.get("old"), reader.get("none"))
    assert list(answers) == ["new", None, None]
    stats = reader.stats()
    assert (stats.foreign_values, stats.misses, stats.redis_hits, stats.redis_errors) == (
        1,
        2,
        1,
        0,
    )


async def test_a_fleet_of_both_releases_does_not_crash_either(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    """A rolling deploy: each side reads what the other wrote, as no value, never an error,
    and each side's writes (and deletes) replace the other's."""
    new, reader = await make_cache(), await make_cache()
    old = _old(new, redis)
    # the old release reads the new layout as no value; its lock script takes the lock
    await new.set("a", "new a")
    assert await old.get("a") is None
    assert (await old.get_or_lock("a"))[0] == 2
    # ... and its write (fenced by nothing: it holds no token here) replaces the value
    await old.set("a", "old a")
    await wait_until(lambda: new._local.peek("a") is None, what="its event to be heard")
    assert await reader.get("a") is None
    assert await new.get("a") is None
    # the new release writes over the old layout, and the old one's delete removes it
    await new.set("a", "new again")
    assert await reader.get("a") == "new again"
    await old.delete("a")
    await wait_until(lambda: reader._local.peek("a") is None, what="its delete to be heard")
    assert await reader.get("a") is None
    # a delete of the new release over the old layout; versions still only grow
    await old.set("b", "old b")
    await new.delete("b")
    assert not await redis.exists(old.keys.value("b"))
    assert await old.get("b") is None
    # a batch of the new release across both layouts
    await old.set("c", "old c")
    await new.set("d", "new d")
    fresh = await make_cache(local_max_entries=0)
    await fresh.get("warm-up")
    read = await asyncio.gather(*(fresh.get(k) for k in ("warm-up", "c", "d", "a")))
    assert read == [None, None, "new d", None]
    for cache in (new, reader, fresh):
        assert cache.stats().redis_errors == 0


async def test_values_of_an_unknown_format_or_flag_read_as_counted_misses(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    cache = await make_cache()
    keys = KeySpace(namespace)
    later = b"\x02" + pack(1, 0, b'"v"')[1:]  # a later release's format byte
    flagged = b"\x01%016x%012x02" % (1, 0) + b'"v"'  # a flag this release does not know
    await redis.set(keys.value("later"), later)
    await redis.set(keys.value("flagged"), flagged)
    await redis.set(keys.value("short"), b"\x01" + b"0" * (HEADER_SIZE - 2))
    for key in ("later", "flagged", "short"):
        assert await cache.get(key) is None
    assert cache.stats().foreign_values == 3
    assert await cache.get_or_init("flagged", Fetch("fetched")) == "fetched"
    assert unpack(await redis.get(keys.value("flagged")) or b"") is not None


def test_the_header_round_trips() -> None:
    raw = pack(1_764_000_000_123_456, 1_764_000_060_000, b"payload")
    assert len(raw) == HEADER_SIZE + len(b"payload")
    assert raw.isascii()  # a client made with decode_responses=True reads it too
    assert unpack(raw) == Stored(1_764_000_000_123_456, 1_764_000_060_000, b"payload", ())
    assert unpack(raw.decode()) == unpack(raw)
    assert unpack(b"") is None
    assert unpack(b'{"a json":"value"}') is None


async def test_the_clock_offset_is_within_one_round_trip_of_the_server_s(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    """The documented bound: the estimate maps the server's clock to this process's no later
    than it really is (deadlines are early, never late), by at most the kept round trip."""
    cache = await make_cache()
    clock = cache._clock
    assert clock.known
    for _ in range(5):
        before = monotonic()
        seconds, micros = await redis.time()
        after = monotonic()
        server = seconds + micros / 1_000_000
        estimated = clock.server_now()
        assert estimated is not None
        # where the estimate puts that server instant on this process's clock
        local = server - (estimated - monotonic())
        slack = 0.002  # the two clocks' reads here, and drift since the estimate
        assert local <= after + slack
        assert local >= before - clock.error - slack


async def test_a_value_read_expires_locally_no_later_than_in_redis(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    """The local deadline comes from the header's expiry and the clock offset (no PTTL)."""
    writer, reader = await make_cache(), await make_cache()
    await writer.set("k", "v", ttl=30)
    started = monotonic()
    assert await reader.get("k") == "v"
    entry = reader._local.peek("k")
    assert entry is not None
    pttl = await redis.pttl(reader._keys.value("k"))
    ended = monotonic()
    # no later than the key's expiry, and not much earlier: within the calls made here and
    # the clock's bound
    assert entry.expires_at <= ended + pttl / 1000
    assert entry.expires_at >= started + pttl / 1000 - reader._clock.error - 0.05
    # a value without expiry stays fresh
    await writer.set("forever", "v")
    assert await reader.get("forever") == "v"
    entry = reader._local.peek("forever")
    assert entry is not None
    assert entry.expires_at == float("inf")


async def test_a_value_with_an_expiry_is_not_kept_before_the_clock_is_known(
    make_cache: MakeCache,
) -> None:
    writer, reader = await make_cache(), await make_cache()
    await writer.set("k", "v", ttl=30)
    await writer.set("forever", "v")
    reader._clock._offset = None  # as if Redis had not answered TIME yet
    assert await reader.get("k") == "v"
    assert await reader.get("forever") == "v"
    assert reader._local.peek("k") is None
    assert reader._local.peek("forever") is not None


async def test_the_status_report_marks_values_of_an_older_layout(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    old = _old(cache, redis)
    await old.set("old", "o", ttl_ms=60_000)
    await cache.set("new", "n")
    status = await read_status(redis, cache.namespace)
    found = {k.key: k for k in status.keys}
    assert found["old"].outdated
    assert found["old"].ttl is not None
    assert not found["new"].outdated
    assert found["new"].size == len(b'"n"')
    assert found["new"].written_at is not None
    report = render(status, where="here", now=0.0)
    assert "older layout: read as a miss" in report
