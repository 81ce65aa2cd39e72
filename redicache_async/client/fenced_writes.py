"""The fenced write of a fetched value: stored only while its fetch's lock is still held, and
only if nothing that the fetch could not see (a write or delete of the key, a ``clear()``, an
``invalidate_tags`` of one of its tags) happened since the lock was claimed: the issue 8 rule,
which the write script keeps atomically where it can read the clear and tag times (one node,
Sentinel), and which a cluster writer keeps by reading them before writing and after.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic
from typing import Any

from redicache_async.errors import RedicacheError, RedisUnavailableError, describe_error
from redicache_async.invalidation import OP_DELETE, OP_SET, event_prefix
from redicache_async.leases import Lease
from redicache_async.stored import header_flags, tag_section

from .coherence import Coherence, deadline
from .state import Guard, logger

__all__ = ["FencedWrites"]


class FencedWrites(Coherence):
    """Writes of fetched values, and the events every write sends."""

    async def _write_fetched(
        self,
        key: str,
        value: Any,
        ttl_ms: int,
        tags: tuple[str, ...],
        lease: Lease,
        guard: Guard,
        *,
        claimed: bytes | str,
        checked: bool = False,
    ) -> Any:
        """Write ``value`` (not None) with ``tags``, fetched under the held ``lease`` claimed
        at ``claimed``, fenced (see ``_fetch_and_write``), and return it as readers get it (the
        serializer's round trip). The lease ends here on every path: written, released, or
        left to the orphans when Redis may have run the write without telling. ``checked``:
        the caller has read the invalidation times since the claim (``_read_invalidations``):
        the check before writing uses them."""
        try:
            payload = self._serializer.dumps(value)
            canonical = self._serializer.loads(payload)
        except BaseException:  # nothing written: no waiter may wait out the lock's ttl
            await self._locks.release(key, lease.key, lease.token)
            raise
        if self._cluster and (
            self._outdated(int(claimed), tags)
            if checked
            else await self._overtaken(int(claimed), tags)
        ):
            # Where the write's script cannot see them: a clear or an invalidation of its tags
            # since the claim, checked before writing, so that no reader anywhere sees its
            # value. (One that lands during the write is found after it.)
            self._stats.fenced_writes += 1
            await self._locks.release(key, lease.key, lease.token)
            return canonical
        started = monotonic()
        try:
            version = await self._gateway.call(
                self._scripts.write_value(
                    [self._keys.value(key), lease.key, *self._stream_keys, *self._fence_keys],
                    [
                        lease.token,
                        tag_section(tags) + payload,
                        ttl_ms,
                        *self._event_args(OP_SET, key),
                        claimed,
                        header_flags(tags),
                    ],
                ),
                lease.key,
            )
        except RedisUnavailableError:
            self._locks.orphans.add(key, lease.key, lease.token)
            logger.warning("could not store the value fetched for %r: Redis is unreachable", key)
            return canonical
        except RedicacheError as exc:
            # Refused (a script error, an ACL, OOM): nothing was written, and the lock must not
            # be left to expire while others wait on it.
            await self._locks.release(key, lease.key, lease.token)
            logger.warning("could not store the value fetched for %r: %s", key, describe_error(exc))
            return canonical
        except BaseException:
            self._locks.orphans.add(key, lease.key, lease.token)  # cancelled: the write may not run
            raise
        if version is None:
            self._stats.fenced_writes += 1
            logger.warning(
                "the lock on %r was revoked by a write or delete, or expired, before its fetch "
                "finished: the fetched value is returned but not stored",
                key,
            )
            return canonical
        if int(version) == 0 or (
            self._cluster and not await self._outlives_invalidations(key, version, tags)
        ):
            # A clear or an invalidation of its tags overtook this fetch: its callers get
            # what it fetched, nobody else; and this process drops its own older copies now,
            # not when the event comes.
            self._stats.fenced_writes += 1
            await self._locks.release(key, lease.key, lease.token)
            if int(version) == 0:
                await self._overtaken(0, tags)
            return canonical
        self._written_one(key, canonical, guard, int(version), len(payload), started, ttl_ms, tags)
        return canonical

    def _written_one(
        self,
        key: str,
        value: Any,
        guard: Guard,
        version: int,
        size: int,
        started: float,
        ttl_ms: int,
        tags: tuple[str, ...],
    ) -> None:
        """``key`` was written at ``version`` by a command sent at ``started``: counted, loads
        and reads of it in flight left behind, and ``value`` (as readers get it) kept locally."""
        self._count_write()
        self._wrote(key, version)
        self._remember(key, value, guard, version, size, deadline(started, ttl_ms), tags=tags)

    async def _outlives_invalidations(
        self, key: str, version: bytes | str, tags: tuple[str, ...]
    ) -> bool:
        """On a cluster, where a fenced write cannot see the namespace's clear time nor its
        tag times: whether the value just written at ``version`` (its fetch's claim) is newer
        than the last clear and than the last invalidation of each of its ``tags``. When it is
        not, it is taken back (unless written over meanwhile), as the write script refuses it
        elsewhere. Redis unreachable: the readers' own check of those times (they skip a value
        not newer) is all there is."""
        try:
            if not await self._overtaken(int(version), tags):
                return True
            value_key = self._keys.value(key)
            await self._gateway.call(
                self._scripts.disown(
                    keys=[value_key], args=[version, *self._event_args(OP_DELETE, key)]
                ),
                value_key,
            )
        except RedisUnavailableError:
            return not self._outdated(int(version), tags)
        return False

    def _outdated(self, version: int, tags: tuple[str, ...]) -> bool:
        return self._cleared_value(version) or self._tag_invalidated(version, tags)

    async def _overtaken(self, version: int, tags: tuple[str, ...]) -> bool:
        """Whether a value of ``version`` with ``tags`` is gone by the namespace's clear time
        and its tags' times, read afresh (``_read_invalidations``)."""
        await self._read_invalidations(tags)
        return self._outdated(version, tags)

    async def _read_invalidations(self, tags: Iterable[str]) -> None:
        """Read the namespace's clear time and the times of ``tags`` afresh, in one round trip
        (learnt, with what follows from them: see ``_on_cleared``, ``_learn_tag_times``).
        Redis unreachable: the times known stand."""
        keys = [self._keys.cleared, self._keys.tag_times]
        wanted = list(tags)
        try:
            times = await self._gateway.call(
                self._scripts.read_invalidations(keys=keys, args=wanted), keys[0]
            )
        except RedisUnavailableError:
            return
        self._note_clear_time(times[0])
        self._note_tag_times(wanted, times[1:])

    def _event_args(self, op: str, key: str) -> tuple[str, str]:
        return self._keys.channel, event_prefix(op, key, self._origin)

    def _count_write(self) -> None:
        self._stats.writes += 1
        self._stats.invalidations_sent += 1
