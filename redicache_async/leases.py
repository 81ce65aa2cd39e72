"""One claim on a Redis key: ``SET key token NX PX ttl``, renewed while work goes on, released
by compare-and-delete. Serves the client's write locks and the builder's leadership alike.

The token belongs to the claim (this object), never to a thread or task, so concurrent tasks on
one event loop cannot release each other's claims.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from .cancellation import bounded, cancel_and_wait
from .errors import REDIS_FAILURES, describe_error
from .scripts import Scripts
from .validation import seconds_to_ms

__all__ = ["Lease", "new_token"]

logger = logging.getLogger("redicache_async")


def new_token() -> str:
    return secrets.token_hex(16)


class Lease:
    """A claim on ``key`` for ``ttl`` seconds, identified by ``token``."""

    __slots__ = ("_redis", "_scripts", "_timeout", "key", "token", "ttl")

    def __init__(
        self,
        redis: Any,
        scripts: Scripts,
        key: str,
        *,
        ttl: float,
        timeout: float,
        token: str | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._timeout = timeout
        self.key = key
        self.ttl = ttl
        self.token = token or new_token()

    @property
    def ttl_ms(self) -> int:
        return seconds_to_ms(self.ttl)

    async def acquire(self) -> bool:
        command = self._redis.set(self.key, self.token, nx=True, px=self.ttl_ms)
        return bool(await bounded(command, self._timeout))

    async def renew(self) -> bool:
        """Extend the claim by ``ttl``; False when it is no longer ours."""
        command = self._scripts.renew(keys=[self.key], args=[self.token, self.ttl_ms])
        return bool(await bounded(command, self._timeout))

    async def release(self, *, channel: str = "", event: str = "") -> bool:
        """Delete the claim if it is still ours, publishing ``event`` on ``channel`` if given."""
        command = self._scripts.release(keys=[self.key], args=[self.token, channel, event])
        return bool(await bounded(command, self._timeout))

    @asynccontextmanager
    async def kept_alive(
        self, *, strict: bool = False, on_lost: Callable[[], None] | None = None
    ) -> AsyncIterator[asyncio.Event]:
        """Renew the claim every ``ttl / 3`` while the block runs.

        Yields an event that is set (and calls ``on_lost``) as soon as the claim is known to be
        lost: a renewal found another token, or no renewal succeeded before the claim would
        have expired. With ``strict``, a renewal that fails (error, timeout) counts as lost at
        once: the holder stops rather than act on a claim it cannot confirm.
        """
        lost = asyncio.Event()
        task = asyncio.create_task(
            self._watchdog(lost, strict, on_lost), name=f"redicache-watchdog:{self.key}"
        )
        try:
            yield lost
        finally:
            await cancel_and_wait(task)
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    async def _watchdog(
        self, lost: asyncio.Event, strict: bool, on_lost: Callable[[], None] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ttl / 3
        expires_at = loop.time() + self.ttl
        while True:
            await asyncio.sleep(min(interval, max(0.0, expires_at - loop.time())))
            if loop.time() >= expires_at:
                break
            attempt_at = loop.time()
            try:
                if not await self.renew():
                    break
                expires_at = attempt_at + self.ttl
            except REDIS_FAILURES as exc:
                logger.warning("renewing %s failed: %s", self.key, describe_error(exc))
                if strict:
                    break
        logger.warning("lost the claim on %s", self.key)
        lost.set()
        if on_lost is not None:
            on_lost()
