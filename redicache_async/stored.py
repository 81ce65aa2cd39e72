"""How a value is stored in Redis: one string, a fixed header then the serialized payload, so
that one plain ``GET`` reads it whole.

The header is 31 ASCII bytes::

    \\x01                 format byte: this layout (any other first byte is another layout)
    0006201f3c8a21d4     the value's version: the server's clock in µs, 16 hex digits
    019ab697e800         its expiry, the server's clock in ms, 12 hex digits (0: none)
    00                   flags, 2 hex digits (none defined: a value with any set is skipped)

ASCII, so that a client made with ``decode_responses=True`` can read it (redis-py decodes every
string reply as UTF-8). The scripts in ``scripts.py`` write it (``_HEADER`` there); this module
reads it, and packs it for tests and tools.

A value of another layout (an older release's hash, a string without the format byte, a flag
this release does not know) reads as no value: :func:`unpack` answers None and the caller
counts it. The next write replaces it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FORMAT", "HEADER_SIZE", "pack", "unpack"]

#: The first byte of a value in this layout.
FORMAT: Final = 1
HEADER_SIZE: Final = 31
_FORMAT_BYTE: Final = b"\x01"


def pack(version: int, expires_ms: int, payload: bytes, *, flags: int = 0) -> bytes:
    """The stored form of ``payload`` (``expires_ms``: 0 for none), as the scripts write it."""
    return b"\x01%016x%012x%02x" % (version, expires_ms, flags) + payload


def unpack(raw: bytes | str) -> tuple[int, int, bytes] | None:
    """``(version, expiry in server ms (0: none), payload)`` of a stored value, or None when it
    is in another layout."""
    if isinstance(raw, str):  # a client made with decode_responses=True
        raw = raw.encode()
    if raw[:1] != _FORMAT_BYTE or raw[29:31] != b"00" or len(raw) < HEADER_SIZE:
        return None
    try:
        version = int(raw[1:17], 16)
        expires_ms = int(raw[17:29], 16)
    except ValueError:
        return None
    return version, expires_ms, raw[HEADER_SIZE:]
