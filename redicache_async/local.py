"""The in-process layer: a bounded cache of decoded values, each with the version and the
deadline it had in Redis. A hit is a dict lookup, a clock read and one flag set; nothing here
does I/O.

Recency is kept the CLOCK way (second chance), not by reordering on every hit: a hit only sets
the entry's ``used`` flag. Entries wait for eviction in a ring, in insertion order; when the
layer is over a bound, the entry at the head of the ring goes, unless it was used since the
hand last passed it: then it loses its flag and goes round again. An entry that was put and
never read afterwards (a scan of cold keys) is thus evicted before the ones being read. A
reordering LRU (``OrderedDict.move_to_end``) cost a hit three more memory reads at 100k entries
and beyond (the moved node and its two neighbours), and its linked list cost memory per entry.

For the same reason an entry *is* its freshness deadline: :class:`LocalEntry` is a ``float``
whose value is that deadline, so a hit compares the clock with the entry it already holds,
instead of reading a float object of its own from elsewhere in memory (at 100k entries that read
was as slow as the dict lookup itself). A deadline never changes in place: ending an entry's
freshness (:meth:`LocalLayer.expire`) puts a copy with the earlier deadline in its place.

Versions only move forward: a put older than a fresh entry is refused, so a slow reply can never
replace what this process wrote after it asked. While the layer is not ``trusted`` (its owner
cannot hear invalidations: the listener is disconnected), nothing in it is fresh; entries stay
available to :meth:`LocalLayer.stale` as a fail-safe."""

from __future__ import annotations

import math
from collections import deque
from time import monotonic
from typing import Any

#: A user's key, or a tuple for what is not a plain value (``("target", key[, field])``), so
#: that the two can never collide.
LocalKey = str | tuple[str, ...]

__all__ = ["LocalEntry", "LocalKey", "LocalLayer"]

_NEVER = math.inf
#: Dead slots the eviction ring may hold beyond as many as there are live entries.
_RING_SLACK = 64


class LocalEntry(float):
    """A local copy. Its ``float`` value is the ``time.monotonic()`` instant until which it is
    fresh (``inf``: no expiry), also given as :attr:`expires_at`; compare entries by identity,
    not with ``==`` (that compares deadlines)."""

    __slots__ = ("key", "size", "stale_until", "used", "value", "version")

    value: Any
    version: int
    #: Bytes of the serialized value, for the layer's budget.
    size: int
    #: Until when an expired entry may still be served as a fail-safe.
    stale_until: float
    #: The entry's key, so that a slot of the eviction ring can tell whether it is still the
    #: live entry for its key (a key dropped and put again leaves its old slot behind).
    key: LocalKey
    #: Read since the eviction hand last passed it: spared once (the CLOCK reference bit).
    used: bool

    def __new__(
        cls,
        value: Any,
        version: int,
        size: int,
        expires_at: float,
        stale_until: float,
        key: LocalKey = "",
    ) -> LocalEntry:
        entry = super().__new__(cls, expires_at)
        entry.value = value
        entry.version = version
        entry.size = size
        entry.stale_until = stale_until
        entry.key = key
        entry.used = False
        return entry

    @property
    def expires_at(self) -> float:
        """The ``time.monotonic()`` deadline taken from the Redis TTL (``inf``: no expiry)."""
        return float(self)

    def __repr__(self) -> str:
        return (
            f"LocalEntry(value={self.value!r}, version={self.version}, size={self.size}, "
            f"expires_at={float(self)!r}, stale_until={self.stale_until!r}, key={self.key!r})"
        )


