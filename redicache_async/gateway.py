"""The one way the engines send commands to Redis.

:meth:`RedisGateway.call` bounds a command by ``redis_timeout`` (with the cancellation-safe
deadline of ``cancellation.py``), skips Redis at once while the circuit breaker is open, refuses
every command once its owner is sealed (closed), and classifies what went wrong, so that callers
handle three cases: an outage (:class:`RedisUnavailableError`: answer without Redis), a refusal
or a configuration mistake (:class:`RedisConfigurationError`: say so), and a command Redis
rejected (:class:`RedicacheError`).

:meth:`RedisGateway.bounded` is the deadline alone, for callers that handle redis-py's own
errors themselves (the builder: a failed build or campaign is retried on its own schedule, so a
breaker would only delay it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import RedisError

from .breaker import CircuitBreaker, CircuitOpenError
from .cancellation import bounded
from .errors import (
    OUTAGES,
    REFUSALS,
    ClientClosedError,
    RedicacheError,
    RedisConfigurationError,
    RedisPermissionError,
    RedisUnavailableError,
    describe_error,
)
from .tls import tls_error

__all__ = ["RedisGateway"]

T = TypeVar("T")


class RedisGateway:
    """Commands to ``redis``, each bounded by ``timeout`` seconds.

    ``mistake()`` tells a configuration mistake found elsewhere (by the listener) that no
    command can get past; ``on_error()`` counts every command that failed.
    """

    __slots__ = ("_mistake", "_on_error", "_sealed", "breaker", "redis", "timeout")

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
        self.breaker = CircuitBreaker()
        self._mistake = mistake
        self._on_error = on_error
        self._sealed = False

    def seal(self) -> None:
        """From now on no command is sent (:class:`ClientClosedError`)."""
        self._sealed = True

    async def bounded(self, command: Awaitable[T]) -> T:
        """Await ``command`` for at most ``timeout`` seconds; redis-py's errors pass through."""
        return await bounded(command, self.timeout)

    async def call(self, command: Coroutine[Any, Any, T]) -> T:
        """Await one Redis command, bounded by ``timeout``, with errors wrapped; skipped at once
        (:class:`CircuitOpenError`) while the circuit breaker is open."""
        if self._sealed:
            command.close()
            raise ClientClosedError("the client is closed")
        mistake = self._mistake()
        if mistake is not None and not isinstance(mistake, RedisPermissionError):
            # The listener found a TLS mistake: no command can get through, and saying so
            # beats answering as if Redis were down. (A refusal shows on the calls it stops.)
            command.close()
            raise RedisConfigurationError(*mistake.args) from mistake.__cause__
        breaker = self.breaker
        if not breaker.allow():
            command.close()
            raise CircuitOpenError()
        probe = breaker.is_open
        try:
            result = await bounded(command, self.timeout)
        except REFUSALS as exc:
            self._on_error()
            if probe:
                breaker.abandoned()
            raise RedisPermissionError(f"Redis refused this client: {describe_error(exc)}") from exc
        except OUTAGES as exc:
            self._on_error()
            tls_mistake = tls_error(exc)
            if tls_mistake is not None:
                if probe:
                    breaker.abandoned()
                raise tls_mistake from exc
            breaker.failed(probe=probe)
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
        breaker.succeeded()
        return result
