"""The one way the engines send commands to Redis.

:meth:`RedisGateway.call` bounds a command by ``redis_timeout`` (with the cancellation-safe
deadline of ``cancellation.py``), skips Redis at once while the circuit breaker of the node the
command goes to is open (one per master on a cluster, chosen by the command's key: see
``breaker.py``), waits within that deadline while the client's connection pool has no
connection to give (``pool_gate.py``), refuses every command once its owner is sealed (closed),
and classifies what went wrong, so that callers handle four cases: an outage
(:class:`RedisUnavailableError`: answer without Redis), an exhausted pool
(:class:`PoolExhaustedError`: back-pressure, Redis untried, the breaker untouched), a refusal or
a configuration mistake (:class:`RedisConfigurationError`: say so), and a command Redis
rejected (:class:`RedicacheError`).

:meth:`RedisGateway.bounded` is the deadline alone, for callers that handle redis-py's own
errors themselves (the builder: a failed build or campaign is retried on its own schedule, so a
breaker would only delay it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

from .breaker import Breakers, CircuitOpenError
from .cancellation import bounded
from .errors import (
    OUTAGES,
    REFUSALS,
    ClientClosedError,
    PoolExhaustedError,
    RedicacheError,
    RedisConfigurationError,
    RedisPermissionError,
    RedisUnavailableError,
    describe_error,
    pool_exhausted,
)
from .pool_gate import PoolGate, room_check
from .tls import tls_error

__all__ = ["RedisGateway"]

T = TypeVar("T")


class RedisGateway:
    """Commands to ``redis``, each bounded by ``timeout`` seconds.

    ``mistake()`` tells a configuration mistake found elsewhere (by the listener) that no
    command can get past; ``on_error()`` counts every command that failed.
    """

    __slots__ = (
        "_gate",
        "_mistake",
        "_on_error",
        "_room",
        "_sealed",
        "breaker",
        "redis",
        "timeout",
    )

    def __init__(
        self,
        redis: Any,
        *,
        timeout: float,
        mistake: Callable[[], RedisConfigurationError | None] = lambda: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        #: The circuit breakers (one, or one per cluster master); ``opened``, ``skipped`` and
        #: ``close()`` speak for all of them.
        self.breaker = Breakers(redis)
        self._room = room_check(redis)
        self._gate = PoolGate()
        self._mistake = mistake
        self._on_error = on_error
        self._sealed = False

    def seal(self) -> None:
        """From now on no command is sent (:class:`ClientClosedError`)."""
        self._sealed = True

    async def bounded(self, command: Awaitable[T]) -> T:
        """Await ``command`` for at most ``timeout`` seconds; redis-py's errors pass through."""
        return await bounded(command, self.timeout)

    async def call(self, command: Coroutine[Any, Any, T], key: str | None = None) -> T:
        """Await one Redis command, bounded by ``timeout``, with errors wrapped; skipped at once
        (:class:`CircuitOpenError`) while the circuit breaker of the node that serves ``key``
        (a key the command touches; on a cluster, all its keys share that slot) is open."""
        if self._sealed:
            command.close()
            raise ClientClosedError("the client is closed")
        mistake = self._mistake()
        if mistake is not None and not isinstance(mistake, RedisPermissionError):
            # The listener found a TLS mistake: no command can get through, and saying so
            # beats answering as if Redis were down. (A refusal shows on the calls it stops.)
            command.close()
            raise RedisConfigurationError(*mistake.args) from mistake.__cause__
        breaker = self.breaker.for_key(key)
        if not breaker.allow():
            command.close()
            raise CircuitOpenError()
        probe, epoch = breaker.is_open, breaker.epoch
        timeout = self.timeout
        room = self._room
        if room is not None and not room():
            try:
                timeout = await self._wait_for_room(room)
            except BaseException:
                command.close()
                if probe:
                    breaker.abandoned()
                raise
        try:
            result = await bounded(command, timeout)
        except REFUSALS as exc:
            self._on_error()
            if probe:
                breaker.abandoned()
            raise RedisPermissionError(f"Redis refused this client: {describe_error(exc)}") from exc
        except OUTAGES as exc:
            if pool_exhausted(exc):
                # Connections taken between the look at the pool and the command, or a
                # cluster node's pool: Redis was not tried, so this tells nothing about it.
                if probe:
                    breaker.abandoned()
                raise PoolExhaustedError(self._exhausted(describe_error(exc))) from exc
            self._on_error()
            tls_mistake = tls_error(exc)
            if tls_mistake is not None:
                if probe:
                    breaker.abandoned()
                raise tls_mistake from exc
            breaker.failed(probe=probe, epoch=epoch)
            raise RedisUnavailableError(f"Redis is unreachable: {describe_error(exc)}") from exc
        except RedisError as exc:
            self._on_error()
            if probe:
                breaker.abandoned()
            raise RedicacheError(f"Redis refused the command: {describe_error(exc)}") from exc
        except BaseException:
            if probe:
                breaker.abandoned()
            raise
        finally:
            if self._gate.waiting:
                self._gate.released()  # this call's connection is back in the pool
        breaker.succeeded()
        return result

    async def _wait_for_room(self, room: Callable[[], object]) -> float:
        """Wait until the pool has a connection to give; the time left of the call's bound."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if not await self._gate.wait(room, deadline):
            raise PoolExhaustedError(self._exhausted("no connection came free"))
        return max(deadline - loop.time(), 0.0)

    def _exhausted(self, detail: str) -> str:
        return (
            f"the Redis client's connection pool is exhausted ({detail} within "
            f"redis_timeout={self.timeout:g} s): more calls at once than its max_connections; "
            "Redis itself was not tried"
        )
