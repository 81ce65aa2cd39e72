"""The server's clock seen from this process: an estimate of the offset between Redis's ``TIME``
and ``time.monotonic()``, so that a value's expiry (server time, in its header) becomes a local
deadline without asking Redis for the key's ``PTTL``.

The bound. Each estimate reads ``TIME`` a few times and keeps the sample with the shortest
round trip; the server's answer was taken at some instant of that round trip, so taking it as
taken at the start makes every deadline early, never late: a local copy expires at most one
round trip (:attr:`ServerClock.error`, typically well under a millisecond on a LAN) before its
key does in Redis. Between two estimates the clocks may drift apart: at the 500 ppm that NTP
slews at most, :data:`REFRESH_INTERVAL` costs at most 15 ms either way; a clock that steps
(set by hand, or a leap smeared) is off until the next estimate. On a cluster, the estimate is
of the node ``TIME`` is sent to; the nodes' clocks are assumed to agree within their NTP bound.
Until a first estimate exists (Redis unreachable since the start), :meth:`ServerClock.deadline`
answers None: the value is used, but not kept locally.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Final

from .cancellation import bounded

__all__ = ["REFRESH_INTERVAL", "RETRY_INTERVAL", "ServerClock"]

#: Seconds between two estimates of the offset.
REFRESH_INTERVAL: Final = 30.0
#: Seconds before a failed estimate is tried again.
RETRY_INTERVAL: Final = 1.0
#: TIME round trips per estimate.
_SAMPLES: Final = 3


class ServerClock:
    """The offset of ``redis``'s clock, estimated by :meth:`sync`; its owner calls that every
    :data:`REFRESH_INTERVAL` (``RETRY_INTERVAL`` after a failure: the previous estimate stands
    meanwhile)."""

    __slots__ = ("_offset", "_redis", "_timeout", "error")

    def __init__(self, redis: Any, *, timeout: float) -> None:
        self._redis = redis
        self._timeout = timeout
        #: Server seconds minus monotonic seconds, or None before the first estimate.
        self._offset: float | None = None
        #: Seconds by which a deadline may be early: the round trip of the kept sample.
        self.error = 0.0

    @property
    def known(self) -> bool:
        return self._offset is not None

    def deadline(self, expires_ms: int) -> float | None:
        """The ``monotonic()`` time by which the server's clock reads ``expires_ms`` (0: never,
        ``inf``); None before the first estimate."""
        if not expires_ms:
            return float("inf")
        offset = self._offset
        if offset is None:
            return None
        return expires_ms / 1000 - offset

    def server_now(self) -> float | None:
        """The server's clock now (seconds), as estimated; for tests and diagnostics."""
        return None if self._offset is None else monotonic() + self._offset

    async def sync(self) -> None:
        """Estimate the offset now (raises what redis-py raises, or ``TimeoutError``)."""
        best: tuple[float, float] | None = None
        for _ in range(_SAMPLES):
            before = monotonic()
            reply = await bounded(self._redis.time(), self._timeout)
            after = monotonic()
            if isinstance(reply, dict):  # a cluster client that asked several nodes
                reply = next(iter(reply.values()))
            seconds, micros = reply
            sample = (after - before, seconds + micros / 1_000_000 - before)
            if best is None or sample < best:
                best = sample
        assert best is not None
        self.error, self._offset = best
