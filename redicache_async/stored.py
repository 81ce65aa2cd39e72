"""How a value is stored in Redis: one string, a fixed header then the serialized payload, so
that one plain ``GET`` reads it whole.

The header is 31 ASCII bytes::

    \\x01                 format byte: this layout (any other first byte is another layout)
    0006201f3c8a21d4     the value's version: the server's clock in µs, 16 hex digits
    019ab697e800         its expiry, the server's clock in ms, 12 hex digits (0: none)
    00                   flags, 2 hex digits: 01 (tagged) or none

A tagged value (flag 01) has its tags between the header and the payload: their JSON array's
length in bytes (4 hex digits), then the array (``["a","b"]``, compact, UTF-8). The write
scripts read them there to refuse a fenced write that an ``invalidate_tags`` overtook.

ASCII, so that a client made with ``decode_responses=True`` can read it (redis-py decodes every
string reply as UTF-8). The scripts in ``scripts.py`` write it (``_HEADER`` there); this module
reads it, and packs it for tests and tools.

A value of another layout (an older release's hash, a string without the format byte, a flag
this release does not know, a tag section that does not parse) reads as no value:
:func:`unpack` answers None and the caller counts it. The next write replaces it.
"""

from __future__ import annotations

import json
from typing import Final, NamedTuple

__all__ = [
    "FLAG_TAGGED",
    "FORMAT",
    "HEADER_SIZE",
    "Stored",
    "header_flags",
    "pack",
    "tag_section",
    "unpack",
]

#: The first byte of a value in this layout.
FORMAT: Final = 1
HEADER_SIZE: Final = 31
#: The flag of a value with a tag section.
FLAG_TAGGED: Final = 1
#: The longest tag section's JSON array, in bytes (its length has 4 hex digits).
MAX_TAGS_BYTES: Final = 0xFFFF
_EXPIRY_BITS: Final = 48  # 12 hex digits
_EXPIRY_MASK: Final = (1 << _EXPIRY_BITS) - 1
_new_tuple: Final = tuple.__new__


class Stored(NamedTuple):
    """A stored value, unpacked."""

    version: int
    #: Its expiry, the server's clock in ms (0: none).
    expires_ms: int
    #: The serialized value.
    payload: bytes
    #: Its tags (none: an empty tuple).
    tags: tuple[str, ...] = ()


def tag_section(tags: tuple[str, ...]) -> bytes:
    """What goes between the header and the payload of a value with ``tags`` (b"": none)."""
    if not tags:
        return b""
    array = json.dumps(list(tags), ensure_ascii=False, separators=(",", ":")).encode()
    if len(array) > MAX_TAGS_BYTES:
        raise ValueError(f"the tags take {len(array)} bytes as JSON; at most {MAX_TAGS_BYTES}")
    return b"%04x" % len(array) + array


def header_flags(tags: tuple[str, ...]) -> str:
    """The flags of a value with ``tags``, as the write scripts take them."""
    return "01" if tags else "00"


def pack(version: int, expires_ms: int, payload: bytes, *, tags: tuple[str, ...] = ()) -> bytes:
    """The stored form of ``payload`` (``expires_ms``: 0 for none), as the scripts write it."""
    flags = FLAG_TAGGED if tags else 0
    return b"\x01%016x%012x%02x" % (version, expires_ms, flags) + tag_section(tags) + payload


def unpack(raw: bytes | str) -> Stored | None:
    """A stored value's parts, or None when it is in another layout."""
    if raw.__class__ is not bytes:  # a str from a client made with decode_responses=True
        raw = raw.encode()  # type: ignore[union-attr]
    if len(raw) < HEADER_SIZE or raw[0] != FORMAT:
        return None
    flags = raw[29:31]
    try:
        # The version and the expiry in one parse: the expiry is the low 12 hex digits.
        header = int(raw[1:29], 16)
    except ValueError:
        return None
    version, expires_ms = header >> _EXPIRY_BITS, header & _EXPIRY_MASK
    if flags == b"00":
        # Built as a tuple: a NamedTuple's own __new__ is a Python function, and every read
        # of a value from Redis comes here.
        return _new_tuple(Stored, (version, expires_ms, raw[HEADER_SIZE:], ()))
    if flags != b"01":
        return None
    tags = _tags(raw)
    if tags is None:
        return None
    return Stored(version, expires_ms, raw[HEADER_SIZE + 4 + len(tags[1]) :], tags[0])


def _tags(raw: bytes) -> tuple[tuple[str, ...], bytes] | None:
    """The tags in a tagged value's section, and the section's array; None if it is not one
    this release wrote."""
    try:
        size = int(raw[HEADER_SIZE : HEADER_SIZE + 4], 16)
        array = raw[HEADER_SIZE + 4 : HEADER_SIZE + 4 + size]
        tags = json.loads(array) if len(array) == size else None
    except ValueError:
        return None
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
        return None
    return tuple(tags), array
