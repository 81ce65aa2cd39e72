"""Waiting for a connection of a Redis client's pool, within a call's deadline.

A pool at its ``max_connections`` is back-pressure, not an outage: redis-py's plain
``ConnectionPool`` raises ``MaxConnectionsError`` at once, and a ``BlockingConnectionPool``
waits on its own clock (20 s by default), not the caller's. So the gateway asks the pool first
(``can_get_connection()``, redis-py's own test) and, while it has no room, waits here until a
connection comes free or the call's deadline passes. No command starts until there is room, so
none waits inside redis-py's pool.

A call of the gateway that ends frees its connection and wakes the first waiter for which
there is room then (first come, first served). Connections held by others (the listener's
subscription, a lease's renewals, the user's own commands on the same client) are freed without
a word, so a waiter also looks again on its own, after 1 ms, then twice as long each time up to
50 ms.

A cluster's nodes each have a pool of their own, which redis-py gives no public way to ask:
there a call meets the exhausted pool as ``MaxConnectionsError``, which the gateway reports as
:class:`~redicache_async.errors.PoolExhaustedError` at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

__all__ = ["PoolGate", "room_check"]

_FIRST_LOOK: Final = 0.001
_MAX_LOOK: Final = 0.05

#: Truthy while the pool can give a connection now.
Room = Callable[[], object]


def room_check(redis: Any) -> Room | None:
    """The pool's own "can a connection be had now" test, or None where there is none (a
    cluster; a pool of another kind)."""
    pool = getattr(redis, "connection_pool", None)
    # Called as it is on every command: a wrapper would cost a third more (about 60 ns).
    return getattr(pool, "can_get_connection", None)


class PoolGate:
    """Callers waiting for room in one pool, first come first served."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: deque[tuple[Room, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    async def wait(self, room: Room, deadline: float) -> bool:
        """Wait until ``room()`` or the loop's clock reaches ``deadline``; whether there is
        room. Cancellation propagates."""
        loop = asyncio.get_running_loop()
        look = _FIRST_LOOK
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return bool(room())
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (room, waiter)
            self._waiters.append(entry)
            timer = loop.call_later(min(look, remaining), _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if entry in self._waiters:  # woken by its timer, or cancelled
                    self._waiters.remove(entry)
            if room():
                return True
            look = min(look * 2, _MAX_LOOK)

    def released(self) -> None:
        """A connection came back: wake the first waiter that has room now."""
        for entry in self._waiters:
            room, waiter = entry
            if not waiter.done() and room():
                self._waiters.remove(entry)
                waiter.set_result(None)
                return


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
