"""Redis replies as Python values, whatever ``decode_responses`` the user's client was made
with: bytes from a plain client, str from a decoding one."""

from __future__ import annotations

from typing import Any

__all__ = ["text"]


def text(value: Any, *, errors: str = "strict") -> str:
    """A reply as str (``errors="replace"`` for bytes that may not be UTF-8)."""
    return value.decode(errors=errors) if isinstance(value, bytes) else str(value)
