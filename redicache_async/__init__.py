"""redicache_async: critical, expensive-to-compute data kept available and consistent across
every process that shares a Redis.

- :class:`CacheClient`: a two-level cache whose misses are fetched once across all processes.
"""

from __future__ import annotations

from .client import CacheClient
from .errors import (
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    RedicacheError,
    RedisUnavailableError,
    RegenerationInProgress,
    SerializationError,
)
from .serializers import JsonSerializer, Serializer
from .stats import CacheStats

__all__ = [
    "CacheClient",
    "CacheStats",
    "ClientClosedError",
    "FetchTimeout",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "JsonSerializer",
    "RedicacheError",
    "RedisUnavailableError",
    "RegenerationInProgress",
    "SerializationError",
    "Serializer",
]

__version__ = "0.1.0"
