"""Clearing a namespace in O(1): ``clear()`` records when it happened, and every value not
newer than that is gone.

The clear time is one key in the namespace's own slot, a version on the values' clock (server
µs, bumped so that it only grows). A value's version is when its fetch claimed the key's lock
(or when ``set`` wrote it), so a value is newer than a clear only when it was read from the
source after the clear began: a fetch that started before it cannot bring an older value back.
Readers skip a cleared value as if it were absent (the next write replaces it); the ``clear``
event, the same as a delete's in cost, makes every process drop its local copies, and each
listener reads the clear time afresh whenever it subscribes, in case it missed the event.
Nothing is scanned: the values stay in Redis until they expire or are written again.
"""

from __future__ import annotations

from redicache_async.invalidation import OP_CLEAR, event_prefix
from redicache_async.replies import text

from .coherence import Coherence

__all__ = ["Clearing"]


class Clearing(Coherence):
    """``clear()``, and the client's knowledge of when its namespace was last cleared."""

    async def clear(self) -> None:
        """Remove every value of this client's namespace, in Redis and in every process's
        local layer, in one round trip whatever their number. Builder targets stay (they are
        not values). A fetch that started before it stores nothing that any reader takes."""
        self._check_open()
        cleared = await self._gateway.call(
            self._scripts.clear(
                keys=[self._keys.cleared, *self._stream_keys],
                args=[self._keys.channel, event_prefix(OP_CLEAR, "", self._origin)],
            ),
            self._keys.cleared,
        )
        self._on_cleared(int(text(cleared)))
        self._stats.invalidations_sent += 1
