"""The exceptions this library raises. Every one derives from :class:`RedicacheError`."""

from __future__ import annotations

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MaxConnectionsError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [  # noqa: RUF022 - the hierarchy's order, root first
    "RedicacheError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidResultError",
    "SerializationError",
    "RegenerationInProgress",
    "FetchTimeout",
    "ClientClosedError",
    "RedisUnavailableError",
    "PoolExhaustedError",
    "RedisConfigurationError",
    "RedisPermissionError",
    "BuildError",
    "UnknownRegistrationError",
    "describe_error",
]


class RedicacheError(Exception):
    """Root of every error raised by redicache_async."""


class InvalidArgumentError(RedicacheError, ValueError):
    """An argument has the right type but a value the library cannot accept."""


class InvalidArgumentTypeError(RedicacheError, TypeError):
    """An argument has a type the library cannot accept."""


class SerializationError(RedicacheError, TypeError):
    """A value cannot be turned into bytes by the client's serializer."""


class RegenerationInProgress(RedicacheError):
    """``attempt_regeneration`` found the key's write lock held by another caller."""

    def __init__(self, key: str) -> None:
        super().__init__(f"regeneration of {key!r} is already in progress elsewhere")
        self.key = key


class FetchTimeout(RedicacheError, TimeoutError):
    """A fetch function ran longer than ``fetch_timeout``."""

    def __init__(self, key: str, timeout: float) -> None:
        super().__init__(f"fetch for {key!r} did not finish within {timeout:g} s")
        self.key = key
        self.timeout = timeout


class ClientClosedError(RedicacheError, RuntimeError):
    """The object was used after ``aclose()`` (or before it was opened)."""


class RedisUnavailableError(RedicacheError, ConnectionError):
    """Redis could not be reached within ``redis_timeout`` for an operation that needs it
    (a write or a delete); reads answer without Redis instead of raising this."""


class PoolExhaustedError(RedicacheError):
    """No connection of the Redis client's pool came free within ``redis_timeout``: every one
    was busy with other calls (the pool's ``max_connections`` is smaller than the concurrency).
    Redis was not tried, so this is back-pressure, not an outage: it does not count towards
    the circuit breaker, and nothing answers as if Redis were down."""


class RedisConfigurationError(RedicacheError):
    """Redis cannot be used as configured, and waiting will not change it: a TLS handshake
    that fails (a wrong CA, a plain URL pointed at a TLS port), or a refusal
    (:class:`RedisPermissionError`). Not an outage: nothing falls back to fetching
    in-process, so the misconfiguration shows."""


class RedisPermissionError(RedisConfigurationError, PermissionError):
    """Redis refused this client: a wrong or missing password, or an ACL that does not allow a
    command, key or channel the library needs (see the minimal ACL rule on the docs' Security
    page)."""


#: redis-py's errors for a server that refuses this client (credentials, ACL).
REFUSALS = (AuthenticationError, AuthorizationError, NoPermissionError)

#: Errors of a Redis that cannot answer now: unreachable, slow, or between two topologies (a
#: cluster whose master failed and whose slot has no master yet, a node that was just demoted
#: to a replica, a cluster client that cannot rebuild its map of the slots).
OUTAGES = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)

#: Every error a Redis command can raise: redis-py's cluster client raises some errors that
#: are not :class:`redis.exceptions.RedisError`.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


def pool_exhausted(exc: BaseException) -> bool:
    """Whether redis-py raised ``exc`` because its pool had no connection to give: a
    ``ConnectionPool`` (or a cluster node's pool) at ``max_connections``, or a
    ``BlockingConnectionPool`` whose own wait ran out. Both are ``ConnectionError``s, which
    would otherwise read as an outage."""
    if isinstance(exc, MaxConnectionsError):
        return True
    # BlockingConnectionPool.get_connection: its wait for a connection timed out.
    return (
        isinstance(exc, RedisConnectionError)
        and isinstance(exc.__cause__, TimeoutError)
        and str(exc) == "No connection available."
    )


def describe_error(exc: BaseException) -> str:
    """``Type: message``: redis-py's own ``repr`` of its errors drops the server's message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class InvalidResultError(RedicacheError, ValueError):
    """A builder's fetch function returned data that does not fit one of its targets."""


class BuildError(RedicacheError):
    """A build that ``CacheBuilder.refresh`` waited for did not swap in new data; the previous
    data stays. The cause is chained (``__cause__``) where there is one."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"build of {name!r} failed: {reason}")
        self.name = name


class UnknownRegistrationError(RedicacheError, LookupError):
    """No registration of that name on this builder."""

    def __init__(self, name: object) -> None:
        super().__init__(f"no registration named {name!r} on this builder")
        self.name = name
