"""The client's read path for plain keys: a value read from Redis, else its lock taken and a
fetch run and written (fenced), else a wait for the process that holds the lock; and, while
Redis is unreachable, an answer without it (a stale local value, or a fetch in this process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from time import monotonic
from typing import Any, Final

from redis.exceptions import ReadOnlyError

from redicache_async.entry import unwrap
from redicache_async.errors import (
    ClientClosedError,
    RedisUnavailableError,
    RegenerationInProgress,
)
from redicache_async.leases import Lease, new_token
from redicache_async.local import LocalKey
from redicache_async.locks import SingleFlight, wait_event
from redicache_async.soft_timeout import wait_or_fall_back
from redicache_async.stored import unpack

from .coherence import deadline
from .fenced_writes import FencedWrites
from .state import MISSING, UNDECODABLE, UNREACHABLE, UNWATCHED, Fetch, Guard, logger

__all__ = ["Loads", "StoredReply"]

#: What a read makes of one key's reply: ``(key, guard, reply) -> value or MISSING, ...``.
StoredReply = Callable[[str, Guard, Any], Any]

_FIRST_POLL: Final = 0.1
_MAX_POLL: Final = 1.0


class Loads(FencedWrites):
    """Loads of plain keys, each run once per key in this process (``_join``)."""

    async def _join(
        self,
        flights: SingleFlight[Any],
        key: LocalKey,
        load: Callable[[], Coroutine[Any, Any, Any]],
        soft_timeout: float | None = None,
    ) -> Any:
        return await self._await_joined(key, flights.run(key, load), soft_timeout)

    async def _await_joined(
        self, key: LocalKey, joined: Awaitable[Any], soft_timeout: float | None = None
    ) -> Any:
        """The outcome of the shared load ``joined`` (``SingleFlight.run``'s) of ``key``, as
        ``_join`` waits for it: a close of the client that cancels the load is
        :class:`ClientClosedError` to its callers, not a cancellation of theirs."""
        try:
            if soft_timeout is None:
                return await joined
            # Past it, the key's local copy within stale_ttl (or one written here meanwhile).
            return await wait_or_fall_back(joined, soft_timeout, lambda: self._stale_or(key, None))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing is not None and task is not None and not task.cancelling():
                # the shared load was cancelled by aclose(), not this caller
                raise ClientClosedError("the client was closed while this call waited") from None
            raise

    async def _resolve(
        self, key: str, fetch: Fetch, ttl_ms: int, *, ignore_value: bool = False
    ) -> Any:
        """Read ``key`` from Redis, or take its lock and fetch, or wait for the holder.

        With ``ignore_value`` a value in Redis that cannot be decoded is fetched anew."""
        loop = asyncio.get_running_loop()
        value_key, lock_key = self._keys.value(key), self._keys.lock(key)
        ignored = "1" if ignore_value else "0"
        # Versions not above it are no value: one with a tag invalidated meanwhile (its times
        # are read here, not in the script: on a cluster they live in another slot).
        floor = 0
        deadline: float | None = None
        poll = _FIRST_POLL
        wake = self._wakeups.register(key)
        try:
            with self._watching(key) as guard:
                while True:
                    token = new_token()
                    try:
                        if not self._local.trusted:
                            await self._learn_clear_time()
                        reply = await self._gateway.call(
                            self._scripts.read_or_lock(
                                keys=[value_key, lock_key],
                                args=[token, self._lock_ms, ignored, max(self._cleared, floor)],
                            ),
                            value_key,
                        )
                    except RedisUnavailableError as exc:
                        self._note_replica(exc)
                        self._locks.unanswered(exc, key, lock_key, token)
                        return await self._fetch_without_redis(key, fetch, ttl_ms, guard)
                    except asyncio.CancelledError:
                        self._locks.orphans.add(key, lock_key, token)  # the claim may have run
                        raise
                    status = reply[0]
                    if status == 1:
                        stored = unpack(reply[1])
                        if stored is None:
                            self._stats.foreign_values += 1
                            ignored = "1"
                            continue
                        version, expires_ms, payload, tags = stored
                        if self._cleared_value(version):  # a clear heard meanwhile
                            continue
                        if tags:
                            await self._learn_tag_times(tags, fresh=False)
                            if self._tag_invalidated(version, tags):
                                floor = max(floor, self._tag_times.latest(tags))
                                continue
                        value = self._decode(key, payload)
                        if value is UNDECODABLE:
                            ignored = "1"
                            continue
                        self._stats.redis_hits += 1
                        expires_at = self._clock.deadline(expires_ms)
                        self._remember(
                            key, value, guard, version, len(payload), expires_at, tags=tags
                        )
                        return value
                    if deadline is None:
                        self._stats.misses += 1
                    if status == 2:
                        if deadline is not None:  # we waited: its holder left no value
                            self._stats.lock_takeovers += 1
                        lease = self._locks.lease(self._keys.lock(key), token)
                        return await self._fetch_and_write(
                            key, fetch, ttl_ms, lease, guard, claimed=reply[1]
                        )
                    # Another process holds the lock: sleep until its event, the lock's expiry
                    # or the next poll, whichever comes first.
                    if deadline is None:
                        self._stats.lock_waits += 1
                        deadline = loop.time() + self._wait_timeout
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        self._stats.lock_wait_timeouts += 1
                        logger.warning("gave up waiting for the lock on %r; fetching here", key)
                        return await self._fetch_without_redis(key, fetch, ttl_ms, None)
                    pause = min(poll, remaining)
                    lock_pttl = int(reply[1])
                    if lock_pttl > 0:
                        pause = min(pause, lock_pttl / 1000 + 0.002)
                    await wait_event(wake, pause)
                    poll = min(poll * 2, _MAX_POLL)
        finally:
            self._wakeups.unregister(key, wake)

    async def _read_value(self, key: str, stored: StoredReply | None = None) -> Any:
        """Read ``key`` alone (see ``batching.py``): its value, kept locally, or ``MISSING``,
        ``UNDECODABLE``, ``UNREACHABLE``; with ``stored``, what it makes of the reply.

        A plain GET, unless this client may be talking to a replica (see ``_plain_reads``): a
        replica answers GET, and what it answers may be old or missing while it resyncs."""
        if not self._plain_reads:
            return (await self._read_values([key], stored))[0]
        value_key = self._keys.value(key)
        if not await self._read_cleared_if_deaf(value_key):
            return UNREACHABLE
        watched = self._keeps_reads(stored)
        guard = self._watch(key) if watched else UNWATCHED
        try:
            try:
                reply = await self._gateway.call(self._scripts.read_value(value_key), value_key)
            except RedisUnavailableError:
                return UNREACHABLE
            tags = self._tags_of([reply])
            if tags:
                await self._learn_tag_times(tags, fresh=False)
            return (stored or self._stored_value)(key, guard, reply)
        finally:
            if watched:
                self._unwatch(key, guard)

    def _keeps_reads(self, stored: StoredReply | None) -> bool:
        """Whether what a read finds is kept (locally, or by ``stored``), so that the events
        heard during the read must be watched: without a local layer nothing read is kept, and
        no event can make it stale there."""
        return stored is not None or self._local.max_entries > 0

    async def _read_values(self, keys: list[str], stored: StoredReply | None = None) -> list[Any]:
        """Read ``keys`` in one command (see ``batching.py``): each one's value, kept locally,
        or ``MISSING``, ``UNDECODABLE``, ``UNREACHABLE``; with ``stored``, what it makes of
        each reply. A script, which a replica refuses."""
        names = self._keys.values(keys)
        if not await self._read_cleared_if_deaf(names[0]):
            return [UNREACHABLE] * len(keys)
        watched = self._keeps_reads(stored)
        guards = [self._watch(key) for key in keys] if watched else [UNWATCHED] * len(keys)
        try:
            try:
                replies = await self._gateway.call(self._scripts.read_values(names), names[0])
            except RedisUnavailableError:
                return [UNREACHABLE] * len(keys)
            tags = self._tags_of(replies)
            if tags:
                await self._learn_tag_times(tags, fresh=False)
            stored_value = stored or self._stored_value
            return [
                stored_value(key, guard, reply)
                for key, guard, reply in zip(keys, guards, replies, strict=True)
            ]
        finally:
            if watched:
                for key, guard in zip(keys, guards, strict=True):
                    self._unwatch(key, guard)

    def _stored_value(self, key: str, guard: Guard, reply: Any) -> Any:
        """A read's ``reply`` (a stored string, None, or 0 for a key of another type) as a
        value, kept locally, or ``MISSING`` (no value, one in a layout this release skips:
        counted, or one that a clear or its tags' invalidation removed) or ``UNDECODABLE``. The
        times of its tags are known (``_learn_tags_of``)."""
        if reply is None:
            return MISSING
        stored = None if reply.__class__ is int else unpack(reply)  # int: a key of another type
        if stored is None:
            self._stats.foreign_values += 1
            return MISSING
        version, expires_ms, payload, tags = stored
        if version <= self._cleared or (tags and self._tag_invalidated(version, tags)):
            return MISSING
        try:  # (``_decode``, inline: this runs for every value read from Redis)
            value = self._serializer.loads(payload)
        except Exception as exc:
            return self._undecodable(key, exc)
        self._stats.redis_hits += 1
        if guard is not UNWATCHED:
            expires_at = self._clock.deadline(expires_ms)
            self._remember(key, value, guard, version, len(payload), expires_at, tags=tags)
        return value

    async def _load(
        self, key: str, fetch: Fetch, ttl_ms: int, read: Any, soft_timeout: float | None
    ) -> Any:
        """The value of ``key`` after a read that found none it could use (``read``:
        ``MISSING``, ``UNDECODABLE`` or ``UNREACHABLE``): one load per key in this process,
        waited for ``soft_timeout`` at most when a stale copy can answer (see ``_join``)."""
        if read is UNREACHABLE:
            return await self._join(
                self._loads,
                key,
                lambda: self._answer_without_redis(key, fetch, ttl_ms),
                soft_timeout,
            )
        ignore = read is UNDECODABLE
        return await self._join(
            self._loads,
            key,
            lambda: self._resolve(key, fetch, ttl_ms, ignore_value=ignore),
            soft_timeout,
        )

    async def _regenerate(self, key: str, fetch: Fetch, ttl_ms: int) -> Any:
        lease = self._locks.lease(self._keys.lock(key))
        with self._watching(key) as guard:
            try:
                claimed = await self._gateway.call(self._claim(lease), lease.key)
            except RedisUnavailableError as exc:
                self._locks.unanswered(exc, key, lease.key, lease.token)
                return await self._fetch_without_redis(key, fetch, ttl_ms, guard, use_stale=False)
            except asyncio.CancelledError:
                self._locks.orphans.add(key, lease.key, lease.token)  # the claim may have run
                raise
            if claimed is None:
                raise RegenerationInProgress(key)
            return await self._fetch_and_write(
                key, fetch, ttl_ms, lease, guard, claimed=claimed, fail_safe=False
            )

    def _claim(self, lease: Lease) -> Coroutine[Any, Any, Any]:
        """The claim of ``lease``'s lock: when it was claimed (the version its fetch writes),
        or None when another holder has it."""
        return self._scripts.claim(keys=[lease.key], args=[lease.token, lease.ttl_ms])

    async def _fetch_and_write(
        self,
        key: str,
        fetch: Fetch,
        ttl_ms: int,
        lease: Lease,
        guard: Guard,
        *,
        claimed: bytes | str,
        fail_safe: bool = True,
    ) -> Any:
        """Run ``fetch`` under the held ``lease`` (kept alive meanwhile) and write its result,
        fenced: the write happens only if the lease is still ours, as of version ``claimed``
        (when the lease was claimed, as the claim's script answered it). With ``fail_safe``, a
        fetch that fails is answered with the key's stale local value, when there is one."""
        try:
            try:
                async with lease.kept_alive():
                    value, ttl_ms, tags = await self._run_fetch(key, fetch, ttl_ms)
            except Exception:
                if not fail_safe:
                    raise
                stale = self._local.stale(key)
                if stale is None:
                    raise
                await self._locks.release(key, lease.key, lease.token)
                self._stats.stale_served += 1
                logger.warning("fetch for %r failed; serving its stale value", key, exc_info=True)
                return stale.value
            if value is None:
                await self._locks.release(key, lease.key, lease.token)
                return None
        except BaseException:
            await self._locks.release(key, lease.key, lease.token)
            raise
        return await self._write_fetched(key, value, ttl_ms, tags, lease, guard, claimed=claimed)

    async def _fetch_without_redis(
        self, key: str, fetch: Fetch, ttl_ms: int, guard: Guard | None, *, use_stale: bool = True
    ) -> Any:
        """Answer without Redis: a stale local value if allowed, else a fetch in this process.

        With a ``guard`` the result is kept locally as version 0: any event replaces it, the
        listener's reconnection drops it, and it is fresh for ``_UNSHARED_FRESHNESS`` only, so
        that Redis is asked again soon (a fallback to it, while Redis stays unreachable, costs
        no fetch). So processes converge on Redis's value once it is back.
        """
        if use_stale:
            stale = self._local.stale(key)
            if stale is not None:
                self._stats.stale_served += 1
                return stale.value
        started = monotonic()
        value, ttl_ms, tags = await self._run_fetch(key, fetch, ttl_ms)
        if value is None:
            return None
        return self._keep_unshared(key, value, ttl_ms, tags, guard, started)

    def _keep_unshared(
        self,
        key: str,
        value: Any,
        ttl_ms: int,
        tags: tuple[str, ...],
        guard: Guard | None,
        started: float,
    ) -> Any:
        """``value``, fetched without Redis from ``started``, as readers get it, and kept
        locally with a ``guard`` (see ``_fetch_without_redis``)."""
        payload = self._serializer.dumps(value)
        canonical = self._serializer.loads(payload)
        if guard is not None:
            self._remember(
                key, canonical, guard, 0, len(payload), deadline(started, ttl_ms), started, tags
            )
        return canonical

    async def _answer_without_redis(self, key: str, fetch: Fetch, ttl_ms: int) -> Any:
        with self._watching(key) as guard:
            return await self._fetch_without_redis(key, fetch, ttl_ms, guard)

    async def _run_fetch(
        self, key: str, fetch: Fetch, ttl_ms: int
    ) -> tuple[Any, int, tuple[str, ...]]:
        """``fetch()``'s value, and the ttl (ms) and tags to store it with: the call's
        ``ttl_ms``, or the options of the :class:`~redicache_async.Entry` the fetch returned
        (every fetch's result passes here, so no Entry is ever stored or handed to a caller;
        a call's tags come as an Entry's, see ``with_tags``)."""
        return unwrap(await self._call_fetch(key, fetch), ttl_ms)

    async def _call_fetch(
        self, name: str, fetch: Callable[..., Any], args: tuple[Any, ...] = ()
    ) -> Any:
        """``fetch(*args)``'s result, bounded by ``fetch_timeout`` (``name`` says what it
        fetches), and counted."""
        if self._closing is not None:
            raise ClientClosedError("the client was closed before this fetch could start")
        self._stats.fetches += 1
        try:
            return await self._fetcher.run(name, fetch, args)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._stats.fetch_errors += 1
            raise

    def _decode(self, key: str, payload: bytes | str) -> Any:
        if isinstance(payload, str):  # a client made with decode_responses=True
            payload = payload.encode()
        try:
            return self._serializer.loads(payload)
        except Exception as exc:
            return self._undecodable(key, exc)

    def _undecodable(self, key: str, exc: Exception) -> Any:
        self._stats.decode_errors += 1
        logger.warning("the value of %r in Redis cannot be decoded (%r); refetching", key, exc)
        return UNDECODABLE

    def _note_replica(self, exc: RedisUnavailableError) -> None:
        """A command refused as by a replica (READONLY): lone reads go through a script,
        which it refuses too, until the server is seen a master again (``_plain_reads``)."""
        if isinstance(exc.__cause__, ReadOnlyError) and not self._cluster:
            self._plain_reads = False
