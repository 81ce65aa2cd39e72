"""A circuit breaker for Redis calls, so that a dead or frozen server costs callers nothing.

Closed, every call goes to Redis. After ``threshold`` failures in a row (connection errors and
timeouts, not refused commands) it opens: calls skip Redis for a window that starts short and
doubles with every failure while open, up to ``max_window``. When a window ends, one call is let
through as a probe; its success closes the breaker, its failure opens the next window. Anything
else that proves Redis is back (the listener resubscribing) may close it early with
:meth:`CircuitBreaker.close`.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Final

from .errors import RedisUnavailableError

__all__ = ["CircuitBreaker", "CircuitOpenError"]

logger = logging.getLogger("redicache_async")

_CLOSED: Final = 0.0


class CircuitOpenError(RedisUnavailableError):
    """Redis was not tried: it failed just before and the breaker's window is still open."""

    def __init__(self) -> None:
        super().__init__("Redis is unreachable (recent calls failed; it is probed again soon)")


class CircuitBreaker:
    __slots__ = (
        "_failures",
        "_first_window",
        "_max_window",
        "_open_until",
        "_probing",
        "_threshold",
        "_window",
        "opened",
        "skipped",
    )

    def __init__(
        self, *, threshold: int = 3, first_window: float = 0.05, max_window: float = 2.0
    ) -> None:
        self._threshold = threshold
        self._first_window = first_window
        self._max_window = max_window
        self._failures = 0
        self._window = first_window
        #: ``monotonic()`` until which calls skip Redis; 0 while closed.
        self._open_until = _CLOSED
        self._probing = False
        #: Times the breaker opened, and calls it answered without trying Redis.
        self.opened = 0
        self.skipped = 0

    @property
    def is_open(self) -> bool:
        return self._open_until != _CLOSED

    def allow(self) -> bool:
        """Whether a call may go to Redis now. When this returns True while the breaker is
        open, the call is the probe (``is_open`` tells): report its end with ``succeeded``,
        ``failed(probe=True)`` or ``abandoned()``."""
        if self._open_until == _CLOSED:
            return True
        if self._probing or monotonic() < self._open_until:
            self.skipped += 1
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self._failures:
            self.close()

    def failed(self, *, probe: bool = False) -> None:
        """A call found Redis unreachable (``probe``: the call that ``allow`` let through while
        open; a failure of a call sent before the breaker opened frees no probe slot)."""
        self._failures += 1
        if probe:
            self._probing = False
        if self._failures < self._threshold:
            return
        if self._open_until == _CLOSED:
            self.opened += 1
            logger.warning(
                "Redis is unreachable; calls skip it (probing every %.2f-%.1f s) until it answers",
                self._first_window,
                self._max_window,
            )
        else:
            self._window = min(self._window * 2, self._max_window)
        self._open_until = monotonic() + self._window

    def abandoned(self) -> None:
        """The probe ended without telling anything (cancelled, or refused for another reason)."""
        self._probing = False

    def close(self) -> None:
        if self._open_until != _CLOSED:
            logger.warning("Redis answers again; calls go to it")
        self._failures = 0
        self._window = self._first_window
        self._open_until = _CLOSED
        self._probing = False
