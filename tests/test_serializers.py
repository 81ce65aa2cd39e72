"""Serializers: JSON with hooks for custom types, MessagePack through msgspec; each checked
through a real Redis between two clients (what one process stores, another reads)."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from typing import Any
from unittest import mock

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from redicache_async import (
    CacheBuilder,
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Target,
    serializers,
)
from redicache_async.keys import KeySpace

from .conftest import MakeCache
from .helpers import Fetch, wait_until
from .values import stored_payload


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


# -- JSON reads back exactly what the standard library reads, with orjson or without -----------

#: The integers around orjson's edges (i64 and u64), where it once answered floats.
EDGE_INTEGERS = [
    sign * (base + delta)
    for sign in (1, -1)
    for base in (2**63, 2**64, 10**18, 10**19, 10**20)
    for delta in (-1, 0, 1)
]


def _orjson_serializer() -> JsonSerializer:
    serializer = JsonSerializer()
    # orjson is in the test extras: this test must not pass by quietly testing json twice
    assert serializer._fast is orjson.loads
    assert serializer._fast_dumps is orjson.dumps
    return serializer


def _plain_serializer(**hooks: Any) -> JsonSerializer:
    with (
        mock.patch.object(serializers, "_orjson_loads", None),
        mock.patch.object(serializers, "_orjson_dumps", None),
    ):
        serializer = JsonSerializer(**hooks)
    assert serializer._fast is None
    assert serializer._fast_dumps is None
    return serializer


SERIALIZERS = [
    pytest.param(_orjson_serializer(), id="orjson"),
    pytest.param(_plain_serializer(), id="stdlib"),
]

#: Every JSON value: null, booleans, integers of any size, finite floats (-0.0 and subnormals
#: included), text (surrogate-free: such text has no UTF-8), arrays and objects.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EDGE_INTEGERS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[key], b[key]) for key in a)
    return bool(a == b)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@settings(max_examples=300, deadline=None)
@given(value=json_values)
@example(value=-(2**63) - 1)
@example(value=-(10**19) + 1)
@example(value=[-0.0, 5e-324, 1.7976931348623157e308, 2**64, {"": -(2**63)}])
def test_a_json_value_reads_back_as_the_standard_library_reads_it(
    serializer: JsonSerializer, value: Any
) -> None:
    expected = json.loads(json.dumps(value))
    assert _same(serializer.loads(serializer.dumps(value)), expected)


@pytest.mark.parametrize("serializer", SERIALIZERS)
@settings(max_examples=200, deadline=None)
@given(value=json_values, ascii_only=st.booleans(), indent=st.none() | st.integers(0, 2))
def test_json_written_by_others_reads_as_the_standard_library_reads_it(
    serializer: JsonSerializer, value: Any, ascii_only: bool, indent: int | None
) -> None:
    """Another writer's spacing and escapes (``\\u00e9``) change nothing."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert _same(serializer.loads(text.encode()), json.loads(text))


def test_the_integers_orjson_misread_read_back_as_ints() -> None:
    for serializer in (_orjson_serializer(), _plain_serializer()):
        for value in (-(2**63) - 1, -(10**19) + 1):
            assert _same(serializer.loads(serializer.dumps(value)), value)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_what_orjson_encodes_any_json_parser_reads_as_the_value(value: Any) -> None:
    """The stored bytes are plain, strict JSON: another language's parser reads the value."""
    expected = json.loads(json.dumps(value))
    assert _same(json.loads(_orjson_serializer().dumps(value)), expected)


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


class Ratio(float):
    pass


class Redacted(dict[str, Any]):
    """Shows JSON encoders only its public items."""

    def items(self) -> Any:
        return [(key, value) for key, value in super().items() if not key.startswith("_")]


@dataclasses.dataclass
class Span:
    start: int
    end: int


#: Values that orjson encodes unlike the standard library (or encodes where the standard
#: library calls ``default``, or refuses): the standard library's answer must win.
ORJSON_DIFFERS = [
    pytest.param(uuid.UUID(int=7), id="uuid"),
    pytest.param(Colour.RED, id="enum"),
    pytest.param([Level.HIGH], id="int-enum"),
    pytest.param({"n": Name("x")}, id="str-subclass"),
    pytest.param(Ratio(0.5), id="float-subclass"),
    pytest.param((1, [2, (3,)]), id="tuple"),
    pytest.param(WHEN, id="datetime"),
    pytest.param(WHEN.date(), id="date"),
    pytest.param(Span(1, 2), id="dataclass"),
    pytest.param(collections.OrderedDict(a=1), id="ordered-dict"),
    pytest.param(Redacted(name="x", _secret="y"), id="dict-subclass-with-its-own-items"),
    pytest.param({1: "one", None: "none"}, id="non-text-keys"),
    pytest.param(2**70, id="int-beyond-64-bits"),
    pytest.param(float("nan"), id="nan"),
    pytest.param([float("inf")], id="infinity"),
    pytest.param("\ud800", id="lone-surrogate"),
]


def _named_default(obj: Any) -> Any:
    return {"$type": type(obj).__name__, "$repr": repr(obj)}


def _encoded(serializer: JsonSerializer, value: Any) -> bytes | str:
    try:
        return serializer.dumps(value)
    except SerializationError as exc:
        return f"SerializationError: {exc}"


@pytest.mark.parametrize("value", ORJSON_DIFFERS)
@pytest.mark.parametrize("default", [None, _named_default], ids=["no-default", "default"])
def test_json_encodes_as_the_standard_library_where_orjson_would_differ(
    value: Any, default: Any
) -> None:
    with_orjson = JsonSerializer(default=default)
    assert with_orjson._fast_dumps is orjson.dumps
    without = _plain_serializer(default=default)
    got, expected = _encoded(with_orjson, value), _encoded(without, value)
    if isinstance(got, bytes) and isinstance(expected, bytes):
        # The same value; orjson may spell a float or an escape its own way.
        assert repr(json.loads(got)) == repr(json.loads(expected))
    else:
        assert got == expected


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
    stored = await stored_payload(redis, KeySpace(namespace).value("home"))
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
