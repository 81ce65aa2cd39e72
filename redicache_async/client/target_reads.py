"""The client's reads of builder targets: decoded, kept locally under ``("target", key)`` (or
``("target", key, field)``) when a builder wrote them, so that its next swap invalidates them."""

from __future__ import annotations

import math
from typing import Any

from redicache_async.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RedisUnavailableError,
)
from redicache_async.keys import encoded, validate_key
from redicache_async.local import LocalKey
from redicache_async.replies import text
from redicache_async.targets import decode_target, empty_target

from .loads import Loads
from .state import logger

__all__ = ["TargetReads", "check_field"]


class TargetReads(Loads):
    """``get_target``: through the local layer, else a read from Redis."""

    async def get_target(self, key: str, field: str | None = None) -> Any:
        """The data a :class:`CacheBuilder` of this namespace keeps at target ``key``, decoded,
        through the local layer (each rebuild invalidates it everywhere).

        A string target gives its value; a list, set or zset target a list of items (a set's
        sorted by their JSON, a zset's by score); a hash target a dict of field to item, or
        with ``field`` that one item (None if absent). None when the target does not exist.
        A key that no builder wrote is read from Redis every time (nothing would invalidate
        a local copy).
        """
        # Checked before the local layer, so that a call fails alike whether it would hit or
        # not. A field is looked up in its own local copy, never in the whole target's: a dict
        # there may be a string target's value, of which a cold read of a field raises.
        if key.__class__ is not str:
            validate_key(key)
        if field is not None and field.__class__ is not str:
            check_field(field)
        local_key: LocalKey = ("target", key) if field is None else ("target", key, field)
        entry = self._local.fresh(local_key)
        if entry is not None:
            return entry.value
        return await self._get_target_beyond_local(key, field, local_key)

    async def _get_target_beyond_local(
        self, key: str, field: str | None, local_key: LocalKey
    ) -> Any:
        """:meth:`get_target` past a local miss. Apart, because its closure of the arguments
        would make a cell for each on every call, which would cost a hit as much as everything
        else it does."""
        validate_key(key)
        if field is not None:
            check_field(field)
        self._check_open()
        return await self._join(self._reads, local_key, lambda: self._read_target(key, field))

    async def _read_target(self, key: str, field: str | None) -> Any:
        local_key: LocalKey = ("target", key) if field is None else ("target", key, field)
        with self._watching(("target", key)) as guard:
            try:
                reply = await self._gateway.call(
                    self._scripts.read_target(
                        keys=[key, self._keys.target_meta(key)], args=[field or ""]
                    ),
                    key,
                )
            except RedisUnavailableError:
                return self._stale_or(local_key, None)
            kind, data, version = text(reply[0]), reply[1], int(reply[2])
            if field is not None and kind not in ("hash", "none"):
                raise InvalidArgumentError(f"target {key!r} is a {kind}, not a hash")
            if data is not None:
                try:
                    value = (
                        decode_target(kind, data, self._serializer.loads)
                        if field is None
                        else self._serializer.loads(
                            data if isinstance(data, bytes) else data.encode()
                        )
                    )
                except Exception as exc:
                    self._stats.decode_errors += 1
                    logger.warning("target %r in Redis cannot be decoded: %r", key, exc)
                    return None
                size = _reply_size(data)
            elif version and field is None and text(reply[4]) == "0":
                value, size = empty_target(text(reply[3])), 0  # the last build was empty
            else:
                self._stats.misses += 1
                return None
            self._stats.redis_hits += 1
            if version:
                if field is not None:
                    self._target_fields.setdefault(key, set()).add(field)
                self._remember(local_key, value, guard, version, size, math.inf)
            return value


def check_field(field: object) -> None:
    """A hash field to read: a non-empty str (the read script takes '' for the whole hash)
    that can be sent to Redis."""
    if not isinstance(field, str):
        raise InvalidArgumentTypeError(f"field must be a str, not {type(field).__name__}")
    if not field:
        raise InvalidArgumentError("field must not be empty")
    encoded(field, "field")


def _reply_size(data: Any) -> int:
    """Bytes of a target read's payload, for the local layer's budget."""
    if isinstance(data, bytes | str):
        return len(data)
    return sum(len(part) for part in data)
