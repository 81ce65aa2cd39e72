"""Coherence of the client's local layer: what is kept locally, and when it must not be.

Every read or write in flight watches its key (a :class:`Guard`); an event newer than the
result that arrives meanwhile, or a write of this process, marks the guard, and the result is
then returned but not kept. Invalidations from the listener drop older local copies; a
reconnection that could not replay, or a failover, ends the freshness of everything held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

from redicache_async.errors import RedisUnavailableError
from redicache_async.invalidation import (
    OP_CLEAR,
    OP_DELETE,
    OP_SET,
    OP_TAGS,
    OP_TARGET,
    Event,
    event_tags,
)
from redicache_async.local import LocalKey
from redicache_async.replies import text
from redicache_async.stored import unpack

from .state import ClientState, Guard

__all__ = ["Coherence", "deadline"]

#: Seconds a value fetched while Redis was unreachable is served as fresh before Redis is
#: asked again.
_UNSHARED_FRESHNESS: Final = 1.0
#: The flags of a tagged value's header, as bytes and as text (``stored.py``).
_TAGGED: Final = (b"01", "01")
#: Keys the tag index may hold beyond twice the local layer's bound before it is pruned.
_INDEX_SLACK: Final = 1024


def deadline(started: float, ttl_ms: int) -> float:
    """The local deadline of a value written with ``ttl_ms`` (0: none) by a command sent at
    ``started`` (``monotonic()``): never later than the key's expiry in Redis."""
    return started + ttl_ms / 1000 if ttl_ms > 0 else math.inf


