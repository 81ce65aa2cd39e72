"""Logging that stays readable through an outage: a message that repeats (a listener retrying
every second, a build failing on every attempt) is written once per interval, with the count of
the ones held back, instead of once per attempt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Throttle", "logger"]

logger = logging.getLogger("redicache_async")

#: Seconds between two messages of one kind.
DEFAULT_INTERVAL = 30.0


class Throttle:
    """Lets one message per ``key`` through every ``interval`` seconds; counts the others and
    tells the next message that gets through how many there were."""

    __slots__ = ("_clock", "_held", "_interval", "_next")

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def log(
        self, level: int, key: Hashable, message: str, *args: Any, exc_info: Any = None
    ) -> bool:
        """Log ``message % args`` at ``level`` unless one of ``key`` went out less than
        ``interval`` ago; True if it was logged."""
        now = self._clock()
        if now < self._next.get(key, -float("inf")):
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._next[key] = now + self._interval
        held = self._held.pop(key, 0)
        if held:
            message += " (%d more like this in the last %g s)"
            args = (*args, held, self._interval)
        logger.log(level, message, *args, exc_info=exc_info)
        return True

    def reset(self, key: Hashable) -> None:
        """Forget ``key``: its next message goes out at once (say, after a recovery)."""
        self._next.pop(key, None)
        self._held.pop(key, None)
