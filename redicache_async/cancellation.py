"""Cancellation that survives redis-py on Python 3.11.

redis-py sends every command under ``asyncio.wait_for`` (its default ``socket_timeout``), and
Python 3.11's ``wait_for`` drops a cancellation that arrives as the send completes
(CPython gh-86296, fixed in 3.12): the command returns normally and the caller carries on as if
it had not been cancelled. Measured here, it lost 299 of 300 cancellations that landed during a
large pipeline. The task still counts the request (``Task.cancelling()``), so it can be restored.

:func:`bounded` is also the deadline of every Redis call the library makes, so it is on the hot
path: its deadlines share one timer per event loop (``_Watchdog``).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["bounded", "cancel_and_wait"]

T = TypeVar("T")


async def bounded(command: Awaitable[T], timeout: float) -> T:
    """Await ``command`` for at most ``timeout`` seconds (else :class:`TimeoutError`, as
    ``asyncio.timeout`` does); a cancellation of the caller that was swallowed meanwhile is
    raised here."""
    task = asyncio.current_task()
    if task is None:
        async with asyncio.timeout(timeout):
            return await command
    requested = task.cancelling()
    watchdog = _watchdog(task.get_loop())
    watch = watchdog.add(task, timeout)
    try:
        result = await command
    except asyncio.CancelledError:
        if watch.expired and task.uncancel() <= requested:
            raise TimeoutError from None
        raise
    finally:
        watchdog.discard(watch)
    if watch.expired:
        task.uncancel()  # the command swallowed the watchdog's cancellation and finished
    if task.cancelling() > requested:
        raise asyncio.CancelledError
    return result


class _Watch:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False


class _Watchdog:
    """The deadlines of one event loop's bounded calls, served by a single timer.

    ``asyncio.timeout`` costs a timer handle per call (about 9 µs a call here, as much as 6%
    of a Redis round trip); here a call costs a set insertion, and the timer, set for the
    earliest deadline, is moved only when a call has an earlier one than it. With calls of
    one timeout each, that is once per timeout period."""

    __slots__ = ("_loop", "_timer", "_wake_at", "_watches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watches: set[_Watch] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    def add(self, task: asyncio.Task[Any], timeout: float) -> _Watch:
        watch = _Watch(task, self._loop.time() + timeout)
        self._watches.add(watch)
        if watch.deadline < self._wake_at:
            self._schedule(watch.deadline)
        return watch

    def discard(self, watch: _Watch) -> None:
        self._watches.discard(watch)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = when
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer, self._wake_at = None, math.inf
        now = self._loop.time()
        earliest = math.inf
        for watch in list(self._watches):
            if watch.deadline <= now:
                self._watches.discard(watch)
                watch.expired = True
                watch.task.cancel()
            elif watch.deadline < earliest:
                earliest = watch.deadline
        if earliest < math.inf:
            self._schedule(earliest)


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
    weakref.WeakKeyDictionary()
)


def _watchdog(loop: asyncio.AbstractEventLoop) -> _Watchdog:
    watchdog = _watchdogs.get(loop)
    if watchdog is None:
        watchdog = _watchdogs[loop] = _Watchdog(loop)
    return watchdog


async def cancel_and_wait(task: asyncio.Task[object], *, retry_every: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again should a cancellation
    be lost on the way. Exceptions of the task are left for the caller to collect."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_every)
