"""Eager refresh (``get_or_init(..., eager_refresh=f)``): a hit on a value older than ``f`` of
its TTL answers at once and refreshes the value in the background, so that under steady traffic
the value never expires and no caller waits for a fetch.

A value's age. Its version is the server's clock (µs) when it was written, and its expiry is in
its header (server ms); a local copy keeps the version, and is itself its deadline (this
process's clock, never later than the expiry). The server's clock offset (``clock.py``) puts
both on this process's clock, so a local hit judges its age without I/O, and a Redis hit from
the header it read (eager callers read through a batcher of their own, whose answers keep the
header). No eager refresh for a value without a TTL (it never expires), for one fetched while
Redis was unreachable (version 0: it has no server time, and Redis is asked again within a
second anyway), nor before the clock offset is first known.

The refresh. At most one per key in this process at a time, a task of the client's (``aclose()``
cancels and awaits it; no fetch starts once the client is closing). It tries the key's lock, as
``attempt_regeneration`` does: the process that takes it fetches and writes, fenced, and the
write's event replaces every process's copy. Another process's refresh (or load) holding the
lock is normal and silent: the refresh here waits for that lock's event (or ``lock_ttl``)
before a later hit may try again, so a hot key costs one lock attempt per process per refresh,
not one per hit; and one that takes the lock after a value newer than its hit's was written
(another process's refresh that just ended) lets go of it without fetching. The fetch is the
hit's caller's, and may return an :class:`~redicache_async.Entry`. A refresh that fails is
logged and counted (``stats().eager_refresh_errors``), never raised to anyone; the old value
stays, and its key is not tried again for :data:`RETRY_PAUSE` seconds (nor after a fetch that
returned None: nothing to store). While Redis is unreachable nothing is refreshed (the lock cannot
decide who would): the value answers until it expires, then ``get_or_init`` does as without
Redis.
"""

from __future__ import annotations

import asyncio
import functools
from time import monotonic
from typing import Any, Final, NamedTuple

from redicache_async.batching import ReadBatcher
from redicache_async.errors import ClientClosedError, RedisUnavailableError
from redicache_async.keys import validate_key
from redicache_async.locks import wait_event
from redicache_async.soft_timeout import check_soft_timeout
from redicache_async.stored import unpack
from redicache_async.validation import (
    MAX_SECONDS,
    MIN_TTL,
    check_callable,
    check_fraction,
    ttl_to_ms,
)

from .loads import Loads
from .state import MISSING, UNDECODABLE, Fetch, Guard, logger

__all__ = ["RETRY_PAUSE", "EagerRefresh"]

#: Seconds after a failed refresh before a hit may start the key's next.
RETRY_PAUSE: Final = 1.0
#: The ttl and fraction types that the hit checks inline (others go through the full checks).
_PLAIN_NUMBERS: Final = (float, int)


class _Hit(NamedTuple):
    """A value read from Redis, with its header."""

    value: Any
    version: int
    expires_ms: int


