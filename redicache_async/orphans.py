"""Locks a client may hold without knowing it.

A claim (``SET NX PX``) whose reply never came may still have reached the server: a frozen
server runs it when it resumes, long after the caller gave up and fetched in-process. Nobody
would release that lock, and other processes would wait for it to expire. A release that could
not be sent leaves the same kind of lock behind. So such claims are remembered here and released
in the background, with back-off, once Redis answers. A claim is forgotten only on an answer:
its lock released, or found not held by it. Age proves nothing: a frozen server runs a claim
when it resumes, and its ttl counts from then.

A release that finds no lock is repeated once, a round trip later: a claim queued on another
connection of a just-resumed server may not have run yet when the first release did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from .backoff import Backoff
from .cancellation import cancel_and_wait
from .errors import RedicacheError

__all__ = ["OrphanedClaims", "Release"]

logger = logging.getLogger("redicache_async")

#: ``release(key, lock_key, token)``: True if it deleted the lock, False if the lock was not
#: (or no longer) held with that token; raises RedicacheError when Redis did not answer.
Release = Callable[[str, str, str], Awaitable[bool]]

_FIRST_RETRY: Final = 0.025
_MAX_RETRY: Final = 0.5


@dataclass(slots=True)
class _Claim:
    key: str
    lock_key: str
    token: str
    not_found: int = 0


class OrphanedClaims:
    """Remembers claims to release; owns the one task that releases them."""

    __slots__ = ("_claims", "_closed", "_max_claims", "_release", "_task")

    def __init__(self, release: Release, *, max_claims: int = 10_000) -> None:
        self._release = release
        self._max_claims = max_claims
        #: By token: several claims of one lock may be out (a retry's, after a lost reply),
        #: and only the server knows which of them took it.
        self._claims: dict[str, _Claim] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._claims)

    def add(self, key: str, lock_key: str, token: str) -> None:
        if self._closed:
            return
        if len(self._claims) >= self._max_claims:
            del self._claims[next(iter(self._claims))]  # the oldest is the likeliest expired
        self._claims[token] = _Claim(key, lock_key, token)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._release_all(), name="redicache-orphans")

    async def aclose(self, *, last_round: float = 0.0) -> None:
        """Stop releasing, after one last round of releases bounded by ``last_round`` seconds
        (what is still left then expires by itself)."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._claims and last_round > 0:
            try:
                async with asyncio.timeout(last_round):
                    for claim in list(self._claims.values()):
                        await self._release(claim.key, claim.lock_key, claim.token)
            except (TimeoutError, RedicacheError) as exc:
                logger.debug("%d orphaned locks left to expire: %r", len(self._claims), exc)
        self._claims.clear()

    async def _release_all(self) -> None:
        delays = Backoff(_FIRST_RETRY, _MAX_RETRY)
        while self._claims:
            await asyncio.sleep(delays.next())
            for claim in list(self._claims.values()):
                try:
                    released = await self._release(claim.key, claim.lock_key, claim.token)
                except RedicacheError as exc:
                    logger.debug("releasing the orphaned lock on %r failed: %r", claim.key, exc)
                    continue
                if released or claim.not_found:
                    self._claims.pop(claim.token, None)
                else:
                    claim.not_found += 1
