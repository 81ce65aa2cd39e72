"""Catching up after a disconnect. Pub/sub drops what is published while a subscriber is away,
so every invalidation is also appended to a capped stream (``XADD ... MAXLEN ~``, in the script
that publishes it). A listener remembers the last stream entry it saw and how many entries the
stream had added up to it; after reconnecting, it reads what came after.

The replay is trusted only when it is provably complete: the stream must have added exactly as
many entries since the last one seen as the replay returns. Fewer means entries were trimmed
before this listener read them (an absence longer than the stream's horizon); a counter that went
backwards means the server lost its data (a restart without persistence, a flush). Either way
the caller learns that it cannot know what it missed, and drops everything it holds.
"""

from __future__ import annotations

from typing import Any, Final

from redis.exceptions import ResponseError

from .cancellation import bounded
from .invalidation import Event, decode_event
from .lua import STREAM_MAXLEN

__all__ = ["StreamCursor", "StreamId", "parse_stream_id"]

StreamId = tuple[int, int]

_ORIGIN: Final[StreamId] = (0, 0)
_PAGE: Final = 1000


def parse_stream_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _format(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


class StreamCursor:
    """A listener's position in the namespace's event stream."""

    __slots__ = ("_added", "_position", "_redis", "_stream", "_timeout")

    def __init__(self, redis: Any, stream: str, *, timeout: float) -> None:
        self._redis = redis
        self._stream = stream
        self._timeout = timeout
        #: The last entry seen, and the stream's count of entries ever added up to it.
        self._position: StreamId | None = None
        self._added = 0

    def seen(self, event: Event) -> None:
        """Advance past a live event (events are published in stream order)."""
        if event.stream_id is None or self._position is None:
            return
        stream_id = parse_stream_id(event.stream_id)
        if stream_id > self._position:
            self._position = stream_id
            self._added += 1

    async def resync(self) -> tuple[list[Event], bool]:
        """Call once subscribed: the events missed since the last one seen, and whether that
        list is complete. The first call only takes a position (and says incomplete: nothing
        was seen before it)."""
        tip, added = await self._tip()
        previous, previous_added = self._position, self._added
        self._position, self._added = tip, added
        if previous is None:
            return [], False
        missed = added - previous_added
        if missed == 0 and tip == previous:
            return [], True
        if missed <= 0 or tip <= previous or missed > 2 * STREAM_MAXLEN:
            return [], False
        entries, events = await self._entries_after(previous, tip)
        return events, entries == missed

    async def _tip(self) -> tuple[StreamId, int]:
        try:
            info = await bounded(self._redis.xinfo_stream(self._stream), self._timeout)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return _ORIGIN, 0
            raise
        added = info.get("entries-added")
        if added is None:  # servers before Redis 7.0 do not count: never trust a replay
            return parse_stream_id(info["last-generated-id"]), -1
        return parse_stream_id(info["last-generated-id"]), int(added)

    async def _entries_after(self, start: StreamId, end: StreamId) -> tuple[int, list[Event]]:
        entries = 0
        events: list[Event] = []
        while True:
            page = await bounded(
                self._redis.xrange(self._stream, f"({_format(start)}", _format(end), count=_PAGE),
                self._timeout,
            )
            for _, fields in page:
                entries += 1
                data = fields.get(b"e", fields.get("e"))
                event = None if data is None else decode_event(data)
                if event is not None:
                    events.append(event)
            if len(page) < _PAGE:
                return entries, events
            start = parse_stream_id(page[-1][0])
