"""What every part of :class:`~redicache_async.CacheClient` shares: its settings, the objects
it owns and the answers of a value read other than a value. The parts (``coherence.py``,
``loads.py``, ``target_reads.py``) are the client's mixins; ``cache.py`` makes them one class
and sets every attribute declared here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from redicache_async.batching import ReadBatcher
from redicache_async.clock import ServerClock
from redicache_async.fetching import FetchRunner
from redicache_async.gateway import RedisGateway
from redicache_async.keys import KeySpace
from redicache_async.lifecycle import Lifecycle
from redicache_async.listener import InvalidationListener
from redicache_async.local import LocalKey, LocalLayer
from redicache_async.locks import LockManager, SingleFlight, Wakeups
from redicache_async.scripts import Scripts
from redicache_async.serializers import Serializer
from redicache_async.stats import CacheStats
from redicache_async.tags import TagTimes
from redicache_async.tasks import OwnedTasks

__all__ = [
    "MISSING",
    "UNDECODABLE",
    "UNREACHABLE",
    "UNWATCHED",
    "ClientState",
    "Fetch",
    "Guard",
    "logger",
]

logger = logging.getLogger("redicache_async")

Fetch = Callable[[], Any]

#: A value read's answers other than a value: a value that cannot be decoded, no value in
#: Redis, Redis unreachable.
UNDECODABLE: Final = object()
MISSING: Final = object()
UNREACHABLE: Final = object()


class Guard:
    """Watches one key while a read or write of it is in flight, so that a result older than
    an event that arrived meanwhile is returned but not kept in the local layer."""

    __slots__ = ("min_version", "void")

    def __init__(self) -> None:
        self.min_version = 0
        self.void = False


#: The guard of a read that keeps nothing locally (a client without a local layer): watched by
#: no event, and nothing is remembered under it.
UNWATCHED: Final = Guard()


class ClientState(Lifecycle):
    """The attributes of a client (set by ``CacheClient.__init__``)."""

    _keys: KeySpace
    _lock_ttl: float
    _lock_ms: int
    _fetcher: FetchRunner
    _wait_timeout: float
    _stale_ttl: float
    _redis_timeout: float
    _serializer: Serializer
    _redis: Any
    _scripts: Scripts
    _gateway: RedisGateway
    #: The server's clock, for the local deadlines of values read (their expiry is server time).
    _clock: ServerClock
    #: Whether a lone read may be a plain GET: not before the server was seen to be a master,
    #: nor after it refused a write as a replica (READONLY), until it is seen a master again.
    #: Reads are then scripts, which a replica refuses. On a cluster a replica redirects a
    #: GET (MOVED) to its master, and a Sentinel failover disconnects the demoted master's
    #: clients: this covers a client pointed at a single server that became a replica.
    _plain_reads: bool
    _cluster: bool
    _locks: LockManager
    #: The event stream's key where a value's script can append to it (not on a cluster).
    _stream_keys: list[str]
    #: The namespace's clear time and tag times, where a fenced write's script can read them
    #: (not on a cluster).
    _fence_keys: list[str]
    _origin: str
    _local: LocalLayer
    _stats: CacheStats
    #: Every task that may fetch or write: none outlives aclose().
    _tasks: OwnedTasks
    _loads: SingleFlight[Any]
    _reads: SingleFlight[Any]
    _values: ReadBatcher[str, Any]
    #: The same reads for ``eager_refresh`` callers, whose answers keep the value's header
    #: (``eager.py``): forgotten alike.
    _headed_values: ReadBatcher[str, Any]
    _wakeups: Wakeups
    _guards: dict[LocalKey, list[Guard]]
    #: Fields of builder targets held locally, by target: dropped with their target.
    _target_fields: dict[str, set[str]]
    _listener: InvalidationListener
    _subscriptions: int
    #: When the namespace was last cleared, as far as this client knows (a version; 0: never).
    _cleared: int
    #: When the tags were last invalidated, as far as this client knows (``tags.py``).
    _tag_times: TagTimes
    #: The keys held locally with each tag, so that its invalidation drops them (it may name
    #: keys gone since: pruned past a bound, ``coherence.py``).
    _tagged: dict[str, set[LocalKey]]
    _tagged_count: int
