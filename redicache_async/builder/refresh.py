"""One registration's refresh loop: follow until elected, then build on schedule until the
lease is lost or the loop is stopped. A build fetches, writes the result beside the targets
and swaps it in (``target_swap.py``); a failed build is retried sooner than the interval, backing
off."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from redicache_async.backoff import Backoff
from redicache_async.cancellation import cancel_and_wait
from redicache_async.election import Elected, Leadership
from redicache_async.errors import REDIS_FAILURES, BuildError, describe_error
from redicache_async.invalidation import OP_REFRESH, plain_event
from redicache_async.leases import Lease, new_token
from redicache_async.locks import wait_event
from redicache_async.logs import Throttle
from redicache_async.replies import text
from redicache_async.target_swap import Deposed, missing, swap, write
from redicache_async.targets import Prepared, describe, prepare
from redicache_async.tasks import OwnedTasks

from .spec import BuildStatus, Shared, Spec, closed_error

__all__ = ["Registration"]

logger = logging.getLogger("redicache_async")

#: The first retry of a failed build comes within this many seconds; the next ones back off
#: (jittered), up to the refresh interval.
_FIRST_RETRY: Final = 0.5


class Registration:
    """One registration's refresh loop: follow until elected, then build on schedule until the
    lease is lost or the loop is stopped."""

    def __init__(self, name: str, spec: Spec, shared: Shared) -> None:
        self.name = name
        self.spec = spec
        self._shared = shared
        self._leadership = Leadership(shared, name)
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
        self._retries = Backoff(_FIRST_RETRY, math.inf)
        self._last_built_at: float | None = None
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._build_now = False
        self._last_started: float | None = None  # loop time
        self._retry_at: float | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def start(self, tasks: OwnedTasks) -> None:
        self._task = tasks.spawn(self._run(), name=f"redicache-builder:{self.name}")

    async def stop(self, *, closing: bool = False) -> None:
        """End the loop (its clean-up releases the lease); calls waiting on it end with
        :class:`ClientClosedError` when the builder is ``closing``, else :class:`BuildError`."""
        if closing:
            self._stop_error = closed_error
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

    def update(self, spec: Spec) -> None:
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
        self._retries.reset()
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
            await self._leadership.resign(lease)

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
            leader, (built_at, spec) = await shared.gateway.bounded(pipe.execute())
        except REDIS_FAILURES as exc:
            logger.debug("reading the state of %r failed: %s", self.name, describe_error(exc))
            return
        recorded = spec is not None and text(spec) == describe(self.spec.targets)
        if not (leader and built_at and recorded) or not await self._targets_missing():
            return
        event = plain_event(OP_REFRESH, self.name, shared.origin)
        try:
            await shared.gateway.bounded(shared.redis.publish(shared.keys.builder_channel, event))
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
                self._retries.reset()
            else:
                self._failures_in_a_row += 1
                self._retry_at = started + min(spec.refresh_interval, self._retries.next())
            for waiter in waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    failure = BuildError(self.name, describe_error(error))
                    failure.__cause__ = error
                    waiter.set_exception(failure)

    async def _build(self, lease: Lease, spec: Spec) -> BaseException | None:
        """One build: fetch, write beside the targets, swap. Returns the error, if any; raises
        :class:`Deposed` when a newer leader refused the swap."""
        shared = self._shared
        started = time.monotonic()
        token = new_token()
        writes: list[tuple[str, Prepared]] = []
        swapped = False
        try:
            result = await shared.fetcher.run(self.name, spec.fetch, spec.args, spec.kwargs)
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
                interval=spec.refresh_interval,
                error=self._last_error,
            )
            return exc
        finally:
            if writes and not swapped:
                await self._discard(writes)
        duration = time.monotonic() - started
        self._log.reset("build")
        # Recorded before the build counts as done: whoever sees it done (a status, a waiter)
        # may close this builder, and the next leader's schedule needs the record.
        await self._leadership.record(
            lease,
            interval=spec.refresh_interval,
            duration=duration,
            spec=describe(spec.targets),
        )
        self.builds += 1
        self._last_built_at = time.time() - duration
        self._last_duration = duration
        self._last_error = None
        self.built.set()
        return None

    async def _discard(self, writes: list[tuple[str, Prepared]]) -> None:
        """Remove a failed build's temporary keys (they expire anyway if this fails)."""
        pipe = self._shared.redis.pipeline(transaction=False)
        for temporary, _ in writes:
            # one key per command: a cluster pipeline's unlink() of several keys is a coroutine
            pipe.execute_command("UNLINK", temporary)
        try:
            await self._shared.gateway.bounded(pipe.execute())
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
