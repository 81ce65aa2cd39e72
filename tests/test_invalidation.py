"""The event codec and the listener task on their own, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from redicache_async import listener as listener_module
from redicache_async.invalidation import (
    Event,
    _decode_json,
    decode_event,
    event_prefix,
    unlock_event,
)
from redicache_async.listener import InvalidationListener
from redicache_async.subscriber import buffered_reader, event_payload, settle
from redicache_async.testing import RedisServer

from .helpers import wait_until

pytestmark = pytest.mark.topologies


def test_events_round_trip_with_any_key() -> None:
    for key in ["plain", 'quo"te', "uni é ✓", "back\\slash", "{tag}"]:
        event = decode_event((event_prefix("set", key, "me") + "1732000000000001}").encode())
        assert event == Event("set", key, "me", 1732000000000001)
    assert decode_event(unlock_event("k", "me")) == Event("unlock", "k", "me", 0)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"op":"set","key":"k","origin":"o"}',
        b'{"op":"drop","key":"k","origin":"o","version":1}',
        b'{"op":"set","key":"k","origin":"o","version":"1"}',
        b'{"op":"set","key":"k","origin":"o","version":true}',
        b'{"op":"set","key":["k"],"origin":"o","version":1}',
        b'{"op":"set","key":"k","origin":"o","version":1,"id":5}',
        b'"a string"',
        b"null",
    ],
)
def test_malformed_payloads_are_not_events(junk: bytes) -> None:
    assert decode_event(junk) is None
    assert decode_event(junk.decode("utf-8", "replace")) is None


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(["set", "del", "unlock", "target", "resign", "refresh", "built", "drop"]),
    key=st.text(),
    origin=st.text(alphabet="0123456789abcdef", max_size=16) | st.text(max_size=4),
    version=st.integers(min_value=-5, max_value=1 << 70),
    stream_id=st.none() | st.from_regex(r"[0-9]{1,14}-[0-9]{1,4}", fullmatch=True),
    as_text=st.booleans(),
)
def test_the_fast_decoder_reads_every_event_as_json_does(
    op: str, key: str, origin: str, version: int, stream_id: str | None, as_text: bool
) -> None:
    """Events are decoded without a JSON parser when they have the exact shape the library
    writes: whatever the key, origin, version and stream id, the answer is json.loads's."""
    payload = f"{event_prefix(op, key, origin)}{version}}}"
    if stream_id is not None:
        payload = f'{payload[:-1]},"id":"{stream_id}"}}'
    data: str | bytes = payload if as_text else payload.encode("utf-8", "surrogatepass")
    assert decode_event(data) == _decode_json(data)
    if op != "drop" and version >= 0 and set(origin) <= set("0123456789abcdef"):
        # an origin as the library makes it (it is written unescaped)
        assert decode_event(data) == Event(op, key, origin, version, stream_id)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"op":"set","key":"k","origin":"o","version":01}',
        b'{"op":"set","key":"k","origin":"o","version":1,"id":"1-2"} ',
        rb'{"op":"set","key":"k\u00e9","origin":"o","version":1}',
        rb'{"op":"set","key":"\ud800","origin":"o","version":1}',
        b'{"op":"set","key":"\xed\xa0\x80","origin":"o","version":1}',
        b'{"op":"set","key":"a\tb","origin":"o","version":1}',
        b'{"op":"set", "key":"k","origin":"o","version":1}',
        b'{"op":"set","key":"k","origin":"o","version":1,"id":"1-2","x":1}',
    ],
)
def test_payloads_off_the_fast_shape_read_as_json_reads_them(payload: bytes) -> None:
    assert decode_event(payload) == _decode_json(payload)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.subscriptions = 0
        self.caught_up: list[bool] = []
        self.ignored = 0

    def event(self, event: Event) -> None:
        self.events.append(event)

    def subscribed(self, caught_up: bool) -> None:
        self.subscriptions += 1
        self.caught_up.append(caught_up)

    def ignore(self) -> None:
        self.ignored += 1


MakeListener = Callable[..., InvalidationListener]


