"""Coordination of loads and claims: one load per key in this process, one holder per key
across processes.

- :class:`SingleFlight` runs one task per key and lets every concurrent caller await it. The task
  belongs to the client's task group, not to the first caller, so a caller that is cancelled
  does not cancel the work the others wait for. A write of the key detaches the running task:
  it goes on for the callers that joined it, and later callers start afresh.
- :class:`Wakeups` lets a coroutine that waits on another process's lock sleep until the event
  that announces the key's new value (or the lock's release) arrives from the listener.
- :class:`LockManager` makes an engine's claims (the client's write locks, a builder's
  leadership leases) and releases them, announced, on every path; a claim whose fate is unknown
  (its reply or its release lost) goes to the orphans, released once Redis answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from .breaker import CircuitOpenError
from .errors import RedicacheError, RedisUnavailableError, describe_error
from .leases import Lease
from .orphans import OrphanedClaims, Release
from .scripts import Scripts
from .tasks import OwnedTasks

__all__ = ["LockManager", "SingleFlight", "Wakeups", "wait_event"]

logger = logging.getLogger("redicache_async")

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; ``run`` joins it when there is one."""

    __slots__ = ("_flights", "_owner")

    def __init__(self, owner: OwnedTasks) -> None:
        self._owner = owner
        self._flights: dict[Hashable, _Flight[T]] = {}

    def run(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]]) -> Awaitable[T]:
        """Join the task running for ``key``, or start one (``ClientClosedError`` once the
        owner is closed). Each caller gets a future of its own: cancelling it (the caller gave
        up) leaves the task running for the others."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(self._owner.spawn(factory(), name=f"redicache-load:{key}"))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._land(key, flight))
        return flight.join()

    def detach_all(self) -> None:
        """:meth:`detach` every key."""
        self._flights.clear()

    def detach(self, key: Hashable) -> None:
        """Let the next :meth:`run` of ``key`` start a new task; the running one goes on for
        the callers that joined it."""
        self._flights.pop(key, None)

    def _land(self, key: Hashable, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.settle()


class _Flight(Generic[T]):
    """A running task and the futures of the callers that joined it.

    One future per caller, settled together by one callback when the task ends: an
    ``asyncio.shield`` per caller would cost each two more turns of the event loop (its inner
    and outer callbacks), which 200 callers of one cold key pay in every waiting process."""

    __slots__ = ("_prune_at", "task", "waiters")

    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters: list[asyncio.Future[T]] = []
        self._prune_at = 16

    def join(self) -> asyncio.Future[T]:
        waiter: asyncio.Future[T] = self.task.get_loop().create_future()
        waiters = self.waiters
        waiters.append(waiter)
        if len(waiters) >= self._prune_at:
            # Callers that gave up (cancelled futures) are dropped as the list doubles, so a
            # long fetch joined and abandoned over and over holds only the live ones.
            waiters[:] = [w for w in waiters if not w.done()]
            self._prune_at = 2 * len(waiters) + 16
        return waiter

    def settle(self) -> None:
        task = self.task
        if task.cancelled():
            for waiter in self.waiters:
                waiter.cancel()
            return
        error = task.exception()  # retrieved here: its callers may all have gone away
        for waiter in self.waiters:
            if waiter.done():  # its caller gave up
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(task.result())


class Wakeups:
    """Per-key events set by the invalidation listener, one per waiting load (a key may have
    two: one detached by a write, and the one started after it)."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[str, list[asyncio.Event]] = {}

    def register(self, key: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(key, []).append(event)
        return event

    def unregister(self, key: str, event: asyncio.Event) -> None:
        events = self._events.get(key)
        if events is not None:
            events.remove(event)
            if not events:
                del self._events[key]

    def notify(self, key: str) -> None:
        for event in self._events.get(key, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds; True if it was set. Clears it."""
    if not event.is_set():
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
    event.clear()
    return True


class LockManager:
    """An engine's claims on Redis keys: :meth:`lease` makes one, :meth:`release` ends it.

    ``release_claim(key, lock_key, token)`` deletes a claim if it is still held with ``token``
    and announces that (True), or finds it is not (False); it raises
    :class:`RedisUnavailableError` when Redis did not answer, another :class:`RedicacheError`
    when Redis refused. ``noun`` names the claims in logs ("lock", "lease").
    """

    __slots__ = ("_new_lease", "_noun", "_release_claim", "orphans")

    def __init__(
        self,
        redis: Any,
        scripts: Scripts,
        release_claim: Release,
        *,
        ttl: float,
        timeout: float,
        noun: str,
    ) -> None:
        self._new_lease = functools.partial(Lease, redis, scripts, ttl=ttl, timeout=timeout)
        self._release_claim, self._noun = release_claim, noun
        #: Claims that may be held without anyone knowing: released in the background.
        self.orphans = OrphanedClaims(release_claim)

    def lease(self, lock_key: str, token: str | None = None, *, timeout: float = 0.0) -> Lease:
        """A claim on ``lock_key`` for the manager's ttl (``token``: one already sent), its
        commands bounded by ``timeout`` (default: the manager's)."""
        if timeout:
            return self._new_lease(lock_key, token=token, timeout=timeout)
        return self._new_lease(lock_key, token=token)

    async def release(self, key: str, lock_key: str, token: str) -> None:
        """Release the claim and announce it, so waiters elsewhere move at once. Should this be
        cancelled (it runs in clean-ups, which a close may cancel again) or go unanswered, the
        claim is left to the orphans, whose last round runs before the owner's close returns."""
        try:
            await self._release_claim(key, lock_key, token)
        except asyncio.CancelledError:
            self.orphans.add(key, lock_key, token)
            raise
        except RedisUnavailableError as exc:
            self.orphans.add(key, lock_key, token)
            logger.warning(
                "could not release the %s on %r yet: %s", self._noun, key, describe_error(exc)
            )
        except RedicacheError as exc:
            logger.warning(
                "could not release the %s on %r (it will expire): %s",
                self._noun,
                key,
                describe_error(exc),
            )

    def unanswered(self, exc: BaseException | None, key: str, lock_key: str, token: str) -> None:
        """A claim got no answer (``exc``; None: cancelled): the command may have reached Redis
        all the same, unless the circuit breaker stopped it before it was sent."""
        if not isinstance(exc, CircuitOpenError):
            self.orphans.add(key, lock_key, token)

    async def aclose(self, *, last_round: float) -> None:
        await self.orphans.aclose(last_round=last_round)
