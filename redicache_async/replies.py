"""Redis replies as Python values, whatever ``decode_responses`` the user's client was made
with: bytes from a plain client, str from a decoding one."""

from __future__ import annotations

from typing import Any

__all__ = ["text", "ttl_from_pttl"]


def text(value: Any, *, errors: str = "strict") -> str:
    """A reply as str (``errors="replace"`` for bytes that may not be UTF-8)."""
    return value.decode(errors=errors) if isinstance(value, bytes) else str(value)


def ttl_from_pttl(pttl: int) -> int:
    """PTTL's answer as a write's ttl: -1 (no expiry) becomes 0, and 0 (expiring now) 1 ms."""
    return 0 if pttl < 0 else max(pttl, 1)
