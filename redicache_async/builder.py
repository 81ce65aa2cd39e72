"""CacheBuilder: caches that build themselves at once and then every interval.

Each registration runs as one task owned by the builder. Among every instance that registers
the same name, one leads (see ``election.py``) and builds; the others wait to take over. A build
fetches, writes the result beside its targets and swaps it in atomically (see ``targets.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .cancellation import bounded, cancel_and_wait
from .election import Elected, Leadership
from .errors import (
    REDIS_FAILURES,
    BuildError,
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    UnknownRegistrationError,
    describe_error,
)
from .fetching import call_fetch
from .invalidation import (
    OP_BUILT,
    OP_REFRESH,
    OP_RESIGN,
    Event,
    plain_event,
)
from .keys import KeySpace
from .leases import Lease, new_token
from .lifecycle import Lifecycle
from .listener import InvalidationListener
from .locks import wait_event
from .logs import Throttle
from .scripts import Scripts
from .serializers import JsonSerializer, Serializer
from .stats import BuilderStats
from .targets import Deposed, Prepared, Target, describe, missing, prepare, swap, write
from .tasks import OwnedTasks
from .validation import check_callable, check_optional_seconds, check_seconds

__all__ = ["BuildStatus", "CacheBuilder"]

logger = logging.getLogger("redicache_async")

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")
_UNSET: Final[Any] = object()


@dataclass(frozen=True, slots=True)
class BuildStatus:
    """One registration as this instance sees it (``CacheBuilder.status``)."""

    name: str
    #: This instance holds the registration's lease and does its builds.
    is_leader: bool
    refresh_interval: float
    targets: tuple[str, ...]
    #: Successful and failed builds run by this instance.
    builds: int
    failures: int
    #: Wall-clock time (``time.time()``) at which the newest build known here started; it may
    #: have been run by another instance.
    last_built_at: float | None
    #: Seconds that this instance's last successful build took.
    last_duration: float | None
    #: The newest failure of this instance's builds (``"Type: message"``); None after a success.
    last_error: str | None
    #: When the next build is due (wall clock), while leading.
    next_build_at: float | None
    #: The fencing epoch of the current term, while leading.
    epoch: int | None


@dataclass(frozen=True, slots=True)
class _Spec:
    fetch: Callable[..., Any]
    targets: tuple[Target, ...]
    refresh_interval: float
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    allow_empty: bool


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every registration of one builder uses."""

    redis: Any
    scripts: Scripts
    keys: KeySpace
    serializer: Serializer
    origin: str
    leader_id: str
    lease_ttl: float
    redis_timeout: float
    fetch_timeout: float | None