class EagerRefresh(Loads):
    """``get_or_init``'s path with ``eager_refresh``, and the background refreshes."""

    #: The refresh of each key running in this process (at most one per key).
    _refreshes: dict[str, asyncio.Task[None]]

    def _init_eager(self, *, max_batch: int) -> None:
        self._refreshes = {}
        self._headed_values = ReadBatcher(
            functools.partial(self._read_values, stored=self._stored_hit),
            send_one=functools.partial(self._read_value, stored=self._stored_hit),
            max_batch=max_batch,
        )

    async def _get_or_init_eagerly(
        self,
        key: str,
        fetch: Fetch,
        ttl: float | None,
        eager_refresh: Any,
        soft_timeout: float | None,
    ) -> Any:
        # As in get_or_init: checked before the local layer, cheaply when plainly valid (only
        # valid keys enter the local layer, so a str key that hits is valid).
        if not (
            key.__class__ is str
            and callable(fetch)
            and eager_refresh.__class__ is float
            and 0.0 < eager_refresh < 1.0
            and (ttl is None or (ttl.__class__ in _PLAIN_NUMBERS and MIN_TTL <= ttl <= MAX_SECONDS))
            and soft_timeout is None
        ):
            validate_key(key)
            check_callable("fetch", fetch)
            ttl_to_ms(ttl)
            eager_refresh = check_fraction("eager_refresh", eager_refresh)
            check_soft_timeout(soft_timeout, self._fetcher.timeout)
        entry = self._local.fresh(key)  # a hit is counted by the local layer
        if entry is not None:
            self._refresh_if_due(key, fetch, ttl, eager_refresh, entry.version, float(entry))
            return entry.value
        return await self._get_or_init_eagerly_beyond_local(
            key, fetch, ttl, eager_refresh, soft_timeout
        )

    async def _get_or_init_eagerly_beyond_local(
        self,
        key: str,
        fetch: Fetch,
        ttl: float | None,
        fraction: float,
        soft_timeout: float | None,
    ) -> Any:
        validate_key(key)
        ttl_ms = ttl_to_ms(ttl)
        soft_timeout = check_soft_timeout(soft_timeout, self._fetcher.timeout)
        self._check_open()
        read = await self._headed_values.read(key)
        if not isinstance(read, _Hit):
            return await self._load(key, fetch, ttl_ms, read, soft_timeout)
        expires_at = self._clock.deadline(read.expires_ms)
        self._refresh_if_due(key, fetch, ttl, fraction, read.version, expires_at)
        return read.value

    def _stored_hit(self, key: str, guard: Guard, reply: Any) -> Any:
        """What ``_stored_value`` makes of ``reply``, a value as a :class:`_Hit`."""
        value = self._stored_value(key, guard, reply)
        if value is MISSING or value is UNDECODABLE:
            return value
        stored = unpack(reply)
        assert stored is not None  # _stored_value has read it
        return _Hit(value, stored.version, stored.expires_ms)

    def _refresh_if_due(
        self,
        key: str,
        fetch: Fetch,
        ttl: float | None,
        fraction: float,
        version: int,
        expires_at: float | None,
    ) -> None:
        """Start the key's refresh if its value (written at server time ``version``, expiring
        at ``expires_at`` on this process's clock) is past ``fraction`` of its TTL and none
        runs here yet."""
        if not version or expires_at is None or key in self._refreshes:
            return
        if self._closing is not None:
            return
        written = self._clock.deadline(version // 1000)
        # A value without a TTL (expires_at is inf) is never due.
        if written is None or monotonic() < written + fraction * (expires_at - written):
            return
        # Watched from the hit on, so that a write of the key from now on (another process's
        # refresh that ended before this one took the lock) makes this one stand down.
        guard = self._watch(key)
        wake = self._wakeups.register(key)  # nor is the event of a lock held elsewhere missed
        self._stats.eager_refreshes += 1
        task = self._tasks.spawn(
            self._refresh(key, fetch, ttl_to_ms(ttl), version, guard, wake),
            name=f"redicache-eager-refresh:{key}",
        )
        self._refreshes[key] = task
        # In a callback, not in the task: a task cancelled before it started runs no finally.
        task.add_done_callback(functools.partial(self._refresh_ended, key, guard, wake))

    def _refresh_ended(
        self, key: str, guard: Guard, wake: asyncio.Event, task: asyncio.Task[None]
    ) -> None:
        self._unwatch(key, guard)
        self._wakeups.unregister(key, wake)
        if self._refreshes.get(key) is task:
            del self._refreshes[key]

    async def _refresh(
        self, key: str, fetch: Fetch, ttl_ms: int, version: int, guard: Guard, wake: asyncio.Event
    ) -> None:
        """Replace ``key``'s value (at ``version`` when the hit saw it) if its lock is free
        and nothing newer was written since, else wait for the lock holder's event."""
        try:
            lease = self._locks.lease(self._keys.lock(key))
            try:
                claimed = await self._gateway.call(self._claim(lease), lease.key)
            except RedisUnavailableError as exc:
                self._locks.unanswered(exc, key, lease.key, lease.token)
                logger.debug("no eager refresh of %r: Redis is unreachable", key)
                return
            except asyncio.CancelledError:
                self._locks.orphans.add(key, lease.key, lease.token)  # the claim may have run
                raise
            if claimed is None:
                await wait_event(wake, self._lock_ttl)
            elif guard.void or guard.min_version > version:
                await self._locks.release(key, lease.key, lease.token)  # refreshed meanwhile
            else:
                value = await self._fetch_and_write(
                    key, fetch, ttl_ms, lease, guard, claimed=claimed, fail_safe=False
                )
                if value is None:  # nothing to store (the old value stays): not again at once
                    await asyncio.sleep(RETRY_PAUSE)
        except asyncio.CancelledError:
            raise
        except ClientClosedError:
            return  # the client is closing: this refresh is not wanted any more
        except Exception:
            self._stats.eager_refresh_errors += 1
            logger.warning(
                "the eager refresh of %r failed; its current value stays", key, exc_info=True
            )
            await asyncio.sleep(RETRY_PAUSE)