class LocalLayer:
    """A cache bounded by entry count and by the bytes of the values' serialized form, evicting
    by CLOCK (second chance): recently read entries outlive entries nobody read."""

    __slots__ = (
        "_ring",
        "bytes",
        "entries",
        "evictions",
        "hits",
        "max_bytes",
        "max_entries",
        "trusted",
    )

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: The entries by key. Only this class changes it; the client's hit path
        #: (``CacheClient.get_or_init``) reads it directly, as :meth:`fresh` does: the call
        #: alone would cost that hit a fifth of its time.
        self.entries: dict[LocalKey, LocalEntry] = {}
        #: The eviction order: entries in the order they were put (and spared). It may hold
        #: slots of entries already gone (dropped or replaced); they are skipped, and the ring
        #: is rebuilt when they outnumber the live ones.
        self._ring: deque[LocalEntry] = deque()
        self.bytes = 0
        self.evictions = 0
        #: Lookups answered by :meth:`fresh` (the owner's local hits).
        self.hits = 0
        #: False while invalidations may be missed: then no entry is fresh.
        self.trusted = True

    def __len__(self) -> int:
        return len(self.entries)

    def fresh(self, key: LocalKey) -> LocalEntry | None:
        """The entry for ``key`` if it has not expired (a hit: counted in :attr:`hits`); marks
        it used, which spares it the next time the eviction hand passes."""
        entry = self.entries.get(key)
        if entry is None or not self.trusted:
            return None
        # The entry is its deadline (a float): no other object to read, and no clock read for
        # an entry that never expires.
        if entry != _NEVER and entry <= monotonic():
            if entry.stale_until <= monotonic():
                self._remove(key, entry)
            return None
        self.hits += 1
        entry.used = True
        return entry

    def holds(self, key: LocalKey) -> bool:
        """Whether an entry for ``key`` is held, fresh or not."""
        return key in self.entries

    def peek(self, key: LocalKey) -> LocalEntry | None:
        """:meth:`fresh` without counting a hit: a look for tests and diagnostics."""
        hits = self.hits
        entry = self.fresh(key)
        self.hits = hits
        return entry

    def stale(self, key: LocalKey) -> LocalEntry | None:
        """The entry for ``key`` while it is within its fail-safe window, fresh or not."""
        entry = self.entries.get(key)
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
        old = self.entries.get(key)
        if old is not None and old.version > version and old.expires_at > monotonic():
            return False  # never backwards: the newer entry stays
        if size > self.max_bytes or self.max_entries <= 0:
            self.discard(key)
            return False
        if old is not None:
            self.bytes -= old.size
        stale_until = expires_at + stale_ttl if not math.isinf(expires_at) else expires_at
        fresh = min(expires_at, fresh_until)
        entry = LocalEntry(value, version, size, fresh, stale_until, key)
        self.entries[key] = entry
        self.bytes += size
        ring = self._ring
        ring.append(entry)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._evict_one(entry)
        if len(ring) > 2 * len(self.entries) + _RING_SLACK:
            self._compact()
        return True

    def _evict_one(self, spare: LocalEntry) -> None:
        """Evict the first entry the hand finds unused since it last passed (never ``spare``,
        the entry being put). Ends: each turn drops a dead slot, clears a flag or evicts."""
        ring = self._ring
        entries = self.entries
        while True:
            candidate = ring.popleft()
            key = candidate.key
            if entries.get(key) is not candidate:
                continue  # a dead slot: that entry was dropped or replaced
            if candidate.used or candidate is spare:
                candidate.used = False
                ring.append(candidate)
                continue
            del entries[key]
            self.bytes -= candidate.size
            self.evictions += 1
            return

    def _compact(self) -> None:
        entries = self.entries
        self._ring = deque(slot for slot in self._ring if entries.get(slot.key) is slot)

    def discard(self, key: LocalKey, *, below_version: int | None = None) -> bool:
        """Drop ``key`` (only if its version is older than ``below_version``, when given)."""
        entry = self.entries.get(key)
        if entry is None or (below_version is not None and entry.version >= below_version):
            return False
        self._remove(key, entry)
        return True

    def clear(self) -> None:
        self.entries.clear()
        self._ring.clear()
        self.bytes = 0

    def expire(self, *, stale_ttl: float, only_version: int | None = None) -> int:
        """End the freshness of every entry (or of those with version ``only_version``) now;
        each stays available to :meth:`stale` for ``stale_ttl`` more seconds at most.
        Returns how many entries were expired."""
        now = monotonic()
        stale_until = now + stale_ttl
        expired = 0
        for key, entry in list(self.entries.items()):
            if only_version is not None and entry.version != only_version:
                continue
            expired += 1
            if stale_ttl <= 0:
                self._remove(key, entry)
                continue
            if entry > now or entry.stale_until > stale_until:
                self._replace(entry, min(float(entry), now), min(entry.stale_until, stale_until))
        if len(self._ring) > 2 * len(self.entries) + _RING_SLACK:
            self._compact()
        return expired

    def _replace(self, entry: LocalEntry, expires_at: float, stale_until: float) -> None:
        """Put a copy of ``entry`` with other deadlines in its place (a float cannot change);
        its old ring slot is dead from now on."""
        copy = LocalEntry(
            entry.value, entry.version, entry.size, expires_at, stale_until, entry.key
        )
        copy.used = entry.used
        self.entries[entry.key] = copy
        self._ring.append(copy)

    def _remove(self, key: LocalKey, entry: LocalEntry) -> None:
        del self.entries[key]
        self.bytes -= entry.size