class Coherence(ClientState):
    """The guards, the local layer's writes, and the listener's callbacks."""

    def _stale_or(self, key: LocalKey, default: Any) -> Any:
        stale = self._local.stale(key)
        if stale is None:
            return default
        self._stats.stale_served += 1
        return stale.value

    def _wrote(self, key: str, version: int) -> None:
        """This process has written (or deleted) ``key`` at ``version``: reads and loads of it
        in flight started before, so their results may be older; none of them may be kept
        locally, and later callers must not join them."""
        for guard in self._guards.get(key, ()):
            if version > guard.min_version:
                guard.min_version = version
        self._loads.detach(key)
        self._values.forget(key)
        self._headed_values.forget(key)

    def _write_unknown(self, key: str) -> None:
        """A write or delete of ``key`` that may or may not have happened: nothing read before
        it may be kept, and the local copy goes."""
        self._local.discard(key)
        for guard in self._guards.get(key, ()):
            guard.void = True
        self._loads.detach(key)
        self._values.forget(key)
        self._headed_values.forget(key)

    def _remember(
        self,
        key: LocalKey,
        value: Any,
        guard: Guard,
        version: int,
        size: int,
        expires_at: float | None,
        started: float = 0.0,
        tags: tuple[str, ...] = (),
    ) -> None:
        """Keep ``value`` locally unless an event newer than it arrived while it was in flight.

        ``expires_at`` is the ``monotonic()`` deadline of the key in Redis, never later than
        its expiry there (``inf``: none; None: unknown, and then the value is not kept).
        ``started``: when a value fetched without Redis (version 0) was fetched. ``tags``:
        the value's (indexed, so that their invalidation drops it).
        """
        if guard.void or version < guard.min_version or expires_at is None:
            return
        if self._local.max_entries <= 0:
            return  # no local layer: nothing to keep, nothing to index
        if 0 < version <= self._cleared and key.__class__ is str:
            return  # cleared (a fetch claimed its lock before the clear): gone
        if tags:
            if 0 < version <= self._tag_times.latest(tags):
                return  # its fetch claimed the lock before one of its tags was invalidated
            self._index_tags(key, tags)
        # A value fetched without Redis (version 0) may differ from what Redis holds or will
        # hold: Redis is asked again soon, and meanwhile the value stays as a fallback.
        fresh_until = started + _UNSHARED_FRESHNESS if version == 0 else math.inf
        self._local.put(
            key,
            value,
            version=version,
            size=size,
            expires_at=expires_at,
            stale_ttl=self._stale_ttl,
            fresh_until=fresh_until,
        )

    def _watching(self, key: LocalKey) -> _Watching:
        """``with self._watching(key) as guard:`` watches ``key`` for the block."""
        return _Watching(self, key)

    def _watch(self, key: LocalKey) -> Guard:
        guard = Guard()
        guards = self._guards.get(key)
        if guards is None:
            self._guards[key] = [guard]
        else:
            guards.append(guard)
        return guard

    def _unwatch(self, key: LocalKey, guard: Guard) -> None:
        guards = self._guards[key]
        if len(guards) == 1:
            del self._guards[key]
        else:
            guards.remove(guard)

    def _on_event(self, event: Event) -> None:
        op = event.op
        if op in (OP_SET, OP_DELETE):  # the common case, checked first
            self._invalidate(event.key, event.version)
            # A load or read that started before this write is out of date for later callers.
            self._loads.detach(event.key)
            self._values.forget(event.key)
            self._headed_values.forget(event.key)
        elif op == OP_CLEAR:
            self._on_cleared(event.version)
            return
        elif op == OP_TAGS:
            self._on_tags_invalidated(event_tags(event), event.version)
            return
        elif op == OP_TARGET:
            self._invalidate(("target", event.key), event.version)
            for field in self._target_fields.pop(event.key, ()):
                self._local.discard(("target", event.key, field))
            return
        self._wakeups.notify(event.key)

    def _invalidate(self, key: LocalKey, version: int) -> None:
        self._stats.invalidations_received += 1
        for guard in self._guards.get(key, ()):
            if version > guard.min_version:
                guard.min_version = version
        self._local.discard(key, below_version=version)

    def _on_cleared(self, cleared: int) -> None:
        """The namespace was cleared at version ``cleared``: every value not newer is gone,
        local copies included (not even a stale one is served). Loads and reads in flight end
        as they will, but a result not newer than the clear is not kept (``_remember``), and
        waiters on locks look again."""
        if cleared <= self._cleared:
            return
        self._cleared = cleared
        self._stats.invalidations_received += 1
        self._local.clear()
        self._tagged.clear()
        self._tagged_count = 0
        self._loads.detach_all()
        self._values.forget_all()
        self._wakeups.notify_all()

    def _on_tags_invalidated(self, tags: tuple[str, ...], at: int) -> None:
        """``tags`` were invalidated at version ``at``: the local copies that carry one of them
        and are not newer go (not even kept as stale), and later callers join no load running
        now (its fetch may have started before)."""
        self._stats.invalidations_received += 1
        for tag in tags:
            self._tag_times.note(tag, at)
            self._drop_tagged(tag, at)
        self._loads.detach_all()
        self._values.forget_all()
        self._headed_values.forget_all()

    def _drop_tagged(self, tag: str, at: int) -> None:
        """Drop the local copies with ``tag`` not newer than ``at``, its invalidation."""
        keys = self._tagged.get(tag)
        if not keys:
            return
        local = self._local
        # Copies newer than the invalidation stay, and stay indexed (a later one must find
        # them: an older event can come after a newer write).
        kept = {key for key in keys if not local.discard(key, below_version=at + 1)}
        kept = {key for key in kept if local.holds(key)}
        self._tagged_count -= len(keys) - len(kept)
        if kept:
            self._tagged[tag] = kept
        else:
            del self._tagged[tag]

    def _index_tags(self, key: LocalKey, tags: tuple[str, ...]) -> None:
        tagged = self._tagged
        for tag in tags:
            keys = tagged.get(tag)
            if keys is None:
                tagged[tag] = {key}
            else:
                keys.add(key)
        self._tagged_count += len(tags)
        if self._tagged_count > 2 * self._local.max_entries + _INDEX_SLACK:
            self._prune_tag_index()

    def _prune_tag_index(self) -> None:
        """Forget the keys no longer held locally (the index holds only what an invalidation
        must drop)."""
        held = self._local.holds
        for tag, keys in list(self._tagged.items()):
            keys.intersection_update([key for key in keys if held(key)])
            if not keys:
                del self._tagged[tag]
        self._tagged_count = sum(len(keys) for keys in self._tagged.values())

    async def _learn_tag_times(self, tags: tuple[str, ...] | list[str], *, fresh: bool) -> None:
        """Read the invalidation times of ``tags`` (``fresh``: all) or of those not known yet. While
        the listener may be missing events none is known: all are read. Redis unreachable: the
        times known stand, an unknown one counts as never invalidated (as with the clear time,
        see ``_read_cleared_if_deaf``; on one node the value could not have been read)."""
        wanted = list(tags) if fresh or not self._local.trusted else self._tag_times.unknown(tags)
        if not wanted:
            return
        key = self._keys.tag_times
        try:
            times = await self._gateway.call(self._redis.hmget(key, wanted), key)
        except RedisUnavailableError:
            return
        self._note_tag_times(wanted, times)

    def _note_tag_times(self, tags: Iterable[str], times: Iterable[Any]) -> None:
        """The times read of ``tags`` (None: never invalidated)."""
        for tag, at in zip(tags, times, strict=True):
            time = int(text(at)) if at else 0
            if self._tag_times.note(tag, time):
                # Learnt before its event arrives (a write the invalidation overtook, a
                # client whose listener is away): its copies go as the event would drop them.
                self._drop_tagged(tag, time)

    def _tags_of(self, replies: list[Any]) -> list[str]:
        """The tags of ``replies`` (stored values, as reads answer them), whose times must be
        known before they are taken (``_learn_tag_times``); most values have none, and this
        costs them a look at their flags."""
        tags: dict[str, None] = {}
        for reply in replies:
            if reply and reply.__class__ is not int and reply[29:31] in _TAGGED:
                stored = unpack(reply)
                if stored is not None:
                    tags.update(dict.fromkeys(stored.tags))
        return list(tags)

    def _known_invalidation(self, tags: tuple[str, ...]) -> int:
        """The latest clear, or invalidation of one of ``tags``, that this client knows of:
        the floor of a write's version (``_WRITE_ONE`` in ``scripts.py``)."""
        return max(self._cleared, self._tag_times.latest(tags))

    def _tag_invalidated(self, version: int, tags: tuple[str, ...]) -> bool:
        """Whether a value of ``version`` with ``tags`` is gone (by the times known)."""
        return bool(tags) and version <= self._tag_times.latest(tags)

    async def _learn_clear_time(self) -> None:
        """Read the namespace's clear time from Redis, through the gateway. Events keep it
        current; while the listener may be missing them, every read of Redis reads it first
        (``_read_cleared_if_deaf``)."""
        self._note_clear_time(await self._gateway.call(self._read_clear_time(), self._keys.cleared))

    async def _resync_clear_time(self) -> None:
        """The listener's ``on_resync``: the clear time, read afresh at each subscription in
        case a clear event was missed. Not through the circuit breaker, which only closes once
        the listener has subscribed again; its failure fails the subscription (retried)."""
        self._note_clear_time(await self._gateway.bounded(self._read_clear_time()))

    async def _read_clear_time(self) -> Any:
        # Read as a lone value is (a plain GET only where no replica may answer it).
        key = self._keys.cleared
        if self._plain_reads:
            return await self._scripts.read_value(key)
        return (await self._scripts.read_values([key]))[0]

    def _note_clear_time(self, cleared: Any) -> None:
        if cleared:
            self._on_cleared(int(text(cleared)))

    async def _read_cleared_if_deaf(self, value_key: str) -> bool:
        """While the listener may be missing events, learn the clear time before a read of
        ``value_key`` (a clear it missed must not leave its values readable here); False when
        the node that serves ``value_key`` is unreachable.

        On a cluster the clear time may live on a dead master while ``value_key``'s node is
        healthy: the read goes on with the clear time last learned, as a write does (see
        ``_outlives_clear``); a dead master costs only its own slots. No clear can start
        while that master is down (it writes the clear time first)."""
        if self._local.trusted:
            return True
        try:
            await self._learn_clear_time()
        except RedisUnavailableError:
            breakers = self._gateway.breaker
            return breakers.for_key(self._keys.cleared) is not breakers.for_key(value_key)
        return True

    def _cleared_value(self, version: int) -> bool:
        """Whether a value of ``version`` read from Redis was cleared (and so is no value)."""
        return version <= self._cleared

    def _on_subscribed(self, caught_up: bool) -> None:
        self._subscriptions += 1
        self._gateway.breaker.close()
        if not caught_up:
            # Events may have been missed while the listener was away.
            self._flush_local(count=self._subscriptions > 1)
        else:
            self._stats.replays += 1
        # Values fetched while Redis was away were never shared: read Redis's instead.
        self._local.expire(stale_ttl=self._stale_ttl, only_version=0)
        self._local.trusted = True
        self._wakeups.notify_all()

    def _on_failover(self) -> None:
        # Writes acknowledged by the old master may be lost, and no event says which.
        self._flush_local(count=True)
        self._wakeups.notify_all()

    def _flush_local(self, *, count: bool) -> None:
        """Nothing held locally is fresh any more (copies stay for fail-safe use within
        stale_ttl), reads in flight are not kept, and later callers join none of the loads and
        reads running now (a write they did not hear of may have overtaken them)."""
        if count:
            self._stats.local_flushes += 1
        self._local.expire(stale_ttl=self._stale_ttl)
        self._loads.detach_all()
        self._reads.detach_all()
        self._values.forget_all()
        self._headed_values.forget_all()
        self._target_fields.clear()
        self._tag_times.forget()
        for guards in self._guards.values():
            for guard in guards:
                guard.void = True

    def _on_listener_lost(self) -> None:
        # Invalidations may be missed from now on: until the listener is back (and has replayed
        # what it missed), local copies are fallbacks, not answers.
        self._local.trusted = False

    def _on_ignored(self) -> None:
        self._stats.invalidations_ignored += 1


class _Watching:
    """A key watched for the length of a ``with`` block (see ``Coherence._watching``): a class,
    as ``contextlib.contextmanager``'s generator costs a write about 3 µs more."""

    __slots__ = ("_guard", "_key", "_owner")

    def __init__(self, owner: Coherence, key: LocalKey) -> None:
        self._owner = owner
        self._key = key

    def __enter__(self) -> Guard:
        self._guard = self._owner._watch(self._key)
        return self._guard

    def __exit__(self, *exc_info: object) -> None:
        self._owner._unwatch(self._key, self._guard)
