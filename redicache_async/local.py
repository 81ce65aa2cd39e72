"""The in-process layer: a bounded LRU of decoded values, each with the version and the
deadline it had in Redis. A hit is a dict lookup and a clock read; nothing here does I/O.

Versions only move forward: a put older than a fresh entry is refused, so a slow reply can never
replace what this process wrote after it asked. While the layer is not ``trusted`` (its owner
cannot hear invalidations: the listener is disconnected), nothing in it is fresh; entries stay
available to :meth:`LocalLayer.stale` as a fail-safe."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from time import monotonic
from typing import Any

#: A user's key, or a tuple for what is not a plain value (``("target", key[, field])``), so
#: that the two can never collide.
LocalKey = str | tuple[str, ...]

__all__ = ["LocalEntry", "LocalKey", "LocalLayer"]

_NEVER = math.inf


@dataclass(slots=True, eq=False)
class LocalEntry:
    value: Any
    version: int
    #: Bytes of the serialized value, for the layer's budget.
    size: int
    #: ``time.monotonic()`` deadline taken from the Redis TTL (``inf``: no expiry).
    expires_at: float
    #: Until when an expired entry may still be served as a fail-safe.
    stale_until: float


class LocalLayer:
    """LRU bounded by entry count and by the bytes of the values' serialized form."""

    __slots__ = ("_entries", "bytes", "evictions", "hits", "max_bytes", "max_entries", "trusted")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[LocalKey, LocalEntry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        #: Lookups answered by :meth:`fresh` (the owner's local hits).
        self.hits = 0
        #: False while invalidations may be missed: then no entry is fresh.
        self.trusted = True

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, key: LocalKey) -> LocalEntry | None:
        """The entry for ``key`` if it has not expired (a hit: counted in :attr:`hits`); marks
        it most recently used."""
        entry = self._entries.get(key)
        if entry is None or not self.trusted:
            return None
        if entry.expires_at != _NEVER and entry.expires_at <= monotonic():
            if entry.stale_until <= monotonic():
                self._remove(key, entry)
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def peek(self, key: LocalKey) -> LocalEntry | None:
        """:meth:`fresh` without counting a hit: a look for tests and diagnostics."""
        hits = self.hits
        entry = self.fresh(key)
        self.hits = hits
        return entry

    def stale(self, key: LocalKey) -> LocalEntry | None:
        """The entry for ``key`` while it is within its fail-safe window, fresh or not."""
        entry = self._entries.get(key)
        if entry is None or entry.stale_until <= monotonic():
            return None
        return entry

    def put(
        self,
        key: LocalKey,
        value: Any,
        *,
        version: int,
        size: int,
        expires_at: float,
        stale_ttl: float,
        fresh_until: float = _NEVER,
    ) -> bool:
        """Store ``value``; returns False when it is not kept (layer off, value too big, or
        older than the fresh entry it would replace).

        It is fresh until ``expires_at`` (or ``fresh_until``, if sooner) and may be served as a
        fail-safe until ``expires_at + stale_ttl``."""
        old = self._entries.get(key)
        if old is not None and old.version > version and old.expires_at > monotonic():
            return False  # never backwards: the newer entry stays
        if size > self.max_bytes or self.max_entries <= 0:
            self.discard(key)
            return False
        if old is not None:
            del self._entries[key]
            self.bytes -= old.size
        stale_until = expires_at + stale_ttl if not math.isinf(expires_at) else expires_at
        fresh = min(expires_at, fresh_until)
        self._entries[key] = LocalEntry(value, version, size, fresh, stale_until)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            self.evictions += 1
        return True

    def discard(self, key: LocalKey, *, below_version: int | None = None) -> bool:
        """Drop ``key`` (only if its version is older than ``below_version``, when given)."""
        entry = self._entries.get(key)
        if entry is None or (below_version is not None and entry.version >= below_version):
            return False
        self._remove(key, entry)
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def expire(self, *, stale_ttl: float, only_version: int | None = None) -> int:
        """End the freshness of every entry (or of those with version ``only_version``) now;
        each stays available to :meth:`stale` for ``stale_ttl`` more seconds at most.
        Returns how many entries were expired."""
        now = monotonic()
        stale_until = now + stale_ttl
        expired = 0
        for key, entry in list(self._entries.items()):
            if only_version is not None and entry.version != only_version:
                continue
            expired += 1
            if stale_ttl <= 0:
                self._remove(key, entry)
                continue
            entry.expires_at = min(entry.expires_at, now)
            entry.stale_until = min(entry.stale_until, stale_until)
        return expired

    def _remove(self, key: LocalKey, entry: LocalEntry) -> None:
        del self._entries[key]
        self.bytes -= entry.size
