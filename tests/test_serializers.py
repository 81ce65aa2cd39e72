"""Serializers: JSON with hooks for custom types, MessagePack through msgspec; each checked
through a real Redis between two clients (what one process stores, another reads)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from redicache_async import (
    CacheBuilder,
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Target,
)
from redicache_async.keys import KeySpace

from .conftest import MakeCache
from .helpers import Fetch, wait_until


def _date_default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return {"$datetime": obj.isoformat()}
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _date_hook(obj: dict[str, Any]) -> Any:
    if obj.keys() == {"$datetime"}:
        return dt.datetime.fromisoformat(obj["$datetime"])
    return obj


WHEN = dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.UTC)


async def test_json_hooks_carry_custom_types_between_processes(make_cache: MakeCache) -> None:
    def serializer() -> JsonSerializer:
        return JsonSerializer(default=_date_default, object_hook=_date_hook)

    a = await make_cache(serializer=serializer())
    b = await make_cache(serializer=serializer())
    value = {"published": WHEN, "tags": ["a"]}
    # The fetching caller gets the value as every other process will read it back.
    assert await a.get_or_init("article", Fetch(value)) == value
    assert await b.get("article") == value
    assert isinstance((await b.get("article"))["published"], dt.datetime)


async def test_json_without_a_hook_refuses_what_it_cannot_hold(make_cache: MakeCache) -> None:
    cache = await make_cache()
    with pytest.raises(SerializationError, match="JSON"):
        await cache.set("k", {"when": WHEN})
    hooked = await make_cache(serializer=JsonSerializer(default=_date_default))
    await hooked.set("k", {"when": WHEN})
    with pytest.raises(SerializationError, match="JSON"):
        await hooked.set("k", {1, 2})  # the hook refuses a set


def test_an_object_hook_is_used_with_or_without_orjson() -> None:
    payload = b'{"$datetime":"2026-11-23T14:30:00+00:00"}'
    assert JsonSerializer(object_hook=_date_hook).loads(payload) == WHEN
    assert JsonSerializer().loads(payload) == {"$datetime": "2026-11-23T14:30:00+00:00"}


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Money:
    cents: int
    currency: str


def _money_enc(obj: Any) -> Any:
    if isinstance(obj, Money):
        return [obj.cents, obj.currency]
    raise NotImplementedError(f"{type(obj).__name__} is not supported")


def _money_dec(kind: type, obj: Any) -> Any:
    if kind is Money:
        return Money(*obj)
    raise NotImplementedError(f"{kind} is not supported")


async def test_msgpack_values_go_through_redis_as_msgpack(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str
) -> None:
    a = await make_cache(serializer=MsgpackSerializer())
    b = await make_cache(serializer=MsgpackSerializer())
    value = {"title": "Home", "n": 3, "ratio": 0.5, "blocks": ["news", None, True], "raw": b"\0"}
    assert await a.get_or_init("home", Fetch(value)) == value
    assert await b.get("home") == value
    stored = await redis.hget(KeySpace(namespace).value("home"), "d")
    assert stored == msgspec.msgpack.encode(value)  # binary, not JSON
    with pytest.raises(SerializationError, match="msgpack"):
        await a.set("k", object())


async def test_msgpack_decodes_into_a_type_and_through_hooks(make_cache: MakeCache) -> None:
    points = MsgpackSerializer(type=list[Point])
    a = await make_cache(serializer=points)
    b = await make_cache(serializer=MsgpackSerializer(type=list[Point]))
    await a.set("points", [Point(1, 2), Point(3, 4)])
    assert await b.get("points") == [Point(1, 2), Point(3, 4)]

    money = MsgpackSerializer(type=Money, enc_hook=_money_enc, dec_hook=_money_dec)
    c = await make_cache(serializer=money)
    assert await c.get_or_init("price", Fetch(Money(350, "EUR"))) == Money(350, "EUR")
    d = await make_cache(serializer=MsgpackSerializer(type=Money, dec_hook=_money_dec))
    assert await d.get("price") == Money(350, "EUR")


async def test_a_builder_writes_msgpack_items_that_readers_decode(
    redis: aioredis.Redis, namespace: str, make_cache: MakeCache
) -> None:
    reader = await make_cache(serializer=MsgpackSerializer())
    target = f"{namespace}-products"
    async with CacheBuilder(redis, namespace=namespace, serializer=MsgpackSerializer()) as builder:
        name = await builder.register(
            lambda: [{"id": 1, "name": "tea"}, {"id": 2, "name": "coffee"}],
            targets=[Target(target, "hash", id_field="id")],
            refresh_interval=60,
        )
        await wait_until(lambda: builder.status(name).builds >= 1, what="a build")
        assert await reader.get_target(target, "2") == {"id": 2, "name": "coffee"}
        assert await redis.hget(target, "1") == msgspec.msgpack.encode({"id": 1, "name": "tea"})
