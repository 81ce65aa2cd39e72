"""The client's writes of plain keys: ``set`` and ``delete``, each one script that bumps the
key's version, revokes its lock (so that no older fetch can store its result afterwards) and
announces the change; and what this process keeps of it locally."""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic
from typing import Any

from redicache_async.entry import check_stored
from redicache_async.invalidation import OP_DELETE, OP_SET
from redicache_async.keys import validate_key
from redicache_async.stored import header_flags, tag_section
from redicache_async.tags import check_tags
from redicache_async.validation import ttl_to_ms

from .loads import Loads

__all__ = ["Writes"]


class Writes(Loads):
    """``set`` and ``delete``."""

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: no expiry), with ``tags``
        (see :meth:`invalidate_tags`)."""
        validate_key(key)
        ttl_ms = ttl_to_ms(ttl)
        checked_tags = check_tags(tags) if tags else ()
        check_stored(value, "value", "set")
        payload = self._serializer.dumps(value)
        self._check_open()
        if checked_tags:
            stored = tag_section(checked_tags) + payload
            floor = self._known_invalidation(checked_tags)
        else:  # most values: no copy of the payload
            stored, floor = payload, self._cleared
        with self._watching(key) as guard:
            started = monotonic()
            try:
                value_key = self._keys.value(key)
                version = await self._gateway.call(
                    self._scripts.write_value(
                        [value_key, self._keys.lock(key), *self._stream_keys],
                        [
                            "",
                            stored,
                            ttl_ms,
                            *self._event_args(OP_SET, key),
                            floor,
                            header_flags(checked_tags),
                        ],
                    ),
                    value_key,
                )
            except BaseException:
                self._write_unknown(key)
                raise
            # Decoded once the write has left (its event goes out first): the value every
            # reader gets is the serializer's round trip, kept here too.
            canonical = self._serializer.loads(payload)
            self._written_one(
                key, canonical, guard, int(version), len(payload), started, ttl_ms, checked_tags
            )

    async def delete(self, key: str) -> None:
        """Remove ``key`` from Redis and from every process's local layer."""
        validate_key(key)
        self._check_open()
        try:
            value_key = self._keys.value(key)
            version = await self._gateway.call(
                self._scripts.delete(
                    keys=[value_key, self._keys.lock(key), *self._stream_keys],
                    args=list(self._event_args(OP_DELETE, key)),
                ),
                value_key,
            )
        except BaseException:
            self._write_unknown(key)
            raise
        self._local.discard(key)
        self._wrote(key, int(version))
        self._stats.deletes += 1
        self._stats.invalidations_sent += 1
