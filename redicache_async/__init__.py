"""redicache_async: critical, expensive-to-compute data kept available and consistent across
every process that shares a Redis.

- :class:`CacheClient`: a two-level cache whose misses are fetched once across all processes.
- :class:`CacheBuilder`: caches that rebuild themselves every interval, built by one elected
  instance and swapped in atomically.
- :class:`CacheHandle`: a client known at import time and opened later (in a lifespan), so
  that module-level functions can be decorated with ``@handle.cached(...)``.

The code is in five layers. A module imports only from its own layer or a lower one, never in
a cycle, and never another module's private (``_``) names; ``tests/test_layers.py`` reads the
map below and checks every import of every module against it::

    faces:       __init__ __main__ handle status_report integrations.* demo.*
    engines:     client.* builder.*
    mechanisms:  locks gateway election targets target_swap decorator call_keys status
    primitives:  leases listener subscriber invalidation replay orphans breaker pool_gate failover
                 batching tasks lifecycle fetching cancellation clock soft_timeout
    leaves:      local keys scripts direct stored errors stats validation serializers topology tls
                 logs backoff replies entry tags lua value_scripts
                 lease_scripts testing.*

- faces: the public names (here), ``handle.py`` (a client named at import time, bound
  later), ``python -m redicache_async`` (demo, status report, development server), the web
  framework and OpenTelemetry integrations.
- engines: ``client/`` is :class:`CacheClient`: ``cache.py`` its options, life and
  ``get_or_init``/``get``/``attempt_regeneration``, ``loads.py`` the read path (read, lock,
  fetch, wait, answer without Redis), ``fenced_writes.py`` the fenced write of a fetched
  value, ``writes.py`` ``set`` and ``delete``, ``many.py`` and ``many_writes.py`` the many-key
  calls (one round trip per cluster node), ``batch_loader.py`` ``get_or_init_many`` (many
  keys' locks claimed at once, one fetch), ``target_reads.py`` ``get_target``,
  ``clearing.py`` ``clear()`` and the namespace's clear time, ``tagging.py``
  ``invalidate_tags``, ``eager.py`` eager refresh, ``decorating.py`` what ``cached()``
  needs of it, ``coherence.py`` what may be kept locally, ``state.py`` the attributes they
  share.
  ``builder/`` is :class:`CacheBuilder`: ``registry.py`` the registrations, ``refresh.py`` one
  registration's loop and builds, ``spec.py`` their settings and status.
- mechanisms, shared by both engines where they do the same: ``locks.py`` (single-flight,
  wake-ups, the lock manager that makes and releases claims), ``gateway.py`` (every Redis
  command: deadline, circuit breaker, pool back-pressure, outage classification),
  ``election.py`` (leadership per registration), ``targets.py`` (target types and their
  commands), ``target_swap.py`` (a build's writes, atomic swap), ``decorator.py``
  (``@cache.cached``, a method of the client and of a handle, over a client's public
  operations) with ``call_keys.py`` (its default key of a call), ``status.py`` (a namespace
  read for operators).
- primitives: one claim (``leases.py``), the pub/sub listener and its codec and replay, the
  orphaned claims, the circuit breakers (one per cluster master), waiting for a pooled
  connection, the cluster failover watch, read batching, owned tasks, the open/close life,
  calling fetch functions, cancellation-safe deadlines, the server's clock offset, answering
  a caller past its soft timeout.
- leaves: the local layer, key names, Lua scripts, the stored value's layout, errors,
  counters, argument checks, serializers, topology and TLS facts, throttled logs, jittered
  back-off, reply decoding, a fetch's :class:`Entry`, tags and what a client knows of their
  invalidation times, and ``testing`` (real servers for tests).
"""

from __future__ import annotations

from .builder import BuildStatus, CacheBuilder
from .client import CacheClient
from .entry import Entry
from .errors import (
    BuildError,
    ClientClosedError,
    FetchTimeout,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidResultError,
    PoolExhaustedError,
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
    "Entry",
    "FetchTimeout",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidResultError",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "PoolExhaustedError",
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