@pytest.fixture
async def make_listener() -> AsyncIterator[MakeListener]:
    listeners: list[InvalidationListener] = []

    def make(
        client: aioredis.Redis, channel: str, recorder: Recorder, **options: Any
    ) -> InvalidationListener:
        listener = InvalidationListener(
            client,
            channel,
            on_event=recorder.event,
            on_subscribed=recorder.subscribed,
            on_ignored=recorder.ignore,
            timeout=options.pop("timeout", 0.3),
            **options,
        )
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        await listener.aclose()


class PingCountingRedis(aioredis.Redis):
    """A real client whose pub/sub connections count the PINGs they send."""

    pings = 0

    def pubsub(self, **kwargs: Any) -> PubSub:
        client = self

        class CountingPubSub(PubSub):
            async def ping(self, message: Any = None) -> Any:
                client.pings += 1
                return await super().ping(message)

        return CountingPubSub(self.connection_pool, **kwargs)


async def _server_pings(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


@pytest.mark.single_node
@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("reads", ["from the parser", "through get_message"])
async def test_idle_pings_keep_the_subscription_and_events_flow(
    make_redis: Callable[..., aioredis.Redis],
    make_listener: MakeListener,
    redis_url: str,
    namespace: str,
    protocol: int,
    reads: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if reads == "through get_message":  # as where redis-py's parser cannot be read directly
        monkeypatch.setattr(listener_module, "socket_reader", lambda pubsub: None)
    client = PingCountingRedis.from_url(redis_url, protocol=protocol)
    assert isinstance(client, PingCountingRedis)
    try:
        observer = make_redis()
        recorder = Recorder()
        channel = f"{namespace}:events"
        listener = make_listener(client, channel, recorder, ping_interval=0.02)
        assert await listener.start(wait=2.0)
        served = await _server_pings(observer)
        # A quiet channel is checked with a PING every ping interval; each is answered in
        # time, or the listener would have reconnected.
        await wait_until(lambda: client.pings >= 5, what="five pings on a quiet channel")
        assert (listener.reconnects, recorder.subscriptions) == (0, 1)

        async def served_pings() -> bool:
            return await _server_pings(observer) - served >= 5

        await wait_until(served_pings, what="the server to have received them")
        await client.publish(channel, unlock_event("k", "o"))
        await wait_until(lambda: len(recorder.events) == 1, what="the event")
        assert listener.connected
        await listener.aclose()
    finally:
        await client.aclose()


@pytest.mark.single_node
async def test_a_frozen_server_is_detected_and_the_listener_resubscribes(
    make_listener: MakeListener, namespace: str
) -> None:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            recorder = Recorder()
            listener = make_listener(
                client, f"{namespace}:events", recorder, ping_interval=0.05, timeout=0.2
            )
            assert await listener.start(wait=2.0)
            server.pause()
            try:
                await wait_until(lambda: not listener.connected, what="the freeze to be seen")
            finally:
                server.resume()
            await wait_until(lambda: recorder.subscriptions == 2, what="a new subscription")
            assert listener.connected
            assert listener.reconnects >= 1
            await listener.aclose()
        finally:
            await client.aclose()


async def test_a_failing_callback_is_logged_and_retried_not_fatal(
    make_redis: Callable[..., aioredis.Redis],
    make_listener: MakeListener,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()

    def broken(caught_up: bool) -> None:
        raise RuntimeError("bug in a callback")

    listener = make_listener(make_redis(), f"{namespace}:events", recorder)
    listener._on_subscribed = broken
    # start() does not hang on it: it reports that no subscription took
    assert not await listener.start(wait=0.3)
    await wait_until(lambda: listener.reconnects >= 1, what="a retry")
    assert "bug in a callback" in caplog.text


# ARGV[1]: channel, ARGV[2]: how many events. Publishes them in one go, with one foreign
# message in the middle, so that they reach the listener in a few reads of many replies each.
_BURST = """
local half = math.floor(tonumber(ARGV[2]) / 2)
for n = 1, tonumber(ARGV[2]) do
  redis.call('PUBLISH', ARGV[1],
    '{"op":"set","key":"k' .. n .. '","origin":"o","version":' .. n .. ',"id":"1-' .. n .. '"}')
  if n == half then redis.call('PUBLISH', ARGV[1], 'not an event') end
end
return 0
"""


def _count_get_message_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list that counts every ``PubSub.get_message`` call from now on."""
    calls = [0]
    get_message = PubSub.get_message

    async def counted(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await get_message(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "get_message", counted)
    return calls


@pytest.mark.parametrize(("protocol", "decode_responses"), [(3, False), (2, False), (3, True)])
async def test_a_burst_of_events_is_read_in_batches_in_order_and_whole(
    make_redis: Callable[..., aioredis.Redis],
    make_listener: MakeListener,
    namespace: str,
    protocol: int,
    decode_responses: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many replies arrive per read: the listener takes those already received without a
    get_message call each (the cost that capped a listener at 40k events/s), and handles
    every one, in order, foreign messages included."""
    calls = _count_get_message_calls(monkeypatch)
    client = make_redis(protocol=protocol, decode_responses=decode_responses)
    recorder = Recorder()
    channel = f"{namespace}:events"
    listener = make_listener(client, channel, recorder)
    assert await listener.start(wait=2.0)
    count = 3_000
    before = calls[0]
    await make_redis().eval(_BURST, 0, channel, count)
    await wait_until(lambda: len(recorder.events) == count, what="every event")
    assert recorder.events == [Event("set", f"k{n}", "o", n, f"1-{n}") for n in range(1, count + 1)]
    assert recorder.ignored == 1
    assert calls[0] - before < count // 10  # most replies were taken from the buffer
    assert listener.connected


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_lone_event_is_read_without_a_get_message_call(
    make_redis: Callable[..., aioredis.Redis],
    make_listener: MakeListener,
    namespace: str,
    protocol: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event that arrives alone is taken from the parser as soon as its bytes are read:
    get_message's timeout object, health check and message dict cost as much as the rest of
    its handling, on the path of every invalidation's latency."""
    calls = _count_get_message_calls(monkeypatch)
    recorder = Recorder()
    channel = f"{namespace}:events"
    listener = make_listener(make_redis(protocol=protocol), channel, recorder)
    assert await listener.start(wait=2.0)
    publisher = make_redis()
    for n in range(1, 6):
        event = f'{{"op":"set","key":"k{n}","origin":"o","version":{n}}}'
        await publisher.publish(channel, event)
        await wait_until(lambda: len(recorder.events) == n, what=f"event {n}")  # noqa: B023
    assert [event.key for event in recorder.events] == [f"k{n}" for n in range(1, 6)]
    assert calls[0] == 0
    assert listener.connected


@pytest.mark.single_node
@pytest.mark.parametrize("protocol", [2, 3])
async def test_buffered_replies_that_are_not_events_are_settled_as_get_message_would(
    make_redis: Callable[..., aioredis.Redis], namespace: str, protocol: int
) -> None:
    """A reply taken from the buffer that is not a published message (a pong, a subscription,
    an error) gets redis-py's own treatment: a message dict, or the error raised."""
    pubsub = make_redis(protocol=protocol).pubsub()
    try:
        await pubsub.subscribe(f"{namespace}:events")
        assert buffered_reader(pubsub) is not None  # hiredis is installed with the library
        assert event_payload([b"message", b"ch", b"data"]) == b"data"
        assert event_payload(["message", "ch", "data"]) == "data"
        for reply in ([b"pong", b""], b"PONG", [b"subscribe", b"ch", 1], [b"message", b"ch"]):
            assert event_payload(reply) is None
        assert (await settle(pubsub, [b"pong", b""]))["type"] == "pong"
        assert (await settle(pubsub, b"PONG"))["type"] == "pong"
        subscribed = await settle(pubsub, [b"subscribe", b"other", 2])
        assert (subscribed["type"], subscribed["channel"]) == ("subscribe", b"other")
        with pytest.raises(ResponseError, match="boom"):
            await settle(pubsub, ResponseError("boom"))
        with pytest.raises(RedisConnectionError):
            await settle(pubsub, [RedisConnectionError("gone")])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
