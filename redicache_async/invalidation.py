"""Events on the namespace's channel, and the task that listens to them.

An event is compact JSON: ``{"op":..., "key":..., "origin":..., "version":...}``. It never
carries a value. On the cache channel ``op`` is ``set`` or ``del`` (the value changed: drop older
local copies, wake waiters), ``unlock`` (a lock was released without a value: wake waiters) or
``target`` (a builder swapped in a new build of the target ``key``). On the builders' channel it
is ``resign`` (a leader released registration ``key``), ``refresh`` (rebuild ``key`` now) or
``built`` (a build of ``key`` was swapped in; its version is when it started, in ms).

The listener is one supervised task: it subscribes, reports every (re)subscription (the local
layer may have missed events while it was away, so its owner flushes it), checks the connection
with a PING when the channel is quiet, and reconnects with back-off when anything fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisError

from .cancellation import bounded, cancel_and_wait

__all__ = [
    "OP_BUILT",
    "OP_DELETE",
    "OP_REFRESH",
    "OP_RESIGN",
    "OP_SET",
    "OP_TARGET",
    "OP_UNLOCK",
    "Event",
    "InvalidationListener",
    "decode_event",
    "event_prefix",
    "plain_event",
    "unlock_event",
]

logger = logging.getLogger("redicache_async")

OP_SET: Final = "set"
OP_DELETE: Final = "del"
OP_UNLOCK: Final = "unlock"
OP_TARGET: Final = "target"
OP_RESIGN: Final = "resign"
OP_REFRESH: Final = "refresh"
OP_BUILT: Final = "built"
_OPS = frozenset({OP_SET, OP_DELETE, OP_UNLOCK, OP_TARGET, OP_RESIGN, OP_REFRESH, OP_BUILT})


@dataclass(frozen=True, slots=True)
class Event:
    op: str
    key: str
    origin: str
    version: int


def event_prefix(op: str, key: str, origin: str) -> str:
    """An event up to its version; the write script appends ``<version>}``."""
    return (
        f'{{"op":"{op}","key":{json.dumps(key, ensure_ascii=False)},"origin":"{origin}","version":'
    )


def plain_event(op: str, key: str, origin: str) -> str:
    """An event that carries no version (version 0)."""
    return event_prefix(op, key, origin) + "0}"


def unlock_event(key: str, origin: str) -> str:
    return plain_event(OP_UNLOCK, key, origin)


def decode_event(data: Any) -> Event | None:
    """The event in a pub/sub payload, or None if it is not one of ours."""
    try:
        raw = json.loads(data)
        op, key, origin, version = raw["op"], raw["key"], raw["origin"], raw["version"]
    except (ValueError, TypeError, KeyError):
        return None
    if (
        op not in _OPS
        or not isinstance(key, str)
        or not isinstance(origin, str)
        or not isinstance(version, int)
        or isinstance(version, bool)
    ):
        return None
    return Event(op, key, origin, version)


class InvalidationListener:
    """Owns one background task consuming ``channel``; ``start()`` returns once subscribed."""

    def __init__(
        self,
        redis: Any,
        channel: str,
        *,
        on_event: Callable[[Event], None],
        on_subscribed: Callable[[], None],
        on_ignored: Callable[[], None],
        timeout: float,
        ping_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self._on_ignored = on_ignored
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        #: Set while subscribed; cleared the moment the connection is known to be lost.
        self.connected = False
        self.reconnects = 0

    async def start(self, wait: float) -> bool:
        """Start listening; True once subscribed, False if that took longer than ``wait``
        (the task keeps trying in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"redicache-listener:{self._channel}"
            )
        subscribed = asyncio.ensure_future(self._subscribed.wait())
        try:
            await asyncio.wait(
                {subscribed, self._task}, timeout=wait, return_when="FIRST_COMPLETED"
            )
        finally:
            subscribed.cancel()
        if self._task.done():
            self._task.result()  # the listener died: raise its exception here, not never
        return self._subscribed.is_set()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("invalidation listener ended with %r", task.exception())
        self.connected = False

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._redis.pubsub()
            try:
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("invalidation listener lost its connection: %r", exc)
            except Exception:
                logger.exception("invalidation listener failed; reconnecting")
            finally:
                self.connected = False
                await _close_quietly(pubsub)
            if self._subscribed.is_set():
                backoff = 0.05
                self._subscribed.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            self.reconnects += 1

    async def _listen(self, pubsub: Any) -> None:
        await bounded(pubsub.subscribe(self._channel), self._timeout)
        loop = asyncio.get_running_loop()
        pong_due = loop.time() + self._timeout  # the subscribe confirmation is due as a pong is
        while True:
            wait = self._ping_interval if pong_due == math.inf else pong_due - loop.time()
            if wait <= 0:
                raise TimeoutError("no answer on the pub/sub connection")
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=wait)
            if message is None:
                if pong_due == math.inf:
                    await pubsub.ping()
                    pong_due = loop.time() + self._timeout
                continue
            kind = message["type"]
            if kind == "message":
                event = decode_event(message["data"])
                if event is None:
                    self._on_ignored()
                else:
                    self._on_event(event)
            elif kind == "subscribe":
                # Also seen when redis-py reconnected and resubscribed by itself: either way,
                # events may have been missed.
                pong_due = math.inf
                self.connected = True
                self._on_subscribed()
                self._subscribed.set()
                continue
            elif kind != "pong":
                continue
            pong_due = math.inf


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except (RedisError, OSError) as exc:
        logger.debug("closing the pub/sub connection failed: %r", exc)
