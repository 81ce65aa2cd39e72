"""Coordination of loads: one per key in this process, one per key across processes.

- :class:`SingleFlight` runs one task per key and lets every concurrent caller await it. The task
  belongs to the client's task group, not to the first caller, so a caller that is cancelled
  does not cancel the work the others wait for. A write of the key detaches the running task:
  it goes on for the callers that joined it, and later callers start afresh.
- :class:`Wakeups` lets a coroutine that waits on another process's lock sleep until the event
  that announces the key's new value (or the lock's release) arrives from the listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from .tasks import OwnedTasks

__all__ = ["SingleFlight", "Wakeups", "wait_event"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; ``run`` joins it when there is one."""

    __slots__ = ("_owner", "_tasks")

    def __init__(self, owner: OwnedTasks) -> None:
        self._owner = owner
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def run(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]]) -> Awaitable[T]:
        """Join the task running for ``key``, or start one (``ClientClosedError`` once the
        owner is closed)."""
        task = self._tasks.get(key)
        if task is None:
            task = self._owner.spawn(factory(), name=f"redicache-load:{key}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return asyncio.shield(task)

    def detach_all(self) -> None:
        """:meth:`detach` every key."""
        self._tasks.clear()

    def detach(self, key: Hashable) -> None:
        """Let the next :meth:`run` of ``key`` start a new task; the running one goes on for
        the callers that joined it."""
        self._tasks.pop(key, None)

    def _forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here: its callers may all have gone away


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
