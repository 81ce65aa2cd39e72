"""OpenTelemetry metrics: the counters of ``CacheClient.stats()`` and ``CacheBuilder.stats()``.

::

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from redicache_async.integrations.opentelemetry import CacheMetrics

    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)])
    metrics = CacheMetrics(provider)  # CacheMetrics(): the global meter provider
    metrics.observe(cache)            # a CacheClient
    metrics.observe(builder)          # a CacheBuilder

The figures are read from ``stats()`` when the meter provider collects, by asynchronous
(observable) instruments of the meter ``redicache_async``: nothing is added to a cache's read
path. Counts are observable counters; current values (the local layer's entries and bytes, a
builder's registrations) observable up-down counters. Every figure carries the
attribute ``redicache.namespace``; the names, units and other attributes are in the tables
``_CLIENT_METRICS`` and ``_BUILDER_METRICS`` below (and in the README).

Sources are held weakly: a client or builder that is closed or garbage-collected stops being
reported, and ``forget()`` detaches one at once. ``close()`` (or leaving ``with
CacheMetrics(...)``) detaches them all and stops reporting.

Several sources on one namespace (two clients in one process, say) are summed: their figures
carry the same attributes, and a process's identity belongs to the OpenTelemetry resource
(``service.instance.id``), not to an attribute here. So that a count never goes back, which a
backend would read as a restart, each count is a running total fed by every source's increase
since its previous reading: a source that goes away leaves its counts in the total (less its
increase since the last collection if it was garbage-collected without being closed), as does a
builder's unregistered cache, whose figures ``BuilderStats`` drops. A namespace with no source
left is no longer reported: its series end.

A periodic reader collects in a thread of its own. ``stats()`` of a client or a builder only
reads plain counters, so it is called from there directly, never waiting on the event loop.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter_provider

from redicache_async import __version__
from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.errors import ClientClosedError, InvalidArgumentTypeError
from redicache_async.logs import Throttle
from redicache_async.stats import BuilderStats, CacheStats

__all__ = ["METER_NAME", "CacheMetrics"]

#: The meter (instrumentation scope) the instruments belong to.
METER_NAME = "redicache_async"

_Observed = CacheClient | CacheBuilder
_Stats = CacheStats | BuilderStats
_Attributes = frozenset[tuple[str, str]]

_NAMESPACE = "redicache.namespace"
_LAYER = "redicache.layer"
_DIRECTION = "redicache.direction"
_ERROR_KIND = "redicache.error.kind"
_OUTCOME = "redicache.outcome"
_RECOVERY = "redicache.recovery"


@dataclass(frozen=True, slots=True)
class _Metric:
    name: str
    unit: str
    description: str
    #: ``stats()`` field -> the attributes (beside the namespace) its figure is reported under
    fields: Mapping[str, Mapping[str, str]]
    #: a count (``ObservableCounter``); else a current value (``ObservableUpDownCounter``)
    counter: bool = True


_CLIENT_METRICS = (
    _Metric(
        "redicache.client.hits",
        "{hit}",
        "Reads answered by the local layer (no I/O) or by Redis after a local miss.",
        {"local_hits": {_LAYER: "local"}, "redis_hits": {_LAYER: "redis"}},
    ),
    _Metric(
        "redicache.client.misses", "{miss}", "Reads that found no value in Redis.", {"misses": {}}
    ),
    _Metric(
        "redicache.client.fetches",
        "{fetch}",
        "Fetch functions run by this client.",
        {"fetches": {}},
    ),
    _Metric(
        "redicache.client.errors",
        "{error}",
        "Failures: a fetch that raised or timed out, a value in Redis that could not be "
        "decoded, a Redis call that failed or timed out.",
        {
            "fetch_errors": {_ERROR_KIND: "fetch"},
            "decode_errors": {_ERROR_KIND: "decode"},
            "redis_errors": {_ERROR_KIND: "redis"},
        },
    ),
    _Metric(
        "redicache.client.writes",
        "{write}",
        "Values written to Redis, or rejected (fenced) because the write lock had expired.",
        {"writes": {_OUTCOME: "success"}, "fenced_writes": {_OUTCOME: "fenced"}},
    ),
    _Metric(
        "redicache.client.deletes", "{delete}", "Keys deleted by this client.", {"deletes": {}}
    ),
    _Metric(
        "redicache.client.invalidations",
        "{message}",
        "Invalidation messages sent by this client, received (about a value, from any "
        "process), or ignored (malformed or foreign).",
        {
            "invalidations_sent": {_DIRECTION: "sent"},
            "invalidations_received": {_DIRECTION: "received"},
            "invalidations_ignored": {_DIRECTION: "ignored"},
        },
    ),
    _Metric(
        "redicache.client.lock.waits",
        "{wait}",
        "Loads that found the write lock held by another process and waited for its value.",
        {"lock_waits": {}},
    ),
    _Metric(
        "redicache.client.lock.wait_timeouts",
        "{timeout}",
        "Waits that ran past wait_timeout and fetched in-process instead.",
        {"lock_wait_timeouts": {}},
    ),
    _Metric(
        "redicache.client.lock.takeovers",
        "{takeover}",
        "Locks taken after waiting on a holder that died or failed without a value.",
        {"lock_takeovers": {}},
    ),
    _Metric(
        "redicache.client.listener.recoveries",
        "{recovery}",
        "Reconnections of the invalidation listener: missed events replayed from the stream, "
        "or, when they could not be, the local layer flushed.",
        {"replays": {_RECOVERY: "replay"}, "local_flushes": {_RECOVERY: "flush"}},
    ),
    _Metric(
        "redicache.client.circuit.opens",
        "{open}",
        "Times the circuit breaker opened after Redis errors.",
        {"circuit_opens": {}},
    ),
    _Metric(
        "redicache.client.circuit.skips",
        "{call}",
        "Redis calls skipped while the circuit breaker was open.",
        {"circuit_skips": {}},
    ),
    _Metric(
        "redicache.client.stale_served",
        "{value}",
        "Expired local values served within stale_ttl because Redis or the fetch failed.",
        {"stale_served": {}},
    ),
    _Metric(
        "redicache.client.local.evictions",
        "{entry}",
        "Entries the local layer dropped to stay within its bounds.",
        {"local_evictions": {}},
    ),
    _Metric(
        "redicache.client.local.entry.count",
        "{entry}",
        "Entries in the local layer.",
        {"local_entries": {}},
        counter=False,
    ),
    _Metric(
        "redicache.client.local.size",
        "By",
        "Serialized size of the values in the local layer.",
        {"local_bytes": {}},
        counter=False,
    ),
)

_BUILDER_METRICS = (
    _Metric(
        "redicache.builder.registration.count",
        "{registration}",
        "Registrations on this instance.",
        {"registrations": {}},
        counter=False,
    ),
    _Metric(
        "redicache.builder.registration.leading",
        "{registration}",
        "Registrations this instance leads.",
        {"leading": {}},
        counter=False,
    ),
    _Metric(
        "redicache.builder.terms",
        "{term}",
        "Times this instance became the leader of a registration.",
        {"terms": {}},
    ),
    _Metric(
        "redicache.builder.builds",
        "{build}",
        "Builds of this instance: swapped in, or failed (the targets kept their data).",
        {"builds": {_OUTCOME: "success"}, "failures": {_OUTCOME: "failure"}},
    ),
    _Metric(
        "redicache.builder.ignored_messages",
        "{message}",
        "Messages on the builders' channel that were malformed or foreign, and so ignored.",
        {"ignored_messages": {}},
    ),
)


class _Kind:
    """Clients or builders: their metrics, and which of their fields are counts."""

    def __init__(self, metrics: tuple[_Metric, ...]) -> None:
        self.metrics = metrics
        self.counters = tuple(f for m in metrics if m.counter for f in m.fields)
        self.gauges = tuple(f for m in metrics if not m.counter for f in m.fields)


_CLIENT = _Kind(_CLIENT_METRICS)
_BUILDER = _Kind(_BUILDER_METRICS)

_throttle = Throttle()


class _Source:
    """One observed client or builder, and its figures at its last reading."""

    __slots__ = ("current", "key", "kind", "last", "namespace", "ref")

    def __init__(self, source: _Observed, kind: _Kind) -> None:
        self.ref = weakref.ref(source)
        self.key = id(source)
        self.kind = kind
        self.namespace = source.namespace
        #: counts at the last reading (its increase since then feeds the totals)
        self.last = dict.fromkeys(kind.counters, 0)
        #: current values at the last reading; None before the first
        self.current: dict[str, int] | None = None

    def read(self) -> tuple[_Stats | None, bool]:
        """This source's ``stats()`` (None if unavailable now), and whether it is gone for
        good, in which case this reading was its last."""
        source = self.ref()
        if source is None:
            return None, True
        finished = source.closed  # checked first: a reading after the close is complete
        stats: Callable[[], _Stats] = source.stats
        try:
            return stats(), finished
        except Exception as exc:
            _throttle.log(
                logging.WARNING,
                ("stats", type(exc)),
                "could not read the figures of %r for OpenTelemetry: %r",
                source,
                exc,
            )
            return None, finished


class CacheMetrics:
    """Reports the ``stats()`` of the clients and builders given to :meth:`observe` as
    OpenTelemetry metrics, through ``meter_provider`` (the global one when None).

    Thread-safe. The instruments are created once per meter provider and shared by every
    ``CacheMetrics`` on it (a source observed by two of them is counted twice). For the global
    provider, create it once that provider is set: one made before and one after would both
    create the instruments on the same meter, and the second set would never be called.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, _Source] = {}
        #: running totals of the counts, by kind and namespace
        self._totals: dict[tuple[_Kind, str], dict[str, int]] = {}
        self._closed = False
        self._hub = _hub(meter_provider if meter_provider is not None else get_meter_provider())
        self._hub.join(self)

    def __repr__(self) -> str:
        return f"<CacheMetrics sources={len(self._sources)}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def observe(self, source: _Observed) -> None:
        """Report ``source`` (a :class:`CacheClient` or a :class:`CacheBuilder`, started or
        not) from now on, with everything it counted since it was created; held weakly, until
        it is closed or :meth:`forget` is called. Observing a source twice changes nothing."""
        if isinstance(source, CacheClient):
            kind = _CLIENT
        elif isinstance(source, CacheBuilder):
            kind = _BUILDER
        else:
            raise InvalidArgumentTypeError(
                f"expected a CacheClient or a CacheBuilder, not {type(source).__name__}"
            )
        if source.closed:
            raise ClientClosedError(f"this {type(source).__name__} is closed")
        with self._lock:
            if self._closed:
                raise ClientClosedError("this CacheMetrics is closed")
            known = self._sources.get(id(source))
            if known is None or known.ref() is not source:
                self._sources[id(source)] = _Source(source, kind)

    def forget(self, source: _Observed) -> None:
        """Stop reporting ``source`` (its counts so far stay in its namespace's totals while
        the namespace has other sources). Unknown sources are ignored."""
        with self._lock:
            known = self._sources.get(id(source))
        if known is None or known.ref() is not source:
            return
        stats, _ = known.read()
        with self._lock:
            if self._sources.get(known.key) is known:
                if stats is not None:
                    self._advance(known, stats)
                del self._sources[known.key]
                self._prune(known.kind)

    def close(self) -> None:
        """Forget every source and stop reporting. Idempotent."""
        with self._lock:
            self._closed = True
            self._sources.clear()
            self._totals.clear()
        self._hub.leave(self)

    # -- collection, called by the instruments' callbacks --------------------------------------

    def _measure(self, kind: _Kind, metric: _Metric, into: dict[_Attributes, int]) -> None:
        """Add this object's figures for ``metric`` to ``into``, by attribute set."""
        self._refresh(kind)
        with self._lock:
            if metric.counter:
                figures = [
                    (namespace, dict(totals))  # copied: readings in other threads add to them
                    for (k, namespace), totals in self._totals.items()
                    if k is kind
                ]
            else:
                figures = [
                    (s.namespace, s.current)
                    for s in self._sources.values()
                    if s.kind is kind and s.current is not None
                ]
        for namespace, values in figures:
            for field, attributes in metric.fields.items():
                key = frozenset({_NAMESPACE: namespace, **attributes}.items())
                into[key] = into.get(key, 0) + values[field]

    def _refresh(self, kind: _Kind) -> None:
        """Read every source of ``kind`` (outside the lock: ``stats()`` is the source's code)
        and fold the readings in."""
        with self._lock:
            sources = [s for s in self._sources.values() if s.kind is kind]
        readings = [(s, *s.read()) for s in sources]
        with self._lock:
            for source, stats, finished in readings:
                if self._sources.get(source.key) is not source:  # forgotten meanwhile
                    continue
                if stats is not None:
                    self._advance(source, stats)
                if finished:
                    del self._sources[source.key]
            self._prune(kind)

    def _advance(self, source: _Source, stats: _Stats) -> None:
        kind = source.kind
        totals = self._totals.setdefault((kind, source.namespace), dict.fromkeys(kind.counters, 0))
        for field in kind.counters:
            value: int = getattr(stats, field)
            # A builder's sums drop when a registration goes: that is no negative increase.
            totals[field] += max(0, value - source.last[field])
            source.last[field] = value
        source.current = {field: getattr(stats, field) for field in kind.gauges}

    def _prune(self, kind: _Kind) -> None:
        """Drop the totals of the namespaces of ``kind`` that have no source left."""
        live = {s.namespace for s in self._sources.values() if s.kind is kind}
        for key in [key for key in self._totals if key[0] is kind and key[1] not in live]:
            del self._totals[key]


