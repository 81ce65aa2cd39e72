"""CacheClient: a two-level cache (an in-process layer in front of Redis) whose misses are
fetched once across every process that shares the Redis.

This module holds its options, its life and its public operations; the read path is in
``loads.py``, the many-key calls in ``many.py``, the batch loader in ``batch_loader.py``,
builder targets' reads in ``target_reads.py``, the local layer's coherence in ``coherence.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
from collections.abc import Iterable
from time import monotonic
from typing import Any, Final, ParamSpec, TypeVar

from redicache_async.batching import ReadBatcher
from redicache_async.cancellation import cancel_and_wait
from redicache_async.clock import REFRESH_INTERVAL, RETRY_INTERVAL, ServerClock
from redicache_async.entry import with_tags
from redicache_async.errors import (
    REFUSALS,
    ClientClosedError,
    RedicacheError,
    describe_error,
)
from redicache_async.failover import FailoverWatch
from redicache_async.fetching import FetchRunner
from redicache_async.gateway import RedisGateway
from redicache_async.invalidation import unlock_event
from redicache_async.keys import KeySpace, validate_key
from redicache_async.listener import InvalidationListener
from redicache_async.local import LocalLayer
from redicache_async.locks import LockManager, SingleFlight, Wakeups
from redicache_async.replies import text
from redicache_async.scripts import Scripts
from redicache_async.serializers import Serializer, check_serializer
from redicache_async.soft_timeout import check_soft_timeout
from redicache_async.stats import CacheStats
from redicache_async.tags import TagTimes, check_tags
from redicache_async.tasks import OwnedTasks
from redicache_async.topology import is_cluster
from redicache_async.validation import (
    MAX_SECONDS,
    MIN_TTL,
    check_callable,
    check_count,
    check_optional_seconds,
    check_seconds,
    seconds_to_ms,
    ttl_to_ms,
)

from .batch_loader import BatchLoads
from .clearing import Clearing
from .decorating import Decorating
from .eager import EagerRefresh
from .many_writes import ManyWrites
from .state import MISSING, UNDECODABLE, UNREACHABLE, Fetch, logger
from .tagging import Tagging
from .target_reads import TargetReads
from .writes import Writes

__all__ = ["CacheClient"]

T = TypeVar("T")
P = ParamSpec("P")

#: Seconds between two looks at a cluster's epoch (see ``failover.py``).
_FAILOVER_POLL: Final = 1.0
#: The ttl types that get_or_init's local hit checks inline (others go through ttl_to_ms).
_PLAIN_NUMBERS: Final = (float, int)
#: get_or_init's default tags (one object: a call without tags is told apart by identity).
_NO_TAGS: Final[tuple[str, ...]] = ()
_NEVER: Final = math.inf


def _tagged(fetch: Fetch, tags: Iterable[str]) -> Fetch:
    """``fetch`` whose values carry ``tags`` (both checked first)."""
    check_callable("fetch", fetch)
    return with_tags(fetch, check_tags(tags))


class CacheClient(
    EagerRefresh, BatchLoads, ManyWrites, TargetReads, Writes, Clearing, Tagging, Decorating
):
    """A two-level cache over ``redis`` (``redis.asyncio.Redis``), under ``namespace``.

    Use it as ``async with CacheClient(r, namespace="app") as cache:`` (or ``await
    cache.start()`` / ``await cache.aclose()``). Every option's meaning and default:
    https://redicache-async.readthedocs.io/reference/options/
    """

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str = "redicache",
        local_max_entries: int = 10_000,
        local_max_bytes: int = 64 * 1024 * 1024,
        lock_ttl: float = 10.0,
        fetch_timeout: float | None = 30.0,
        wait_timeout: float = 45.0,
        stale_ttl: float = 0.0,
        redis_timeout: float = 1.0,
        serializer: Serializer | None = None,
        fetch_threads: int = 32,
    ) -> None:
        check_count("local_max_entries", local_max_entries)
        check_count("local_max_bytes", local_max_bytes)
        self._keys = KeySpace(namespace)
        self._lock_ttl = check_seconds("lock_ttl", lock_ttl)
        self._fetcher = FetchRunner(
            timeout=check_optional_seconds("fetch_timeout", fetch_timeout),
            threads=check_count("fetch_threads", fetch_threads, minimum=1),
        )
        self._wait_timeout = check_seconds("wait_timeout", wait_timeout)
        self._stale_ttl = check_seconds("stale_ttl", stale_ttl, allow_zero=True)
        self._redis_timeout = check_seconds("redis_timeout", redis_timeout)
        self._serializer = check_serializer(serializer)

        self._redis = redis
        self._scripts = Scripts(redis)
        # On a cluster the stream has a slot of its own, which a value's script cannot touch:
        # a reconnected listener then flushes its local layer instead of replaying.
        cluster = is_cluster(redis)
        self._stream_keys = [] if cluster else [self._keys.stream]
        self._fence_keys = [] if cluster else [self._keys.cleared, self._keys.tag_times]
        self._gateway = RedisGateway(
            redis,
            timeout=self._redis_timeout,
            mistake=lambda: self._listener.refusal,
            on_error=self._count_redis_error,
        )
        self._lock_ms = seconds_to_ms(self._lock_ttl)
        self._locks = LockManager(
            redis,
            self._scripts,
            self._release_lock,
            ttl=self._lock_ttl,
            timeout=self._redis_timeout,
            noun="lock",
        )
        self._origin = uuid.uuid4().hex[:16]
        self._local = LocalLayer(local_max_entries, local_max_bytes)
        # Nothing local is fresh until the listener is subscribed: until then no invalidation
        # could reach it.
        self._local.trusted = False
        self._stats = CacheStats()
        self._tasks = OwnedTasks("CacheClient")
        self._loads = SingleFlight(self._tasks)
        self._reads = SingleFlight(self._tasks)
        # On a cluster the keys of one script share a slot, which distinct keys rarely do.
        self._values = ReadBatcher(
            self._read_values, send_one=self._read_value, max_batch=1 if cluster else 256
        )
        self._init_eager(max_batch=1 if cluster else 256)
        self._clock = ServerClock(redis, timeout=self._redis_timeout)
        self._cluster = cluster
        self._plain_reads = cluster
        self._wakeups = Wakeups()
        self._guards = {}
        self._target_fields = {}
        self._listener = InvalidationListener(
            redis,
            self._keys.channel,
            on_event=self._on_event,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_listener_lost,
            on_ignored=self._on_ignored,
            on_resync=self._resync_clear_time,
            timeout=self._redis_timeout,
            stream=None if cluster else self._keys.stream,
        )
        self._subscriptions = 0
        self._cleared = 0
        self._tag_times = TagTimes()
        self._tagged = {}
        self._tagged_count = 0
        self._failovers = (
            FailoverWatch(
                redis,
                on_failover=self._on_failover,
                interval=_FAILOVER_POLL,
                timeout=self._redis_timeout,
            )
            if cluster
            else None
        )

    def __repr__(self) -> str:
        return f"<CacheClient namespace={self._keys.namespace!r} origin={self._origin}>"

    @property
    def namespace(self) -> str:
        """The prefix of every key and channel this client writes."""
        return self._keys.namespace

    async def start(self) -> None:
        """Start the invalidation listener; returns once it is subscribed.

        If Redis cannot be reached within ``redis_timeout`` the client starts anyway (it answers
        without Redis) and the listener keeps trying in the background.
        """
        await super().start()

    async def _startup(self) -> None:
        if self._failovers is not None:
            self._tasks.spawn(self._failovers.run(), name="redicache-failover-watch")
        subscribed = await self._listener.start(wait=self._redis_timeout)
        if not subscribed:
            logger.warning("Redis is not reachable yet; answering without it until it is")
            self._tasks.spawn(self._watch_server(0.0), name="redicache-server-watch")
            return
        try:
            await self._gateway.call(self._scripts.load())
        except RedicacheError as exc:  # EVALSHA loads them on demand anyway
            logger.debug("preloading the scripts failed: %s", describe_error(exc))
        synced = await self._look_at_server()
        self._tasks.spawn(
            self._watch_server(REFRESH_INTERVAL if synced else RETRY_INTERVAL),
            name="redicache-server-watch",
        )

    async def _watch_server(self, first: float) -> None:
        """Keep the server's clock offset and role current, every ``REFRESH_INTERVAL``."""
        pause = first
        while True:
            await asyncio.sleep(pause)
            pause = REFRESH_INTERVAL if await self._look_at_server() else RETRY_INTERVAL

    async def _look_at_server(self) -> bool:
        """Estimate the server's clock offset, and whether lone reads may be plain GETs (it is
        a master); False when Redis did not answer (the last estimates stand)."""
        try:
            await self._clock.sync()
            if not self._cluster:  # see ``_plain_reads``
                role = await self._gateway.bounded(self._redis.execute_command("ROLE"))
                self._plain_reads = text(role[0]) == "master"
        except asyncio.CancelledError:
            raise
        except REFUSALS as exc:  # an ACL without ROLE: reads stay scripts, which are safe
            self._plain_reads = False
            logger.debug("cannot ask the server's role: %r", exc)
        except Exception as exc:
            logger.debug("could not read the server's clock and role: %r", exc)
            return False
        return True

    async def aclose(self) -> None:
        """Stop the listener and every in-flight load. Idempotent; shielded from cancellation."""
        await super().aclose()

    async def _shutdown(self) -> None:
        # Loads and regenerations first: cancelled, they release their locks (or leave them to
        # the orphans, released below) while commands may still be sent.
        await self._tasks.aclose()
        await self._listener.aclose()
        await self._locks.aclose(last_round=self._redis_timeout)
        self._gateway.seal()  # from now on no command is sent
        self._local.clear()

    async def get_or_init(
        self,
        key: str,
        fetch: Fetch,
        ttl: float | None = None,
        *,
        tags: Iterable[str] = (),
        eager_refresh: float | None = None,
        soft_timeout: float | None = None,
    ) -> Any:
        """The value of ``key``, fetched with ``fetch()`` when no process has it yet.

        Exactly one caller across all processes runs ``fetch`` for a missing key; the others
        wait for its value. A ``None`` result is returned but not cached. ``fetch`` may return
        an :class:`~redicache_async.Entry` to choose its value's ttl and tags.

        A value fetched here is stored with ``tags`` (strings), which :meth:`invalidate_tags`
        takes to remove it with every other value that carries one of them.

        With ``eager_refresh=f`` (0 < f < 1), a hit on a value older than ``f`` of its TTL
        answers at once and starts one background refresh across all processes, so that a
        value read steadily never expires (see ``client/eager.py``).

        With ``soft_timeout`` (seconds, below ``fetch_timeout``), a call that has waited that
        long for a fetch, here or in another process, is answered with the key's expired local
        copy if ``stale_ttl`` still keeps one; the fetch goes on and stores its result.
        """
        if tags is not _NO_TAGS:
            fetch = _tagged(fetch, tags)
        if eager_refresh is not None:
            return await self._get_or_init_eagerly(key, fetch, ttl, eager_refresh, soft_timeout)
        # Checked before the local layer, so that a call fails alike whether it would hit or
        # not, for the price of a few comparisons (``__class__`` is read faster than ``type()``
        # is called). Only valid keys enter the local layer, so a str key that hits is valid;
        # a miss checks it in full below.
        if not (
            key.__class__ is str
            and callable(fetch)
            and (ttl is None or (ttl.__class__ in _PLAIN_NUMBERS and MIN_TTL <= ttl <= MAX_SECONDS))
            and (
                soft_timeout is None
                or (
                    soft_timeout.__class__ in _PLAIN_NUMBERS
                    and 0 < soft_timeout < (self._fetcher.timeout or MAX_SECONDS)
                )
            )
        ):
            validate_key(key)
            check_callable("fetch", fetch)
            ttl_to_ms(ttl)
            check_soft_timeout(soft_timeout, self._fetcher.timeout)
        # LocalLayer.fresh, inlined (its call alone would cost a hit a fifth of its time): an
        # entry is its deadline; the layer is not trusted while invalidations may be missed.
        local = self._local
        entry = local.entries.get(key)
        if entry is not None and local.trusted and (entry == _NEVER or entry > monotonic()):
            local.hits += 1
            entry.used = True
            return entry.value
        # Past a local miss. (Nothing here may make a closure of the arguments: a function
        # with one makes a cell for each on every call, which would cost a hit as much as
        # everything else it does.)
        validate_key(key)  # the rest was checked above
        self._check_open()
        # A value in Redis is read like any other (batched with concurrent reads); only a key
        # without one needs the lock, and the load that may fetch.
        value = await self._values.read(key)
        if value is MISSING or value is UNDECODABLE or value is UNREACHABLE:
            soft_timeout = check_soft_timeout(soft_timeout, self._fetcher.timeout)
            return await self._load(key, fetch, ttl_to_ms(ttl), value, soft_timeout)
        return value

    async def attempt_regeneration(
        self, key: str, fetch: Fetch, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> Any:
        """Fetch ``key`` again and replace its value, unless its write lock is held elsewhere.

        Raises :class:`RegenerationInProgress` when another caller holds the lock. The old value
        stays readable until the new one replaces it. ``tags``: as :meth:`get_or_init`'s.
        """
        validate_key(key)
        check_callable("fetch", fetch)
        fetch = _tagged(fetch, tags)
        ttl_ms = ttl_to_ms(ttl)
        self._check_open()
        # In a task of the client's, so that aclose() ends it; a cancelled caller cancels it.
        task = self._tasks.spawn(
            self._regenerate(key, fetch, ttl_ms), name=f"redicache-regeneration:{key}"
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closing is not None and current is not None and not current.cancelling():
                raise ClientClosedError("the client was closed during this call") from None
            await cancel_and_wait(task)  # its clean-up (releasing the lock) ends first
            raise

    async def get(self, key: str) -> Any:
        """The value of ``key`` if any process stored one, else None. Never fetches."""
        if key.__class__ is not str:  # a tuple would find a builder target's local copy
            validate_key(key)
        entry = self._local.fresh(key)
        if entry is not None:
            return entry.value
        validate_key(key)
        self._check_open()
        value = await self._values.read(key)
        if value is MISSING:
            self._stats.misses += 1
            return None
        if value is UNDECODABLE:
            return None
        if value is UNREACHABLE:
            return self._stale_or(key, None)
        return value

    def _count_redis_error(self) -> None:
        self._stats.redis_errors += 1

    def stats(self) -> CacheStats:
        """A snapshot of this client's counters."""
        return dataclasses.replace(
            self._stats,
            local_hits=self._local.hits,
            local_entries=len(self._local),
            local_bytes=self._local.bytes,
            local_evictions=self._local.evictions,
            circuit_opens=self._gateway.breaker.opened,
            circuit_skips=self._gateway.breaker.skipped,
        )

    async def _release_lock(self, key: str, lock_key: str, token: str) -> bool:
        command = self._scripts.release(
            keys=[lock_key], args=[token, self._keys.channel, unlock_event(key, self._origin)]
        )
        return bool(await self._gateway.call(command, lock_key))