class CacheBuilder(Lifecycle):
    """Registers caches that build themselves, over ``redis`` (``redis.asyncio.Redis``).

    Use it as ``async with CacheBuilder(r, namespace="app") as builder:`` (or ``await
    builder.start()`` / ``await builder.aclose()``). Closing it stops every refresh loop and
    releases this instance's leases, so that another instance takes over at once.
    """

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str = "redicache",
        lease_ttl: float = 10.0,
        serializer: Serializer | None = None,
        redis_timeout: float = 1.0,
        fetch_timeout: float | None = 300.0,
    ) -> None:
        keys = KeySpace(namespace)
        lease_ttl = check_seconds("lease_ttl", lease_ttl)
        if lease_ttl < 0.1:
            raise InvalidArgumentError(f"lease_ttl must be at least 0.1 s, got {lease_ttl!r}")
        if serializer is None:
            serializer = JsonSerializer()
        elif not isinstance(serializer, Serializer):
            raise InvalidArgumentTypeError("serializer must have dumps(value) and loads(bytes)")
        origin = uuid.uuid4().hex[:16]
        self._shared = _Shared(
            redis=redis,
            scripts=Scripts(redis),
            keys=keys,
            serializer=serializer,
            origin=origin,
            leader_id=f"{socket.gethostname()}:{os.getpid()}:{origin[:8]}",
            lease_ttl=lease_ttl,
            redis_timeout=check_seconds("redis_timeout", redis_timeout),
            fetch_timeout=check_optional_seconds("fetch_timeout", fetch_timeout),
        )
        self._registrations: dict[str, _Registration] = {}
        #: The refresh loops: none outlives aclose().
        self._tasks = OwnedTasks("CacheBuilder")
        self._ignored_messages = 0
        self._listener = InvalidationListener(
            redis,
            keys.builder_channel,
            on_event=self._on_event,
            on_subscribed=self._on_subscribed,
            on_ignored=self._on_ignored,
            timeout=self._shared.redis_timeout,
        )

    def __repr__(self) -> str:
        return f"<CacheBuilder namespace={self.namespace!r} id={self._shared.leader_id}>"

    @property
    def namespace(self) -> str:
        """The prefix of the keys and channels this builder writes (not of its targets)."""
        return self._shared.keys.namespace

    @property
    def ignored_messages(self) -> int:
        """Messages on the builders' channel that were malformed or foreign, and so ignored."""
        return self._ignored_messages

    @property
    def instance_id(self) -> str:
        """How this instance names itself as a leader in Redis: ``host:pid:random``."""
        return self._shared.leader_id

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the builders' channel; returns once subscribed (or after
        ``redis_timeout`` when Redis is unreachable: the builder then keeps trying)."""
        await super().start()

    async def _startup(self) -> None:
        subscribed = await self._listener.start(wait=self._shared.redis_timeout)
        if not subscribed:
            logger.warning("Redis is not reachable yet; registrations will build once it is")

    async def aclose(self) -> None:
        """Stop every refresh loop and release this instance's leases (announced, so that a
        follower takes over at once). Idempotent; shielded from cancellation."""
        await super().aclose()

    async def _shutdown(self) -> None:
        registrations = list(self._registrations.values())
        self._registrations.clear()
        await asyncio.gather(*(registration.stop(closing=True) for registration in registrations))
        await self._tasks.aclose()
        await self._listener.aclose()

    # -- registrations -----------------------------------------------------------------------

    async def register(
        self,
        fetch: Callable[..., Any],
        *,
        targets: Sequence[Target],
        refresh_interval: float,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        allow_empty: bool = True,
    ) -> str:
        """Build ``targets`` from ``fetch(*args, **kwargs)`` now and every ``refresh_interval``
        seconds, on whichever instance leads ``name``. Returns the name.

        Without a ``name``, one is derived from the targets, so every instance that registers
        the same targets agrees on it. An empty result empties the targets unless
        ``allow_empty`` is False, which treats it as a failed build and keeps the old data.
        """
        spec = _Spec(
            fetch=check_callable("fetch", fetch),
            targets=_check_targets(targets),
            refresh_interval=check_seconds("refresh_interval", refresh_interval),
            args=_check_args(args),
            kwargs=_check_kwargs(kwargs),
            allow_empty=_check_flag("allow_empty", allow_empty),
        )
        if name is None:
            digest = hashlib.sha1(describe(spec.targets).encode(), usedforsecurity=False)
            name = f"targets-{digest.hexdigest()[:16]}"
        elif not isinstance(name, str):
            raise InvalidArgumentTypeError(f"name must be a str, not {type(name).__name__}")
        elif not _NAME_RE.fullmatch(name):
            raise InvalidArgumentError(
                f"name {name!r} must be 1 to 200 letters, digits, '_' or '-'"
            )
        self._check_open()
        if name in self._registrations:
            raise InvalidArgumentError(f"a registration named {name!r} already exists")
        self._check_targets_free(spec.targets, name)
        registration = _Registration(name, spec, self._shared)
        registration.start(self._tasks)
        self._registrations[name] = registration
        return name

    async def update(
        self,
        name: str,
        *,
        fetch: Callable[..., Any] = _UNSET,
        targets: Sequence[Target] = _UNSET,
        refresh_interval: float = _UNSET,
        args: Sequence[Any] = _UNSET,
        kwargs: Mapping[str, Any] | None = _UNSET,
        allow_empty: bool = _UNSET,
    ) -> None:
        """Change a registration live. A new fetch, arguments or targets are built at once (on
        the leader); a new interval reschedules the next build from the previous one's start.
        Targets left out keep their last data."""
        registration = self._get(name)
        changes: dict[str, Any] = {}
        if fetch is not _UNSET:
            changes["fetch"] = check_callable("fetch", fetch)
        if targets is not _UNSET:
            changes["targets"] = _check_targets(targets)
            self._check_targets_free(changes["targets"], name)
        if refresh_interval is not _UNSET:
            changes["refresh_interval"] = check_seconds("refresh_interval", refresh_interval)
        if args is not _UNSET:
            changes["args"] = _check_args(args)
        if kwargs is not _UNSET:
            changes["kwargs"] = _check_kwargs(kwargs)
        if allow_empty is not _UNSET:
            changes["allow_empty"] = _check_flag("allow_empty", allow_empty)
        self._check_open()
        registration.update(dataclasses.replace(registration.spec, **changes))

    async def unregister(self, name: str) -> None:
        """Stop building ``name`` and release its lease; its targets keep their last data."""
        registration = self._get(name)
        del self._registrations[name]
        await registration.stop()

    async def refresh(self, name: str) -> None:
        """Rebuild ``name`` now.

        On the leader, returns once that build is swapped in and raises :class:`BuildError`
        if it failed (the previous data stays). On a follower, asks the leader over pub/sub and
        returns at once.
        """
        registration = self._get(name)
        self._check_open()
        if registration.is_leader:
            await registration.refresh()
            return
        channel = self._shared.keys.builder_channel
        event = plain_event(OP_REFRESH, name, self._shared.origin)
        try:
            await bounded(self._shared.redis.publish(channel, event), self._shared.redis_timeout)
        except REDIS_FAILURES as exc:
            raise BuildError(name, f"could not ask the leader: {describe_error(exc)}") from exc

    def status(self, name: str) -> BuildStatus:
        """How ``name`` stands on this instance."""
        return self._get(name).status()

    def stats(self) -> BuilderStats:
        """This instance's counters, summed over its registrations. Plain reads, safe from
        any thread."""
        registrations = list(self._registrations.values())
        return BuilderStats(
            registrations=len(registrations),
            leading=sum(r.is_leader for r in registrations),
            terms=sum(r.terms for r in registrations),
            builds=sum(r.builds for r in registrations),
            failures=sum(r.failures for r in registrations),
            ignored_messages=self._ignored_messages,
        )

    async def wait_built(self, name: str, timeout: float | None = None) -> None:
        """Return once ``name`` has been built, by any instance (at once if it already was);
        raises TimeoutError after ``timeout`` seconds."""
        registration = self._get(name)
        self._check_open()
        async with asyncio.timeout(check_optional_seconds("timeout", timeout)):
            await registration.wait_built()

    def names(self) -> list[str]:
        """The names registered on this builder."""
        return list(self._registrations)

    def _get(self, name: str) -> _Registration:
        registration = self._registrations.get(name) if isinstance(name, str) else None
        if registration is None:
            raise UnknownRegistrationError(name)
        return registration

    def _check_targets_free(self, targets: tuple[Target, ...], name: str) -> None:
        for other in self._registrations.values():
            if other.name == name:
                continue
            taken = {t.key for t in other.spec.targets}.intersection(t.key for t in targets)
            if taken:
                raise InvalidArgumentError(
                    f"target {sorted(taken)[0]!r} is already built by registration {other.name!r}"
                )

    # -- listener callbacks ------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        registration = self._registrations.get(event.key)
        if registration is None:
            return
        if event.op == OP_RESIGN and not registration.is_leader:
            registration.wake.set()  # the lease is free: try to take it now
        elif event.op == OP_REFRESH and registration.is_leader:
            registration.request_build()
        elif event.op == OP_BUILT:
            registration.note_built(event.version)

    def _on_ignored(self) -> None:
        self._ignored_messages += 1

    def _on_subscribed(self, caught_up: bool) -> None:
        # A release may have been announced while the listener was away.
        for registration in self._registrations.values():
            if not registration.is_leader:
                registration.wake.set()


def _check_targets(targets: object) -> tuple[Target, ...]:
    if isinstance(targets, Target) or not isinstance(targets, Sequence):
        raise InvalidArgumentTypeError("targets must be a list of Target")
    if not targets:
        raise InvalidArgumentError("targets must not be empty")
    seen: set[str] = set()
    for target in targets:
        if not isinstance(target, Target):
            raise InvalidArgumentTypeError(
                f"targets must hold Target objects, not {type(target).__name__}"
            )
        if target.key in seen:
            raise InvalidArgumentError(f"target {target.key!r} is listed twice")
        seen.add(target.key)
    return tuple(targets)


def _check_args(args: object) -> tuple[Any, ...]:
    if not isinstance(args, list | tuple):
        raise InvalidArgumentTypeError(f"args must be a tuple or list, not {type(args).__name__}")
    return tuple(args)


def _check_kwargs(kwargs: object) -> Mapping[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidArgumentTypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
    if not all(isinstance(key, str) for key in kwargs):
        raise InvalidArgumentTypeError("kwargs keys must be str")
    return dict(kwargs)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentTypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


class _Registration:
    """One registration's refresh loop: follow until elected, then build on schedule until the
    lease is lost or the loop is stopped."""

    def __init__(self, name: str, spec: _Spec, shared: _Shared) -> None:
        self.name = name
        self.spec = spec
        self._shared = shared
        self._leadership = Leadership(
            shared.redis,
            shared.scripts,
            shared.keys,
            name,
            ttl=shared.lease_ttl,
            timeout=shared.redis_timeout,
            leader_id=shared.leader_id,
        )
        #: Set to cut a wait short: a released lease (follower), a refresh or an update (leader).
        self.wake = asyncio.Event()
        #: Set once a build of this registration is known, by any instance.
        self.built = asyncio.Event()
        #: Set when the registration is stopped (unregistered, or its builder closed).
        self._stopped = asyncio.Event()
        self._stop_error: Callable[[str], Exception] = self._build_error
        self.is_leader = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._epoch: str | None = None
        # Counters, plain ints so that stats() can be read from any thread (OpenTelemetry
        # collects from its own): builds swapped in, builds failed, terms won.
        self.builds = 0
        self.failures = 0
        self.terms = 0
        self._log = Throttle()
        self._failures_in_a_row = 0
        self._last_built_at: float | None = None
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._build_now = False
        self._last_started: float | None = None  # loop time
        self._retry_at: float | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # -- control, from the builder -----------------------------------------------------------

    def start(self, tasks: OwnedTasks) -> None:
        self._task = tasks.spawn(self._run(), name=f"redicache-builder:{self.name}")

    async def stop(self, *, closing: bool = False) -> None:
        """End the loop (its clean-up releases the lease); calls waiting on it end with
        :class:`ClientClosedError` when the builder is ``closing``, else :class:`BuildError`."""
        if closing:
            self._stop_error = _closed_error
        self._stopped.set()
        task, self._task = self._task, None
        if task is None:
            return
        # A cancellation can be lost inside the user's fetch (redis-py on Python 3.11, see
        # cancellation.py): the loop also checks this flag, and cancels are repeated, spaced
        # wider than the bounded clean-up (lease release, temporary keys) they could cut short.
        self._stopping = True
        await cancel_and_wait(task, retry_every=2 * self._shared.redis_timeout + 0.1)
        await self._leadership.aclose()
        if not task.cancelled() and task.exception() is not None:
            logger.error("the refresh loop of %r failed", self.name, exc_info=task.exception())
        self._fail_waiters("the registration was stopped before the build ran")

    def update(self, spec: _Spec) -> None:
        old, self.spec = self.spec, spec
        if (old.fetch, old.targets, old.args, old.kwargs) != (
            spec.fetch,
            spec.targets,
            spec.args,
            spec.kwargs,
        ):
            self._build_now = True
        self.wake.set()

    def note_built(self, started_ms: int) -> None:
        """Another instance (or an earlier term) built this registration at ``started_ms``."""
        started = started_ms / 1000
        if self._last_built_at is None or started > self._last_built_at:
            self._last_built_at = started
        self.built.set()

    def request_build(self) -> None:
        self._build_now = True
        self.wake.set()

    async def wait_built(self) -> None:
        """Return once a build is known; raise if the registration stops first."""
        if not self.built.is_set():
            built = asyncio.ensure_future(self.built.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({built, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                built.cancel()
                stopped.cancel()
            if not self.built.is_set():
                raise self._stop_error("the registration was stopped before it was built")

    async def refresh(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.request_build()
        await waiter

    def status(self) -> BuildStatus:
        next_at = None
        if self.is_leader:
            delay = max(0.0, self._next_build_at() - asyncio.get_running_loop().time())
            next_at = time.time() + delay
        return BuildStatus(
            name=self.name,
            is_leader=self.is_leader,
            refresh_interval=self.spec.refresh_interval,
            targets=tuple(t.key for t in self.spec.targets),
            builds=self.builds,
            failures=self.failures,
            last_built_at=self._last_built_at,
            last_duration=self._last_duration,
            last_error=self._last_error,
            next_build_at=next_at,
            epoch=int(self._epoch) if self.is_leader and self._epoch else None,
        )

    # -- the loop ----------------------------------------------------------------------------

    def _check_stopping(self) -> None:
        if self._stopping:
            raise asyncio.CancelledError

    async def _run(self) -> None:
        await self._ask_leader_if_missing()
        while True:
            self._check_stopping()
            lease, elected = await self._leadership.elect(self.wake, self.note_built)
            try:
                await self._lead(lease, elected)
            except Exception:
                # A bug of ours must not end the registration: log it, step back, elect again.
                logger.exception("building %r failed unexpectedly; electing again", self.name)
                await asyncio.sleep(self._shared.lease_ttl / 3)

    async def _lead(self, lease: Lease, elected: Elected) -> None:
        loop = asyncio.get_running_loop()
        self.is_leader = True
        self.terms += 1
        self._epoch = elected.epoch
        self._retry_at = None
        self._failures_in_a_row = 0
        self._last_started = None
        if elected.built_at_ms is not None and elected.spec == describe(self.spec.targets):
            # Continue the schedule of the previous leader: the data is as fresh as its build.
            age = max(0.0, (elected.now_ms - elected.built_at_ms) / 1000)
            self._last_started = loop.time() - age
            self._last_built_at = max(self._last_built_at or 0.0, time.time() - age)
            self.built.set()
        logger.info("%s leads %r (epoch %s)", self._shared.leader_id, self.name, elected.epoch)
        lost = False

        def on_lost() -> None:
            nonlocal lost
            lost = True
            scope.reschedule(loop.time())

        try:
            async with asyncio.timeout(None) as scope:
                async with lease.kept_alive(strict=True, on_lost=on_lost):
                    if self._last_started is not None and await self._targets_missing():
                        self._build_now = True
                    await self._build_on_schedule(lease)
        except TimeoutError:
            if not lost:
                raise
            logger.warning("%r: the lease could not be renewed; stopped building", self.name)
        except Deposed as exc:
            logger.warning("%r: %s; stopped building", self.name, exc)
        finally:
            self.is_leader = False
            self._fail_waiters("this instance stopped leading before the build ran")
            await self._leadership.resign(lease, self._shared.origin)

    async def _targets_missing(self) -> bool:
        """Whether a target lost the data of the recorded build (deleted or evicted by hand or
        by Redis), so that the schedule, fresh as it is, must not wait an interval to restore
        it. False when Redis cannot tell: the schedule then goes on."""
        shared = self._shared
        try:
            gone = await missing(
                shared.redis, shared.keys, self.spec.targets, timeout=shared.redis_timeout
            )
        except REDIS_FAILURES as exc:
            logger.debug("checking the targets of %r failed: %s", self.name, describe_error(exc))
            return False
        if gone:
            logger.warning(
                "%r: target %s lost its data (deleted or evicted); rebuilding now",
                self.name,
                ", ".join(repr(key) for key in gone),
            )
        return bool(gone)

    async def _ask_leader_if_missing(self) -> None:
        """On (re)registration, while another instance leads: ask it to rebuild at once if a
        target lost the data of its recorded build. (Without a leader, whoever is elected
        checks the targets itself as its term starts.)"""
        shared = self._shared
        pipe = shared.redis.pipeline(transaction=False)
        pipe.exists(shared.keys.lease(self.name))
        pipe.hmget(shared.keys.state(self.name), ["built_at", "spec"])
        try:
            leader, (built_at, spec) = await bounded(pipe.execute(), shared.redis_timeout)
        except REDIS_FAILURES as exc:
            logger.debug("reading the state of %r failed: %s", self.name, describe_error(exc))
            return
        recorded = spec is not None and _text(spec) == describe(self.spec.targets)
        if not (leader and built_at and recorded) or not await self._targets_missing():
            return
        event = plain_event(OP_REFRESH, self.name, shared.origin)
        try:
            await bounded(
                shared.redis.publish(shared.keys.builder_channel, event), shared.redis_timeout
            )
        except REDIS_FAILURES as exc:
            logger.warning("could not ask the leader of %r to rebuild: %s", self.name, exc)

    def _next_build_at(self) -> float:
        if self._build_now or self._last_started is None:
            return -math.inf
        if self._retry_at is not None:
            return self._retry_at
        return self._last_started + self.spec.refresh_interval

    async def _build_on_schedule(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._check_stopping()
            while (delay := self._next_build_at() - loop.time()) > 0:
                self.wake.clear()
                await wait_event(self.wake, delay)
            self._build_now = False
            waiters, self._waiters = self._waiters, []
            started = self._last_started = loop.time()
            spec = self.spec
            try:
                error = await self._build(lease, spec)
            except BaseException:
                self._waiters[:0] = waiters  # failed by _lead's cleanup, with the reason
                raise
            if error is None:
                self._retry_at = None
                self._failures_in_a_row = 0
            else:
                self._failures_in_a_row += 1
                backoff = 2.0 ** (self._failures_in_a_row - 1)
                self._retry_at = started + min(spec.refresh_interval, backoff)
            for waiter in waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    failure = BuildError(self.name, describe_error(error))
                    failure.__cause__ = error
                    waiter.set_exception(failure)

    async def _build(self, lease: Lease, spec: _Spec) -> BaseException | None:
        """One build: fetch, write beside the targets, swap. Returns the error, if any; raises
        :class:`Deposed` when a newer leader refused the swap."""
        shared = self._shared
        started = time.monotonic()
        token = new_token()
        writes: list[tuple[str, Prepared]] = []
        swapped = False
        try:
            result = await self._fetch(spec)
            self._check_stopping()
            prepared = await prepare(
                spec.targets, result, shared.serializer.dumps, allow_empty=spec.allow_empty
            )
            writes = [
                (shared.keys.temporary(p.target.key, f"{token}:{i}"), p)
                for i, p in enumerate(prepared)
            ]
            await write(shared.redis, writes, timeout=shared.redis_timeout)
            await swap(
                shared.redis,
                shared.scripts,
                shared.keys,
                writes,
                name=self.name,
                origin=shared.origin,
                token=lease.token,
                lease_key=lease.key,
                epoch=self._epoch or "0",
                timeout=shared.redis_timeout,
            )
            swapped = True
        except (asyncio.CancelledError, Deposed):
            raise
        except Exception as exc:
            self.failures += 1
            self._last_error = describe_error(exc)
            first = self._failures_in_a_row == 0  # with its traceback; the next ones without
            self._log.log(
                logging.ERROR if first else logging.WARNING,
                "build",
                "build of %r failed; its targets keep their previous data: %s",
                self.name,
                exc,
                exc_info=exc if first else None,
            )
            await self._leadership.record(
                lease,
                origin=shared.origin,
                interval=spec.refresh_interval,
                error=self._last_error,
            )
            return exc
        finally:
            if writes and not swapped:
                await self._discard(writes)
        duration = time.monotonic() - started
        self._log.reset("build")
        self.builds += 1
        self._last_built_at = time.time() - duration
        self._last_duration = duration
        self._last_error = None
        self.built.set()
        await self._leadership.record(
            lease,
            origin=shared.origin,
            interval=spec.refresh_interval,
            duration=duration,
            spec=describe(spec.targets),
        )
        return None

    async def _fetch(self, spec: _Spec) -> Any:
        timeout = self._shared.fetch_timeout
        if timeout is None:
            return await call_fetch(spec.fetch, spec.args, spec.kwargs)
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await call_fetch(spec.fetch, spec.args, spec.kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                raise FetchTimeout(self.name, timeout) from exc
            raise

    async def _discard(self, writes: list[tuple[str, Prepared]]) -> None:
        """Remove a failed build's temporary keys (they expire anyway if this fails)."""
        pipe = self._shared.redis.pipeline(transaction=False)
        for temporary, _ in writes:
            # one key per command: a cluster pipeline's unlink() of several keys is a coroutine
            pipe.execute_command("UNLINK", temporary)
        try:
            await bounded(pipe.execute(), self._shared.redis_timeout)
        except REDIS_FAILURES as exc:
            logger.debug(
                "removing the temporary keys of %r failed: %s", self.name, describe_error(exc)
            )

    def _build_error(self, reason: str) -> Exception:
        return BuildError(self.name, reason)

    def _fail_waiters(self, reason: str) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(self._stop_error(reason))


def _closed_error(reason: str) -> Exception:
    return ClientClosedError(f"the builder was closed: {reason}")
