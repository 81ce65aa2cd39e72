"""Coordination of loads: one per key in this process, one per key across processes.

- :class:`SingleFlight` runs one task per key and lets every concurrent caller await it. The task
  belongs to the flight group, not to the first caller, so a caller that is cancelled does not
  cancel the work the others wait for.
- :class:`Wakeups` lets a coroutine that waits on another process's lock sleep until the event
  that announces the key's new value (or the lock's release) arrives from the listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from .cancellation import cancel_and_wait

__all__ = ["SingleFlight", "Wakeups", "wait_event"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; ``run`` joins it when there is one."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def run(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]]) -> Awaitable[T]:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(factory(), name=f"redicache-load:{key}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return asyncio.shield(task)

    def _forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here: its callers may all have gone away

    async def aclose(self) -> None:
        """Cancel every running task and wait for them to finish."""
        await asyncio.gather(*(cancel_and_wait(task) for task in list(self._tasks.values())))


class Wakeups:
    """Per-key events set by the invalidation listener."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def register(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def unregister(self, key: str, event: asyncio.Event) -> None:
        if self._events.get(key) is event:
            del self._events[key]

    def notify(self, key: str) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        for event in self._events.values():
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
