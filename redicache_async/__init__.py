"""redicache_async: critical, expensive-to-compute data kept available and consistent across
every process that shares a Redis.

- :class:`CacheClient`: a two-level cache whose misses are fetched once across all processes.
- :class:`CacheBuilder`: caches that rebuild themselves every interval, built by one elected
  instance and swapped in atomically.
- :class:`CacheHandle`: a client known at import time and opened later (in a lifespan), so
  that module-level functions can be decorated with ``@handle.cached(...)``.
"""

from __future__ import annotations

from .builder import BuildStatus, CacheBuilder
from .client import CacheClient
from .errors import (
    BuildError,
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidResultError,
    RedicacheError,
    RedisConfigurationError,
    RedisPermissionError,
    RedisUnavailableError,
    RegenerationInProgress,
    SerializationError,
    UnknownRegistrationError,
)
from .handle import CacheHandle
from .serializers import JsonSerializer, MsgpackSerializer, PickleSerializer, Serializer
from .stats import BuilderStats, CacheStats
from .targets import Target, TargetType

__all__ = [
    "BuildError",
    "BuildStatus",
    "BuilderStats",
    "CacheBuilder",
    "CacheClient",
    "CacheHandle",
    "CacheStats",
    "ClientClosedError",
    "FetchTimeout",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidResultError",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "RedicacheError",
    "RedisConfigurationError",
    "RedisPermissionError",
    "RedisUnavailableError",
    "RegenerationInProgress",
    "SerializationError",
    "Serializer",
    "Target",
    "TargetType",
    "UnknownRegistrationError",
]

__version__ = "0.1.0"
