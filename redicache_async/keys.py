"""Where things live in Redis: every key the client writes, under one namespace.

Keys that one script touches together (a value and its lock) carry the same hash tag, so they
share a cluster slot. The tag is the user's key itself when it contains no brace; otherwise a
digest of it, because a brace inside the tag would cut it short and split the pair.
"""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["MAX_KEY_BYTES", "KeySpace", "validate_key", "validate_namespace"]

#: Longest user key accepted, in UTF-8 bytes. Redis allows 512 MB, but a key this long is a bug.
MAX_KEY_BYTES = 1024

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-:]+")


def validate_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise InvalidArgumentTypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise InvalidArgumentError(
            f"namespace {namespace!r} must be non-empty and use only letters, digits and "
            "'_.-:' (braces would break cluster hash tags)"
        )
    return namespace


def validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidArgumentTypeError(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidArgumentError("key must not be empty")
    if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _tagged(key: str) -> str:
    """``{key}``, or ``{#digest}key`` when the key holds a brace of its own."""
    if "{" in key or "}" in key:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]
        return f"{{#{digest}}}{key}"
    return f"{{{key}}}"


class KeySpace:
    """Names of the Redis keys and the channel that belong to one namespace."""

    __slots__ = ("channel", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = validate_namespace(namespace)
        #: Pub/sub channel that carries ``{key, version, origin}`` events, never values.
        self.channel = f"{namespace}:events"

    def value(self, key: str) -> str:
        """The hash holding a cached value (field ``d``) and its version (field ``v``)."""
        return f"{self.namespace}:v:{_tagged(key)}"

    def lock(self, key: str) -> str:
        """The write lock of a cached value; same slot as :meth:`value`."""
        return f"{self.namespace}:lock:{_tagged(key)}"
