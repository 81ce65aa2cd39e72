"""The task that listens to a namespace's channel: subscribes, catches up on what it missed
while away (from the event stream, when there is one: see ``replay.py``) and reports every
(re)subscription and whether that catch-up was complete (when not, its owner flushes its local
layer). It checks the connection with a PING when the channel is quiet, and reconnects with
back-off when anything fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .backoff import Backoff
from .cancellation import bounded, cancel_and_wait
from .errors import (
    REDIS_FAILURES,
    REFUSALS,
    RedisConfigurationError,
    RedisPermissionError,
    describe_error,
)
from .invalidation import Event, decode_event
from .logs import Throttle
from .replay import StreamCursor
from .subscriber import buffered_reader, event_payload, settle, socket_reader
from .tls import diagnose_tls, tls_error
from .topology import first_attempt, open_subscriber

__all__ = ["InvalidationListener"]

logger = logging.getLogger("redicache_async")

#: The shortest pause before reconnecting; pauses grow (jittered) to ``max_backoff``.
_FIRST_BACKOFF: Final = 0.025
#: Events handled in a row before the listener lets the loop's other tasks run.
_BATCH: Final = 256


async def _nothing() -> None:
    return None


class InvalidationListener:
    """Owns one background task consuming ``channel``; ``start()`` returns once subscribed.

    ``on_subscribed(caught_up)`` follows every subscription: ``caught_up`` is True when every
    event published while the listener was away has been replayed through ``on_event`` (from
    ``stream``), False when some may be lost (and always on the first subscription).
    ``on_resync()`` is awaited at each subscription, before the replay and ``on_subscribed``:
    for state that events keep up to date but that may have changed while the listener was
    away.
    ``on_lost()`` is called as soon as the connection is known to be lost: at once when it
    fails, and at most ``ping_interval + timeout`` after it went silent (the idle ping's answer
    is due within ``timeout``).
    """

    def __init__(
        self,
        redis: Any,
        channel: str,
        *,
        on_event: Callable[[Event], None],
        on_subscribed: Callable[[bool], None],
        on_ignored: Callable[[], None],
        timeout: float,
        on_lost: Callable[[], None] = lambda: None,
        on_resync: Callable[[], Awaitable[None]] = _nothing,
        stream: str | None = None,
        ping_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._cursor = None if stream is None else StreamCursor(redis, stream, timeout=timeout)
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self._on_ignored = on_ignored
        self._on_lost = on_lost
        self._on_resync = on_resync
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._refused = asyncio.Event()
        #: Why the listener cannot subscribe when that is a configuration error (credentials,
        #: ACL, TLS), not an outage; it keeps retrying, in case the configuration is fixed.
        self.refusal: RedisConfigurationError | None = None
        #: Set while subscribed; cleared the moment the connection is known to be lost.
        self.connected = False
        self.reconnects = 0
        self._log = Throttle()
        #: When the answer to the last PING (or the subscription) is due; ``inf``: none owed.
        self._pong_due = math.inf

    async def start(self, wait: float) -> bool:
        """Start listening; True once subscribed, False if that took longer than ``wait``
        (the task keeps trying in the background). Raises :class:`RedisConfigurationError`
        when the subscription fails for a reason waiting will not fix (a wrong password, an
        ACL without the channel or the stream: :class:`RedisPermissionError`; a TLS mistake):
        a configuration error must show at start-up, not look like an outage."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"redicache-listener:{self._channel}"
            )
        subscribed = asyncio.ensure_future(self._subscribed.wait())
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {subscribed, refused, self._task}, timeout=wait, return_when="FIRST_COMPLETED"
            )
        finally:
            subscribed.cancel()
            refused.cancel()
        if self._task.done():
            self._task.result()  # the listener died: raise its exception here, not never
        if not self._subscribed.is_set() and self.refusal is not None:
            raise self.refusal
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
        delays = Backoff(_FIRST_BACKOFF, self._max_backoff)
        attempt = first_attempt()
        while True:
            try:
                await self._listen(attempt)
            except asyncio.CancelledError:
                raise
            except REFUSALS as exc:
                refusal = RedisPermissionError(
                    f"Redis refused to let this client listen on {self._channel!r}: "
                    f"{describe_error(exc)} (check the password and the ACL)"
                )
                refusal.__cause__ = exc
                self._refuse(refusal)
            except REDIS_FAILURES as exc:
                mistake = await self._diagnose(exc)
                if mistake is not None:
                    self._refuse(mistake)
                else:
                    self._log.log(
                        logging.WARNING,
                        "lost",
                        "invalidation listener lost its connection: %s",
                        describe_error(exc),
                    )
            except Exception:
                logger.exception("invalidation listener failed; reconnecting")
            attempt += 1
            if self._subscribed.is_set():
                delays.reset()
                self._subscribed.clear()
            await asyncio.sleep(delays.next())
            self.reconnects += 1

    async def _diagnose(self, exc: BaseException) -> RedisConfigurationError | None:
        """The configuration mistake behind a failed attempt, if any. Only an attempt that
        never subscribed may have been a plain client at a TLS port: once the server has
        answered in plain text, a reset is an outage, and probing it would hold every
        reconnection for up to ``timeout``."""
        if self._subscribed.is_set():
            return tls_error(exc)
        return await diagnose_tls(self._redis, exc, self._timeout)

    def _refuse(self, error: RedisConfigurationError) -> None:
        self.refusal = error
        self._refused.set()
        logger.error("the invalidation listener cannot subscribe: %s. Retrying.", error)

    async def _listen(self, attempt: int) -> None:
        try:
            pubsub = await bounded(open_subscriber(self._redis, attempt), self._timeout)
        except BaseException:
            self._lost()
            raise
        try:
            await self._consume(pubsub)
        except BaseException:
            self._lost()  # at once: before the clean-up, the diagnosis and the back-off
            raise
        finally:
            await _close_quietly(pubsub)

    def _lost(self) -> None:
        self.connected = False
        self._on_lost()

    async def _consume(self, pubsub: Any) -> None:
        await bounded(pubsub.subscribe(self._channel), self._timeout)
        loop = asyncio.get_running_loop()
        self._pong_due = (
            loop.time() + self._timeout
        )  # the subscribe confirmation is due as a pong is
        while True:
            # Every reply already received first (the subscription's confirmation may be).
            await self._drain(pubsub)
            pong_due = self._pong_due
            wait = self._ping_interval if pong_due == math.inf else pong_due - loop.time()
            if wait <= 0:
                raise TimeoutError("no answer on the pub/sub connection")
            read = socket_reader(pubsub)
            if read is None:
                await self._get_message(pubsub, wait)
                continue
            try:
                await bounded(read(), wait)
            except TimeoutError:
                await self._quiet(pubsub, pong_due)

    async def _get_message(self, pubsub: Any, wait: float) -> None:
        """One message the way redis-py hands them out, where its replies cannot be read
        directly (see ``subscriber.py``)."""
        # redis-py reconnects inside get_message when the connection breaks, retrying while
        # the server is away: bounded, so that a loss is reported within ``timeout``.
        message = await bounded(
            pubsub.get_message(ignore_subscribe_messages=False, timeout=wait),
            wait + self._timeout,
        )
        if message is None:
            await self._quiet(pubsub, self._pong_due)
        else:
            await self._handle(message)

    async def _quiet(self, pubsub: Any, pong_due: float) -> None:
        """Nothing came for a while: ask the server for a PONG, unless one is owed already."""
        if pong_due == math.inf:
            await pubsub.ping()
            self._pong_due = asyncio.get_running_loop().time() + self._timeout

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._deliver(message["data"])
        elif kind == "subscribe":
            # Also seen when redis-py reconnected and resubscribed by itself: either way,
            # events may have been missed.
            await self._catch_up()
            self._pong_due = math.inf
            self.connected = True
            self.refusal = None
            self._refused.clear()
            self._subscribed.set()
            self._log.reset("lost")  # the next outage is news again
        elif kind == "pong":
            self._pong_due = math.inf

    def _deliver(self, data: Any) -> None:
        event = decode_event(data)
        if event is None:
            self._on_ignored()
            return
        if self._cursor is not None:
            self._cursor.seen(event)
        self._on_event(event)

    async def _drain(self, pubsub: Any) -> None:
        """Handle every reply already received on ``pubsub``'s connection, then return (never
        waits for the server). Yields to the loop every ``_BATCH`` events, so that a flood
        cannot starve the process's other tasks."""
        next_reply = buffered_reader(pubsub)
        if next_reply is None:
            return
        handled = 0
        while (reply := next_reply()) is not None:
            data = event_payload(reply)
            if data is not None:
                self._deliver(data)
            else:
                message = await settle(pubsub, reply)
                if message is not None:
                    await self._handle(message)
                next_reply = buffered_reader(pubsub)  # a handler may have reconnected it
                if next_reply is None:
                    return
            handled += 1
            if handled % _BATCH == 0:
                await asyncio.sleep(0)

    async def _catch_up(self) -> None:
        """Replay what was missed while away, read what the owner must know afresh
        (``on_resync``), then report the subscription."""
        # ``on_resync`` first: a failure after the cursor's resync would lose what it found
        # (the next attempt would find nothing missed since, and trust what it should flush).
        await bounded(self._on_resync(), self._timeout)
        if self._cursor is None:
            self._on_subscribed(False)
            return
        events, complete = await self._cursor.resync()
        for event in events:
            self._on_event(event)
        if not complete and self.reconnects:
            logger.info("some invalidations may have been missed; the local layer is flushed")
        self._on_subscribed(complete)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except REDIS_FAILURES as exc:
        logger.debug("closing the pub/sub connection failed: %r", exc)
