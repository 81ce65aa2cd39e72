"""The background tasks of one object, owned as a group: started only while the owner is open,
and all cancelled and awaited by its close, so that none outlives it by construction.

Unlike ``asyncio.TaskGroup``, one task's failure does not cancel the others: each belongs to
the callers that await it (a load shared by several callers, say), who receive its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .cancellation import cancel_and_wait
from .errors import ClientClosedError

__all__ = ["OwnedTasks"]

T = TypeVar("T")


class OwnedTasks:
    """Tasks started by :meth:`spawn` until :meth:`aclose`, which ends them all."""

    __slots__ = ("_closed", "_owner", "_tasks")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the group; :class:`ClientClosedError` once it is closed."""
        if self._closed:
            coro.close()
            raise ClientClosedError(f"this {self._owner} is closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Refuse new tasks, cancel the running ones and wait until every one has ended. Their
        outcomes are left to whoever awaits them."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*(cancel_and_wait(task) for task in list(self._tasks)))
