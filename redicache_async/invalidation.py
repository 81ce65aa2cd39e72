"""Events on the namespace's channels: what they say and how they are written.

An event is compact JSON: ``{"op":..., "key":..., "origin":..., "version":...}``. It never
carries a value. On the cache channel ``op`` is ``set`` or ``del`` (the value changed: drop older
local copies, wake waiters), ``unlock`` (a lock was released without a value: wake waiters),
``target`` (a builder swapped in a new build of the target ``key``), ``clear`` (every value of
the namespace not newer than ``version`` is gone; ``key`` is empty) or ``tags`` (every value
with one of the tags not newer than ``version`` is gone; ``key`` is the tags' JSON array, see
:func:`tags_event_key`). On the builders' channel
it is ``resign`` (a leader released registration ``key``), ``refresh`` (rebuild ``key`` now) or
``built`` (a build of ``key`` was swapped in; its version is when it started, in ms).

Where the namespace keeps an event stream (see ``replay.py``), events carry their stream ``id``.
The task that listens to them is in ``listener.py``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "OP_BUILT",
    "OP_CLEAR",
    "OP_DELETE",
    "OP_REFRESH",
    "OP_RESIGN",
    "OP_SET",
    "OP_TAGS",
    "OP_TARGET",
    "OP_UNLOCK",
    "Event",
    "decode_event",
    "event_prefix",
    "event_tags",
    "plain_event",
    "tags_event_key",
    "unlock_event",
]

OP_SET: Final = "set"
OP_DELETE: Final = "del"
OP_UNLOCK: Final = "unlock"
OP_TARGET: Final = "target"
OP_RESIGN: Final = "resign"
OP_REFRESH: Final = "refresh"
OP_BUILT: Final = "built"
OP_CLEAR: Final = "clear"
OP_TAGS: Final = "tags"
_OPS = frozenset(
    {OP_SET, OP_DELETE, OP_UNLOCK, OP_TARGET, OP_RESIGN, OP_REFRESH, OP_BUILT, OP_CLEAR, OP_TAGS}
)


@dataclass(frozen=True, slots=True)
class Event:
    op: str
    key: str
    origin: str
    version: int
    #: The event's entry in the namespace's stream ("ms-seq"), when it has one.
    stream_id: str | None = None


def event_prefix(op: str, key: str, origin: str) -> str:
    """An event up to its version; the write script appends ``<version>}``."""
    return f'{{"op":"{op}","key":{_json_text(key)},"origin":"{origin}","version":'


def _json_text(text: str) -> str:
    """``text`` as a JSON string. Most keys are printable ASCII without a quote or a
    backslash, which JSON writes as they are: quoted here, 10x faster than ``json.dumps``
    (each write builds its event)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def plain_event(op: str, key: str, origin: str) -> str:
    """An event that carries no version (version 0)."""
    return event_prefix(op, key, origin) + "0}"


def unlock_event(key: str, origin: str) -> str:
    return plain_event(OP_UNLOCK, key, origin)


def tags_event_key(tags: tuple[str, ...]) -> str:
    """The ``key`` of a ``tags`` event: the tags as a JSON array."""
    return json.dumps(list(tags), ensure_ascii=False, separators=(",", ":"))


def event_tags(event: Event) -> tuple[str, ...]:
    """The tags a ``tags`` event names (none if its key is not an array of strings)."""
    try:
        tags = json.loads(event.key)
    except ValueError:
        return ()
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return ()
    return tuple(tags)


# The exact shape the library writes (``event_prefix`` + version, and the ``id`` the stream
# append adds), with no escape in any string. An event it matches reads the same as through
# ``json.loads``; anything else (an escaped key, spaces, a foreign message) goes through
# ``json.loads``, so the fast path changes no answer, only the cost (about 3x less).
_STRING = rb'"([^"\\\x00-\x1f]*)"'
_SHAPE = (
    rb'\{"op":"(set|del|unlock|target|resign|refresh|built|clear)","key":'
    + _STRING
    + rb',"origin":'
    + _STRING
    + rb',"version":(0|[1-9][0-9]*)(?:,"id":'
    + _STRING
    + rb")?\}"
)
_FAST_BYTES: Final = re.compile(_SHAPE).fullmatch
_FAST_TEXT: Final = re.compile(_SHAPE.decode()).fullmatch


def decode_event(data: Any) -> Event | None:
    """The event in a pub/sub payload, or None if it is not one of ours."""
    if data.__class__ is bytes:
        match = _FAST_BYTES(data)
        if match is not None:
            op, key, origin, version, stream_id = match.groups()
            try:
                return Event(
                    op.decode(),
                    key.decode(),
                    origin.decode(),
                    int(version),
                    None if stream_id is None else stream_id.decode(),
                )
            except UnicodeDecodeError:
                pass  # json.loads decides (it reads lone surrogates)
    elif data.__class__ is str:
        text = _FAST_TEXT(data)
        if text is not None:
            return Event(text[1], text[2], text[3], int(text[4]), text[5])
    return _decode_json(data)


def _decode_json(data: Any) -> Event | None:
    try:
        raw = json.loads(data)
        op, key, origin, version = raw["op"], raw["key"], raw["origin"], raw["version"]
        stream_id = raw.get("id")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if (
        op not in _OPS
        or not isinstance(key, str)
        or not isinstance(origin, str)
        or not isinstance(version, int)
        or isinstance(version, bool)
        or not (stream_id is None or isinstance(stream_id, str))
    ):
        return None
    return Event(op, key, origin, version, stream_id)
