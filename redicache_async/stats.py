"""The counters a client and a builder keep. ``stats()`` hands out a copy, so a snapshot never
moves."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BuilderStats", "CacheStats"]


@dataclass(slots=True)
class CacheStats:
    """One client's counters since it was created."""

    local_hits: int = 0
    """Answered from the in-process layer, without I/O."""
    redis_hits: int = 0
    """Answered from Redis after a local miss."""
    misses: int = 0
    """Reads that found no value in Redis."""
    fetches: int = 0
    """Fetch functions run by this client (each under the write lock unless Redis was away)."""
    fetch_errors: int = 0
    """Fetches that raised or timed out."""
    lock_waits: int = 0
    """Loads that found the write lock held by another process and waited for its value."""
    lock_wait_timeouts: int = 0
    """Waits that ran past ``wait_timeout`` and fetched in-process instead."""
    lock_takeovers: int = 0
    """Locks this client took after waiting on another holder that left no value: it died
    (its lock expired), or its fetch failed and it let go."""
    fenced_writes: int = 0
    """Writes rejected because this client no longer held the lock (its lease had expired)."""
    writes: int = 0
    """Values written to Redis (``set``, fetch results) by this client."""
    deletes: int = 0
    invalidations_sent: int = 0
    """Events this client published (one per write or delete)."""
    invalidations_received: int = 0
    """Events from the channel that concerned a value (from any process, this one included)."""
    invalidations_ignored: int = 0
    """Messages on the channel that were malformed or foreign, and so ignored."""
    local_evictions: int = 0
    """Entries the local layer dropped to stay within its bounds."""
    local_flushes: int = 0
    """Times the listener reconnected and could not replay what it missed, so every local
    value was treated as expired (kept only for fail-safe use within ``stale_ttl``)."""
    replays: int = 0
    """Times the listener reconnected and replayed every missed invalidation from the stream."""
    circuit_opens: int = 0
    """Times the circuit breaker opened after Redis errors."""
    circuit_skips: int = 0
    """Redis calls skipped (answered without Redis) while the circuit breaker was open."""
    decode_errors: int = 0
    """Values in Redis that could not be decoded and were treated as misses."""
    foreign_values: int = 0
    """Values in Redis in a layout this release does not read (an older release's hash, a
    string without this layout's format byte, a flag it does not know): read as misses, and
    replaced by the next write (a fetch rewrites them)."""
    redis_errors: int = 0
    """Redis calls that failed or timed out."""
    eager_refreshes: int = 0
    """Background refreshes started by hits past ``eager_refresh`` of their value's TTL (each
    tries the key's lock; the process that takes it fetches)."""
    eager_refresh_errors: int = 0
    """Background refreshes that failed (their fetch raised or timed out, say): the value they
    were to replace stayed."""
    stale_served: int = 0
    """Expired local values served within ``stale_ttl`` because Redis or the fetch failed, or
    a fetch ran past the call's ``soft_timeout``."""
    local_entries: int = 0
    """Entries in the local layer when the snapshot was taken."""
    local_bytes: int = 0
    """Serialized bytes of the values in the local layer when the snapshot was taken."""


@dataclass(frozen=True, slots=True)
class BuilderStats:
    """One builder's counters since it was created, summed over its registrations
    (``CacheBuilder.stats()``; ``status(name)`` has them per registration)."""

    registrations: int
    """Registrations on this instance now."""
    leading: int
    """Registrations this instance leads now."""
    terms: int
    """Times this instance became the leader of a registration."""
    builds: int
    """Builds this instance swapped in."""
    failures: int
    """Builds of this instance that failed (the targets kept their data)."""
    ignored_messages: int
    """Messages on the builders' channel that were malformed or foreign, and so ignored."""
