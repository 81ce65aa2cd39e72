"""Soft timeouts (``get_or_init(..., soft_timeout=s)``): a caller that has waited ``s`` seconds
for a load, while an older copy of the value is at hand, is answered with that copy; the load
goes on without it.

A caller never runs the load itself: it joins a task that its owner runs and owns (a
``SingleFlight`` task of the client's ``OwnedTasks``), through a future of its own. Giving up on
that future leaves the task running for the callers still joined to it and for the result it will
store, and the owner's close still cancels it (its clean-up then releases its lock). So the
fetch that overran the soft timeout stays bounded by ``fetch_timeout``, its fenced write stays
refused when a write or delete came meanwhile, and nothing of it outlives the owner.

Each caller counts its own ``s`` from the moment it joined: a soft timeout bounds how long a
call waits for a fetch, whether it joined the fetch of its own process or waits for the holder
of the lock in another one (that wait is a load of its own process too). Without a copy at
hand when ``s`` has passed, the caller waits for the load as it would without a soft timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import InvalidArgumentError
from .validation import check_seconds

__all__ = ["check_soft_timeout", "wait_or_fall_back"]

T = TypeVar("T")


def check_soft_timeout(value: object, fetch_timeout: float | None) -> float | None:
    """None, or seconds greater than zero and below ``fetch_timeout`` (when there is one): a
    soft timeout at or past the hard one would never answer before the fetch is abandoned."""
    if value is None:
        return None
    seconds = check_seconds("soft_timeout", value)
    if fetch_timeout is not None and seconds >= fetch_timeout:
        raise InvalidArgumentError(
            f"soft_timeout must be below fetch_timeout ({fetch_timeout:g} s), got {value!r}"
        )
    return seconds


async def wait_or_fall_back(
    joined: Awaitable[T], seconds: float, fallback: Callable[[], T | None]
) -> T:
    """``await joined``, unless it has not ended after ``seconds`` and ``fallback()`` then
    answers something other than None: that answer, at once.

    ``joined`` must be this caller's own future of a task owned elsewhere (``SingleFlight.run``
    gives one): only that future is cancelled when this caller stops waiting, never the task."""
    future: asyncio.Future[T] = asyncio.ensure_future(joined)
    try:
        done, _ = await asyncio.wait((future,), timeout=seconds)
        if not done:
            answer = fallback()
            if answer is not None:
                return answer
        return await future
    finally:
        # A future left pending would report the task's outcome as never retrieved.
        if not future.done():
            future.cancel()
