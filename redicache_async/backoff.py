"""Waiting between retries without a fleet retrying in lock-step.

Every process that saw one outage would, with a plain doubling delay, retry at the same moments
and hit the server together when it comes back. :class:`Backoff` spreads them: the n-th delay
is drawn uniformly between ``first`` and ``min(cap, first * 2**n)`` (full jitter above a
floor), so that it never exceeds the plain doubling schedule and never drops to a busy loop.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "jittered"]


class Backoff:
    """Delays for successive retries; :meth:`reset` after a success starts over."""

    __slots__ = ("_attempt", "_cap", "_first", "_random")

    def __init__(self, first: float, cap: float, *, rng: random.Random | None = None) -> None:
        self._first = first
        self._cap = cap
        self._attempt = 0
        self._random = rng if rng is not None else random.Random()

    def next(self) -> float:
        """The delay before the next retry."""
        self._attempt = min(self._attempt + 1, 32)  # 2**32 * first exceeds any cap
        ceiling = min(self._cap, self._first * 2**self._attempt)
        return self._random.uniform(min(self._first, ceiling), ceiling)

    def reset(self) -> None:
        self._attempt = 0


def jittered(delay: float, spread: float, *, rng: random.Random | None = None) -> float:
    """``delay`` plus up to ``spread`` seconds, so that waiters due at one moment wake apart."""
    return delay + (rng or random).uniform(0.0, spread)