class _Hub:
    """The instruments of one meter provider, and the :class:`CacheMetrics` reporting through
    them.

    The SDK identifies an instrument by its meter and its name, kind, unit and description:
    creating it again returns the first one and drops the new callbacks, silently (opentelemetry
    -sdk 1.45: ``Meter.create_observable_counter`` in ``sdk/metrics/_internal/__init__.py``
    returns ``_instrument_id_instrument[instrument_id]`` when ``_register_instrument`` reports
    it ``already_registered``, and only registers new instruments with the measurement
    consumer; a warning is logged only if the advisory differs). A second ``CacheMetrics`` with
    instruments of its own would so never be called, nor would a new one after the first was
    closed: hence instruments made once per provider, whose callbacks ask every member.
    """

    def __init__(self, provider: MeterProvider) -> None:
        self._lock = threading.Lock()
        self._members: weakref.WeakSet[CacheMetrics] = weakref.WeakSet()
        meter = provider.get_meter(METER_NAME, version=__version__)
        for kind in (_CLIENT, _BUILDER):
            for metric in kind.metrics:
                create = (
                    meter.create_observable_counter
                    if metric.counter
                    else meter.create_observable_up_down_counter
                )
                create(
                    metric.name,
                    callbacks=[self._callback(kind, metric)],
                    unit=metric.unit,
                    description=metric.description,
                )

    def join(self, member: CacheMetrics) -> None:
        with self._lock:
            self._members.add(member)

    def leave(self, member: CacheMetrics) -> None:
        with self._lock:
            self._members.discard(member)

    def _callback(
        self, kind: _Kind, metric: _Metric
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                members = list(self._members)
            figures: dict[_Attributes, int] = {}
            for member in members:
                member._measure(kind, metric, figures)
            return [Observation(value, dict(key)) for key, value in figures.items()]

        return observe


#: One hub per meter provider, for as long as the provider lives.
_hubs: weakref.WeakKeyDictionary[MeterProvider, _Hub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _hub(provider: MeterProvider) -> _Hub:
    with _hubs_lock:
        try:
            hub = _hubs.get(provider)
        except TypeError:  # a provider that cannot be referenced weakly: not shared
            return _Hub(provider)
        if hub is None:
            hub = _hubs[provider] = _Hub(provider)
        return hub
