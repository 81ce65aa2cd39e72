"""CacheClient: a two-level cache (an in-process layer in front of Redis) whose misses are
fetched once across every process that shares the Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any, Final, ParamSpec, TypeVar

from redis.exceptions import RedisError

from .batching import ReadBatcher
from .breaker import CircuitBreaker, CircuitOpenError
from .cancellation import bounded, cancel_and_wait
from .decorator import CachedFunction, cached
from .errors import (
    OUTAGES,
    REFUSALS,
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RedicacheError,
    RedisConfigurationError,
    RedisPermissionError,
    RedisUnavailableError,
    RegenerationInProgress,
    describe_error,
)
from .failover import FailoverWatch
from .fetching import call_fetch
from .invalidation import (
    OP_DELETE,
    OP_SET,
    OP_TARGET,
    Event,
    event_prefix,
    unlock_event,
)
from .keys import KeySpace, encoded, validate_key
from .leases import Lease, new_token
from .lifecycle import Lifecycle
from .listener import InvalidationListener
from .local import LocalKey, LocalLayer
from .locks import SingleFlight, Wakeups, wait_event
from .orphans import OrphanedClaims
from .scripts import Scripts
from .serializers import JsonSerializer, Serializer
from .stats import CacheStats
from .targets import decode_target, empty_target
from .tasks import OwnedTasks
from .tls import tls_error
from .topology import is_cluster
from .validation import (
    MAX_SECONDS,
    MIN_TTL,
    check_callable,
    check_count,
    check_optional_seconds,
    check_seconds,
    ttl_to_ms,
)

__all__ = ["CacheClient"]

logger = logging.getLogger("redicache_async")

T = TypeVar("T")
P = ParamSpec("P")
Fetch = Callable[[], Any]

_FIRST_POLL: Final = 0.1
_MAX_POLL: Final = 1.0
_UNDECODABLE: Final = object()
#: A value read's answers other than a value: no value in Redis, Redis unreachable.
_MISSING: Final = object()
_UNREACHABLE: Final = object()
#: Seconds a value fetched while Redis was unreachable is served as fresh before Redis is
#: asked again.
_UNSHARED_FRESHNESS: Final = 1.0
#: Seconds between two looks at a cluster's epoch (see ``failover.py``).
_FAILOVER_POLL: Final = 1.0
#: The ttl types that get_or_init's local hit checks inline (others go through ttl_to_ms).
_PLAIN_NUMBERS: Final = (float, int)


class _Guard:
    """Watches one key while a read or write of it is in flight, so that a result older than
    an event that arrived meanwhile is returned but not kept in the local layer."""

    __slots__ = ("min_version", "void")

    def __init__(self) -> None:
        self.min_version = 0
        self.void = False


class CacheClient(Lifecycle):
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
    ) -> None:
        check_count("local_max_entries", local_max_entries)
        check_count("local_max_bytes", local_max_bytes)
        self._keys = KeySpace(namespace)
        self._lock_ttl = check_seconds("lock_ttl", lock_ttl)
        self._fetch_timeout = check_optional_seconds("fetch_timeout", fetch_timeout)
        self._wait_timeout = check_seconds("wait_timeout", wait_timeout)
        self._stale_ttl = check_seconds("stale_ttl", stale_ttl, allow_zero=True)
        self._redis_timeout = check_seconds("redis_timeout", redis_timeout)
        if serializer is None:
            serializer = JsonSerializer()
        elif not isinstance(serializer, Serializer):
            raise InvalidArgumentTypeError("serializer must have dumps(value) and loads(bytes)")
        self._serializer = serializer

        self._redis = redis
        self._scripts = Scripts(redis)
        # On a cluster the stream has a slot of its own, which a value's script cannot touch:
        # a reconnected listener then flushes its local layer instead of replaying.
        cluster = is_cluster(redis)
        self._stream_keys = [] if cluster else [self._keys.stream]
        self._breaker = CircuitBreaker()
        self._orphans = OrphanedClaims(self._release_lock)
        self._origin = uuid.uuid4().hex[:16]
        self._local = LocalLayer(local_max_entries, local_max_bytes)
        # Nothing local is fresh until the listener is subscribed: until then no invalidation
        # could reach it.
        self._local.trusted = False
        self._stats = CacheStats()
        #: Every task that may fetch or write: none outlives aclose().
        self._tasks = OwnedTasks("CacheClient")
        self._loads: SingleFlight[Any] = SingleFlight(self._tasks)
        self._reads: SingleFlight[Any] = SingleFlight(self._tasks)
        #: Set once aclose() has ended every task: from then on no command is sent.
        self._sealed = False
        # On a cluster the keys of one script share a slot, which distinct keys rarely do.
        self._values: ReadBatcher[str, Any] = ReadBatcher(
            self._read_values, max_batch=1 if cluster else 256
        )
        self._wakeups = Wakeups()
        self._guards: dict[LocalKey, list[_Guard]] = {}
        #: Fields of builder targets held locally, by target: dropped with their target.
        self._target_fields: dict[str, set[str]] = {}
        self._listener = InvalidationListener(
            redis,
            self._keys.channel,
            on_event=self._on_event,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_listener_lost,
            on_ignored=self._on_ignored,
            timeout=self._redis_timeout,
            stream=None if cluster else self._keys.stream,
        )
        self._subscriptions = 0
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

    # -- lifecycle ---------------------------------------------------------------------------

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
            return
        try:
            await self._redis_call(self._scripts.load())
        except RedicacheError as exc:  # EVALSHA loads them on demand anyway
            logger.debug("preloading the scripts failed: %s", describe_error(exc))

    async def aclose(self) -> None:
        """Stop the listener and every in-flight load. Idempotent; shielded from cancellation."""
        await super().aclose()

    async def _shutdown(self) -> None:
        # Loads and regenerations first: cancelled, they release their locks (or leave them to
        # the orphans, released below) while commands may still be sent.
        await self._tasks.aclose()
        await self._listener.aclose()
        await self._orphans.aclose(last_round=self._redis_timeout)
        self._sealed = True
        self._local.clear()

    # -- public operations -------------------------------------------------------------------

    async def get_or_init(self, key: str, fetch: Fetch, ttl: float | None = None) -> Any:
        """The value of ``key``, fetched with ``fetch()`` when no process has it yet.

        Exactly one caller across all processes runs ``fetch`` for a missing key; the others
        wait for its value. A ``None`` result is returned but not cached.
        """
        # Checked before the local layer, so that a call fails alike whether it would hit or
        # not, for the price of a few comparisons (``__class__`` is read faster than ``type()``
        # is called). Only valid keys enter the local layer, so a str key that hits is valid;
        # a miss checks it in full below.
        if not (
            key.__class__ is str
            and callable(fetch)
            and (ttl is None or (ttl.__class__ in _PLAIN_NUMBERS and MIN_TTL <= ttl <= MAX_SECONDS))
        ):
            validate_key(key)
            check_callable("fetch", fetch)
            ttl_to_ms(ttl)
        entry = self._local.fresh(key)
        if entry is not None:
            self._stats.local_hits += 1
            return entry.value
        validate_key(key)
        check_callable("fetch", fetch)
        ttl_ms = ttl_to_ms(ttl)
        self._check_open()
        # A value in Redis is read like any other (batched with concurrent reads); only a key
        # without one needs the lock, and the load that may fetch.
        value = await self._values.read(key)
        if value is _MISSING or value is _UNDECODABLE:
            ignore = value is _UNDECODABLE
            return await self._join(
                self._loads, key, lambda: self._resolve(key, fetch, ttl_ms, ignore_value=ignore)
            )
        if value is _UNREACHABLE:
            return await self._join(
                self._loads, key, lambda: self._answer_without_redis(key, fetch, ttl_ms)
            )
        return value

    async def attempt_regeneration(self, key: str, fetch: Fetch, ttl: float | None = None) -> Any:
        """Fetch ``key`` again and replace its value, unless its write lock is held elsewhere.

        Raises :class:`RegenerationInProgress` when another caller holds the lock. The old value
        stays readable until the new one replaces it.
        """
        validate_key(key)
        check_callable("fetch", fetch)
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

    async def _regenerate(self, key: str, fetch: Fetch, ttl_ms: int) -> Any:
        lease = self._lease(key)
        with self._watching(key) as guard:
            try:
                acquired = await self._redis_call(lease.acquire())
            except RedisUnavailableError as exc:
                self._maybe_orphaned(exc, key, lease.key, lease.token)
                return await self._fetch_without_redis(key, fetch, ttl_ms, guard, use_stale=False)
            except asyncio.CancelledError:
                self._orphans.add(key, lease.key, lease.token)  # the claim may have run
                raise
            if not acquired:
                raise RegenerationInProgress(key)
            return await self._fetch_and_write(key, fetch, ttl_ms, lease, guard, fail_safe=False)

    async def get(self, key: str) -> Any:
        """The value of ``key`` if any process stored one, else None. Never fetches."""
        if key.__class__ is not str:  # a tuple would find a builder target's local copy
            validate_key(key)
        entry = self._local.fresh(key)
        if entry is not None:
            self._stats.local_hits += 1
            return entry.value
        validate_key(key)
        self._check_open()
        value = await self._values.read(key)
        if value is _MISSING:
            self._stats.misses += 1
            return None
        if value is _UNDECODABLE:
            return None
        if value is _UNREACHABLE:
            return self._stale_or(key, None)
        return value

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
            _check_field(field)
        local_key: LocalKey = ("target", key) if field is None else ("target", key, field)
        entry = self._local.fresh(local_key)
        if entry is not None:
            self._stats.local_hits += 1
            return entry.value
        validate_key(key)
        if field is not None:
            _check_field(field)
        self._check_open()
        return await self._join(self._reads, local_key, lambda: self._read_target(key, field))

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: no expiry)."""
        validate_key(key)
        ttl_ms = ttl_to_ms(ttl)
        if value is None:
            raise InvalidArgumentError("value must not be None (None means 'no value' to readers)")
        payload = self._serializer.dumps(value)
        canonical = self._serializer.loads(payload)
        self._check_open()
        with self._watching(key) as guard:
            started = monotonic()
            try:
                version = await self._redis_call(
                    self._scripts.write(
                        keys=[self._keys.value(key), self._keys.lock(key), *self._stream_keys],
                        args=["", payload, ttl_ms, *self._event_args(OP_SET, key)],
                    )
                )
            except BaseException:
                self._write_unknown(key)
                raise
            self._count_write()
            self._wrote(key, int(version))
            self._remember(key, canonical, guard, int(version), len(payload), ttl_ms, started)

    async def delete(self, key: str) -> None:
        """Remove ``key`` from Redis and from every process's local layer."""
        validate_key(key)
        self._check_open()
        try:
            version = await self._redis_call(
                self._scripts.delete(
                    keys=[self._keys.value(key), self._keys.lock(key), *self._stream_keys],
                    args=list(self._event_args(OP_DELETE, key)),
                )
            )
        except BaseException:
            self._write_unknown(key)
            raise
        self._local.discard(key)
        self._wrote(key, int(version))
        self._stats.deletes += 1
        self._stats.invalidations_sent += 1

    def cached(
        self, ttl: float | None = None, *, key: Callable[..., str] | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], CachedFunction[P, T]]:
        """Decorate a coroutine function so that its results are cached under ``key`` (by
        default its module, qualified name and arguments) for ``ttl`` seconds, each missing
        one computed once across all processes, as :meth:`get_or_init` does::

            @cache.cached(ttl=60)
            async def report(day: str) -> dict: ...

            await report("2026-11-23")
            await report.invalidate("2026-11-23")

        The default key is the call, not its spelling (``report("d1")`` and
        ``report(day="d1")`` are one entry) and takes ``str``, ``int``, ``float``, ``bool`` and
        ``None`` arguments only; for others (a method's ``self``, say) pass ``key=``, a
        function of the same arguments that returns the key. A closure that reads variables of
        its enclosing function needs ``key=`` too. How keys are made:
        https://redicache-async.readthedocs.io/how-to/decorator/
        """
        return cached(self, ttl, key=key)

    def _local_value(self, key: str) -> Any:
        """The fresh local value of ``key`` (a local hit), else None (None is never kept)."""
        if key.__class__ is not str:  # get_or_init says what is wrong with it
            return None
        entry = self._local.fresh(key)
        if entry is None:
            return None
        self._stats.local_hits += 1
        return entry.value

    def stats(self) -> CacheStats:
        """A snapshot of this client's counters."""
        return dataclasses.replace(
            self._stats,
            local_entries=len(self._local),
            local_bytes=self._local.bytes,
            local_evictions=self._local.evictions,
            circuit_opens=self._breaker.opened,
            circuit_skips=self._breaker.skipped,
        )

    # -- loads -------------------------------------------------------------------------------

    async def _join(
        self,
        flights: SingleFlight[Any],
        key: LocalKey,
        load: Callable[[], Coroutine[Any, Any, Any]],
    ) -> Any:
        try:
            return await flights.run(key, load)
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
        deadline: float | None = None
        poll = _FIRST_POLL
        wake = self._wakeups.register(key)
        try:
            with self._watching(key) as guard:
                while True:
                    token = new_token()
                    started = monotonic()
                    try:
                        reply = await self._redis_call(
                            self._scripts.read_or_lock(
                                keys=[value_key, lock_key],
                                args=[token, self._lock_ms, ignored],
                            )
                        )
                    except RedisUnavailableError as exc:
                        self._maybe_orphaned(exc, key, lock_key, token)
                        return await self._fetch_without_redis(key, fetch, ttl_ms, guard)
                    except asyncio.CancelledError:
                        self._orphans.add(key, lock_key, token)  # the claim may have run
                        raise
                    status = reply[0]
                    if status == 1:
                        value = self._decode(key, reply[1])
                        if value is _UNDECODABLE:
                            ignored = "1"
                            continue
                        self._stats.redis_hits += 1
                        self._remember(
                            key,
                            value,
                            guard,
                            int(reply[2]),
                            len(reply[1]),
                            _ttl_from_pttl(reply[3]),
                            started,
                        )
                        return value
                    if deadline is None:
                        self._stats.misses += 1
                    if status == 2:
                        if deadline is not None:  # we waited: its holder left no value
                            self._stats.lock_takeovers += 1
                        lease = self._lease(key, token)
                        return await self._fetch_and_write(key, fetch, ttl_ms, lease, guard)
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

    async def _read_values(self, keys: list[str]) -> list[Any]:
        """Read ``keys`` in one command (see ``batching.py``): each one's value, kept locally,
        or ``_MISSING``, ``_UNDECODABLE``, ``_UNREACHABLE``."""
        guards = [self._watch(key) for key in keys]
        try:
            started = monotonic()
            value_key = self._keys.value
            try:
                replies = await self._redis_call(
                    self._scripts.read_values([value_key(key) for key in keys])
                )
            except RedisUnavailableError:
                return [_UNREACHABLE] * len(keys)
            values: list[Any] = []
            for key, guard, reply in zip(keys, guards, replies, strict=True):
                if reply is None:
                    values.append(_MISSING)
                    continue
                value = self._decode(key, reply[0])
                if value is not _UNDECODABLE:
                    self._stats.redis_hits += 1
                    ttl_ms = _ttl_from_pttl(reply[2])
                    self._remember(key, value, guard, int(reply[1]), len(reply[0]), ttl_ms, started)
                values.append(value)
            return values
        finally:
            for key, guard in zip(keys, guards, strict=True):
                self._unwatch(key, guard)

    async def _read_target(self, key: str, field: str | None) -> Any:
        local_key: LocalKey = ("target", key) if field is None else ("target", key, field)
        with self._watching(("target", key)) as guard:
            started = monotonic()
            try:
                reply = await self._redis_call(
                    self._scripts.read_target(
                        keys=[key, self._keys.target_meta(key)], args=[field or ""]
                    )
                )
            except RedisUnavailableError:
                return self._stale_or(local_key, None)
            kind, data, version = _text(reply[0]), reply[1], int(reply[2])
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
            elif version and field is None and _text(reply[4]) == "0":
                value, size = empty_target(_text(reply[3])), 0  # the last build was empty
            else:
                self._stats.misses += 1
                return None
            self._stats.redis_hits += 1
            if version:
                if field is not None:
                    self._target_fields.setdefault(key, set()).add(field)
                self._remember(local_key, value, guard, version, size, 0, started)
            return value

    async def _fetch_and_write(
        self,
        key: str,
        fetch: Fetch,
        ttl_ms: int,
        lease: Lease,
        guard: _Guard,
        *,
        fail_safe: bool = True,
    ) -> Any:
        """Run ``fetch`` under the held ``lease`` (kept alive meanwhile) and write its result,
        fenced: the write happens only if the lease is still ours. With ``fail_safe``, a fetch
        that fails is answered with the key's stale local value, when there is one."""
        try:
            try:
                async with lease.kept_alive():
                    value = await self._run_fetch(key, fetch)
            except Exception:
                if not fail_safe:
                    raise
                stale = self._local.stale(key)
                if stale is None:
                    raise
                await self._release(lease, key)
                self._stats.stale_served += 1
                logger.warning("fetch for %r failed; serving its stale value", key, exc_info=True)
                return stale.value
            if value is None:
                await self._release(lease, key)
                return None
            payload = self._serializer.dumps(value)
            canonical = self._serializer.loads(payload)
        except BaseException:
            await self._release(lease, key)
            raise
        started = monotonic()
        try:
            version = await self._redis_call(
                self._scripts.write(
                    keys=[self._keys.value(key), lease.key, *self._stream_keys],
                    args=[lease.token, payload, ttl_ms, *self._event_args(OP_SET, key)],
                )
            )
        except RedisUnavailableError:
            self._orphans.add(key, lease.key, lease.token)
            logger.warning("could not store the value fetched for %r: Redis is unreachable", key)
            return canonical
        except RedicacheError as exc:
            # Refused (a script error, an ACL, OOM): nothing was written, and the lock must not
            # be left to expire while others wait on it.
            await self._release(lease, key)
            logger.warning("could not store the value fetched for %r: %s", key, describe_error(exc))
            return canonical
        except BaseException:
            self._orphans.add(key, lease.key, lease.token)  # cancelled: the write may not run
            raise
        if version is None:
            self._stats.fenced_writes += 1
            logger.warning(
                "the lock on %r was revoked by a write or delete, or expired, before its fetch "
                "finished: the fetched value is returned but not stored",
                key,
            )
            return canonical
        self._count_write()
        self._wrote(key, int(version))
        self._remember(key, canonical, guard, int(version), len(payload), ttl_ms, started)
        return canonical

    async def _fetch_without_redis(
        self, key: str, fetch: Fetch, ttl_ms: int, guard: _Guard | None, *, use_stale: bool = True
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
        value = await self._run_fetch(key, fetch)
        if value is None:
            return None
        payload = self._serializer.dumps(value)
        canonical = self._serializer.loads(payload)
        if guard is not None:
            self._remember(key, canonical, guard, 0, len(payload), ttl_ms, started)
        return canonical

    async def _answer_without_redis(self, key: str, fetch: Fetch, ttl_ms: int) -> Any:
        with self._watching(key) as guard:
            return await self._fetch_without_redis(key, fetch, ttl_ms, guard)

    async def _run_fetch(self, key: str, fetch: Fetch) -> Any:
        if self._closing is not None:
            raise ClientClosedError("the client was closed before this fetch could start")
        self._stats.fetches += 1
        try:
            if self._fetch_timeout is None:
                return await call_fetch(fetch)
            try:
                async with asyncio.timeout(self._fetch_timeout) as deadline:
                    return await call_fetch(fetch)
            except TimeoutError as exc:
                if deadline.expired():
                    raise FetchTimeout(key, self._fetch_timeout) from exc
                raise
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._stats.fetch_errors += 1
            raise

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _lock_ms(self) -> int:
        return max(1, round(self._lock_ttl * 1000))

    def _lease(self, key: str, token: str | None = None) -> Lease:
        return Lease(
            self._redis,
            self._scripts,
            self._keys.lock(key),
            ttl=self._lock_ttl,
            timeout=self._redis_timeout,
            token=token,
        )

    async def _release(self, lease: Lease, key: str) -> None:
        """Release the lock and announce it, so waiters elsewhere retry at once. Should this be
        cancelled (it runs in clean-ups, which a close may cancel again), the lock is left to
        the orphans, whose last round runs before the close returns."""
        try:
            await self._release_lock(key, lease.key, lease.token)
        except asyncio.CancelledError:
            self._orphans.add(key, lease.key, lease.token)
            raise
        except RedisUnavailableError as exc:
            self._orphans.add(key, lease.key, lease.token)
            logger.warning("could not release the lock on %r yet: %s", key, describe_error(exc))
        except RedicacheError as exc:
            logger.warning(
                "could not release the lock on %r (it will expire): %s", key, describe_error(exc)
            )

    async def _release_lock(self, key: str, lock_key: str, token: str) -> bool:
        command = self._scripts.release(
            keys=[lock_key], args=[token, self._keys.channel, unlock_event(key, self._origin)]
        )
        return bool(await self._redis_call(command))

    def _maybe_orphaned(
        self, exc: RedisUnavailableError, key: str, lock_key: str, token: str
    ) -> None:
        """A claim failed without an answer: the command may have reached Redis all the same."""
        if not isinstance(exc, CircuitOpenError):  # that one was never sent
            self._orphans.add(key, lock_key, token)

    def _event_args(self, op: str, key: str) -> tuple[str, str]:
        return self._keys.channel, event_prefix(op, key, self._origin)

    def _count_write(self) -> None:
        self._stats.writes += 1
        self._stats.invalidations_sent += 1

    async def _redis_call(self, command: Coroutine[Any, Any, T]) -> T:
        """Await one Redis command, bounded by ``redis_timeout``, with errors wrapped; skipped
        at once (:class:`CircuitOpenError`) while the circuit breaker is open."""
        if self._sealed:
            command.close()
            raise ClientClosedError("the client is closed")
        mistake = self._listener.refusal
        if mistake is not None and not isinstance(mistake, RedisPermissionError):
            # The listener found a TLS mistake: no command can get through, and saying so
            # beats answering as if Redis were down. (A refusal shows on the calls it stops.)
            command.close()
            raise RedisConfigurationError(*mistake.args) from mistake.__cause__
        breaker = self._breaker
        if not breaker.allow():
            command.close()
            raise CircuitOpenError()
        probe = breaker.is_open
        try:
            result = await bounded(command, self._redis_timeout)
        except REFUSALS as exc:
            self._stats.redis_errors += 1
            if probe:
                breaker.abandoned()
            raise RedisPermissionError(f"Redis refused this client: {describe_error(exc)}") from exc
        except OUTAGES as exc:
            self._stats.redis_errors += 1
            mistake = tls_error(exc)
            if mistake is not None:
                if probe:
                    breaker.abandoned()
                raise mistake from exc
            breaker.failed(probe=probe)
            raise RedisUnavailableError(f"Redis is unreachable: {describe_error(exc)}") from exc
        except RedisError as exc:
            self._stats.redis_errors += 1
            if probe:
                breaker.abandoned()
            raise RedicacheError(f"Redis refused the command: {describe_error(exc)}") from exc
        except BaseException:
            if probe:
                breaker.abandoned()
            raise
        breaker.succeeded()
        return result

    def _decode(self, key: str, payload: bytes | str) -> Any:
        if isinstance(payload, str):  # a client made with decode_responses=True
            payload = payload.encode()
        try:
            return self._serializer.loads(payload)
        except Exception as exc:
            self._stats.decode_errors += 1
            logger.warning("the value of %r in Redis cannot be decoded (%r); refetching", key, exc)
            return _UNDECODABLE

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

    def _write_unknown(self, key: str) -> None:
        """A write or delete of ``key`` that may or may not have happened: nothing read before
        it may be kept, and the local copy goes."""
        self._local.discard(key)
        for guard in self._guards.get(key, ()):
            guard.void = True
        self._loads.detach(key)
        self._values.forget(key)

    def _remember(
        self,
        key: LocalKey,
        value: Any,
        guard: _Guard,
        version: int,
        size: int,
        ttl_ms: int,
        started: float,
    ) -> None:
        """Keep ``value`` locally unless an event newer than it arrived while it was in flight.

        ``ttl_ms`` is the key's TTL in Redis (0: none); the deadline counts from ``started``,
        taken before the command was sent, so the local copy never outlives the Redis key.
        """
        if guard.void or version < guard.min_version:
            return
        expires_at = started + ttl_ms / 1000 if ttl_ms > 0 else math.inf
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

    @contextmanager
    def _watching(self, key: LocalKey) -> Iterator[_Guard]:
        guard = self._watch(key)
        try:
            yield guard
        finally:
            self._unwatch(key, guard)

    def _watch(self, key: LocalKey) -> _Guard:
        guard = _Guard()
        guards = self._guards.get(key)
        if guards is None:
            self._guards[key] = [guard]
        else:
            guards.append(guard)
        return guard

    def _unwatch(self, key: LocalKey, guard: _Guard) -> None:
        guards = self._guards[key]
        if len(guards) == 1:
            del self._guards[key]
        else:
            guards.remove(guard)

    # -- listener callbacks ------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.op in (OP_SET, OP_DELETE):
            self._invalidate(event.key, event.version)
            # A load or read that started before this write is out of date for later callers.
            self._loads.detach(event.key)
            self._values.forget(event.key)
        elif event.op == OP_TARGET:
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

    def _on_subscribed(self, caught_up: bool) -> None:
        self._subscriptions += 1
        self._breaker.close()
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
        self._target_fields.clear()
        for guards in self._guards.values():
            for guard in guards:
                guard.void = True

    def _on_listener_lost(self) -> None:
        # Invalidations may be missed from now on: until the listener is back (and has replayed
        # what it missed), local copies are fallbacks, not answers.
        self._local.trusted = False

    def _on_ignored(self) -> None:
        self._stats.invalidations_ignored += 1


def _check_field(field: object) -> None:
    """A hash field to read: a non-empty str (the read script takes '' for the whole hash)
    that can be sent to Redis."""
    if not isinstance(field, str):
        raise InvalidArgumentTypeError(f"field must be a str, not {type(field).__name__}")
    if not field:
        raise InvalidArgumentError("field must not be empty")
    encoded(field, "field")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reply_size(data: Any) -> int:
    """Bytes of a target read's payload, for the local layer's budget."""
    if isinstance(data, bytes | str):
        return len(data)
    return sum(len(part) for part in data)


def _ttl_from_pttl(pttl: int) -> int:
    """PTTL's answer as a write's ttl: -1 (no expiry) becomes 0, and 0 (expiring now) 1 ms."""
    return 0 if pttl < 0 else max(pttl, 1)
