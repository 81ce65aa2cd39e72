"""Where things live in Redis: every key the client writes, under one namespace.

Keys that one script touches together (a value and its lock) carry the same hash tag, so they
share a cluster slot. The tag is the user's key itself when it contains no brace; otherwise a
digest of it, because a brace inside the tag would cut it short and split the pair.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from redis.crc import key_slot

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "MAX_KEY_BYTES",
    "KeySpace",
    "encoded",
    "slot_tag",
    "validate_key",
    "validate_namespace",
]

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
    # An ASCII key is its own UTF-8; only others need encoding to be measured (and checked).
    if (len(key) if key.isascii() else len(encoded(key, "key"))) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"key is longer than {MAX_KEY_BYTES} bytes")
    return key


def encoded(text: str, what: str) -> bytes:
    """``text`` as the UTF-8 that Redis will be sent. A lone surrogate (``"\\ud800"``, from a
    bad decode upstream) has none: refused here, before it can fail a command half-built."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} cannot be encoded as UTF-8 (character {exc.object[exc.start]!r} at "
            f"position {exc.start})"
        ) from None


def _tagged(key: str) -> str:
    """``{key}``, or ``{#digest}key`` when the key holds a brace of its own."""
    if "{" in key or "}" in key:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20]
        return f"{{#{digest}}}{key}"
    return f"{{{key}}}"


def _untagged(tagged: str) -> str | None:
    """The user key behind :func:`_tagged`'s output, or None when ``tagged`` is not one."""
    if len(tagged) > 23 and tagged.startswith("{#") and tagged[22] == "}":
        key = tagged[23:]
        if _tagged(key) == tagged:
            return key
    if len(tagged) > 2 and tagged[0] == "{" and tagged[-1] == "}":
        key = tagged[1:-1]
        if _tagged(key) == tagged:
            return key
    return None


def _hash_tag(key: str) -> str | None:
    """The part of ``key`` that Redis Cluster hashes, when it is not the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return None


@lru_cache(maxsize=4096)
def slot_tag(key: str) -> str:
    """A tag ``T`` such that any key holding ``{T}`` lands in the same cluster slot as ``key``.

    It is the key's own hash tag if it has one, else the key itself; a key with a stray ``}``
    (which would end the tag early) gets a short tag searched for the same slot instead.
    """
    tag = _hash_tag(key)
    if tag is not None:
        return tag
    if "}" not in key:
        return key
    slot = key_slot(key.encode())
    for n in range(1_000_000):
        candidate = f"#{n}"
        if key_slot(candidate.encode()) == slot:
            return candidate
    raise AssertionError("unreachable: every slot is hit by a short tag")  # pragma: no cover


class KeySpace:
    """Names of the Redis keys and the channel that belong to one namespace."""

    __slots__ = ("builder_channel", "channel", "cleared", "namespace", "stream", "tag_times")

    def __init__(self, namespace: str) -> None:
        self.namespace = validate_namespace(namespace)
        #: Pub/sub channel that carries ``{key, version, origin}`` events, never values.
        self.channel = f"{namespace}:events"
        #: Where builders announce released leases and ask leaders for a rebuild.
        self.builder_channel = f"{namespace}:builders"
        #: A capped stream of the same events, from which a listener that was disconnected
        #: replays what it missed. Its own slot: on a cluster, scripts cannot write it.
        self.stream = f"{namespace}:stream"
        #: When the namespace was last cleared (server µs, a version): a value whose version is
        #: not above it is gone. In the namespace's own slot.
        self.cleared = f"{namespace}:cleared:{{{namespace}}}"
        #: When each tag was last invalidated (a hash: tag -> version; see ``tags.py``). In the
        #: namespace's own slot too, so that one script invalidates any number of tags.
        self.tag_times = f"{namespace}:tags:{{{namespace}}}"

    def value(self, key: str) -> str:
        """The string holding a cached value: its header, then its payload (``stored.py``)."""
        return f"{self.namespace}:v:{_tagged(key)}"

    def values(self, keys: list[str]) -> list[str]:
        """:meth:`value` of each of ``keys``, for a batch of reads: a key without braces (the
        usual one) is tagged inline, which halves the cost of each name."""
        prefix = f"{self.namespace}:v:"
        return [
            f"{prefix}{{{key}}}" if "{" not in key and "}" not in key else prefix + _tagged(key)
            for key in keys
        ]

    def lock(self, key: str) -> str:
        """The write lock of a cached value; same slot as :meth:`value`."""
        return f"{self.namespace}:lock:{_tagged(key)}"

    def lease(self, name: str) -> str:
        """The leader lease of a builder registration (names hold no braces)."""
        return f"{self.namespace}:builder:{{{name}}}:lease"

    def state(self, name: str) -> str:
        """A registration's shared record (epoch, leader, last build); same slot as its lease."""
        return f"{self.namespace}:builder:{{{name}}}:state"

    def target_meta(self, target: str) -> str:
        """The hash beside a builder target, in its slot: fencing epoch, version, type, size."""
        return f"{self.namespace}:target:{{{slot_tag(target)}}}{target}"

    # -- the way back, for operators (``python -m redicache_async status``) --------------------

    def pattern(self, kind: str) -> str:
        """A ``SCAN MATCH`` pattern for one kind of key: ``v``, ``lock``, ``builder``, ``target``.
        Namespaces hold no glob characters, so they need no escaping."""
        return f"{self.namespace}:{kind}:*"

    def cached_key(self, name: str) -> str | None:
        """The user key whose value hash is ``name``, or None if ``name`` is not one."""
        return self._parse(name, "v")

    def locked_key(self, name: str) -> str | None:
        """The user key whose write lock is ``name``, or None."""
        return self._parse(name, "lock")

    def registration_name(self, name: str) -> str | None:
        """The registration whose lease or state is ``name``, or None."""
        rest = self._rest(name, "builder")
        if rest is None or not rest.startswith("{"):
            return None
        tag, _, part = rest[1:].partition("}:")
        return tag if tag and part in ("lease", "state") else None

    def target_of_meta(self, name: str) -> str | None:
        """The builder target whose meta hash is ``name``, or None."""
        rest = self._rest(name, "target")
        if rest is None or not rest.startswith("{"):
            return None
        end = rest.find("}")
        target = rest[end + 1 :] if end > 0 else ""
        return target if target and self.target_meta(target) == name else None

    def _rest(self, name: str, kind: str) -> str | None:
        prefix = f"{self.namespace}:{kind}:"
        return name[len(prefix) :] if name.startswith(prefix) else None

    def _parse(self, name: str, kind: str) -> str | None:
        rest = self._rest(name, kind)
        return None if rest is None else _untagged(rest)

    def temporary(self, target: str, token: str) -> str:
        """Where a target's next build is written before it is renamed over the target."""
        return f"{self.namespace}:tmp:{{{slot_tag(target)}}}{token}"
