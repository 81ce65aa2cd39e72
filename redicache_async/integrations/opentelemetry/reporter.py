"""Reporting the observed clients and builders through a meter provider's instruments.

:class:`CacheMetrics` keeps the running totals of its sources; the instruments are made once per
meter provider (a hub) and ask every ``CacheMetrics`` on that provider when it collects. The
package docstring says what is reported and how.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Self

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter_provider

from redicache_async import __version__
from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.errors import ClientClosedError, InvalidArgumentTypeError

from .sources import Observed, Source, Stats
from .table import BUILDER, CLIENT, NAMESPACE, Kind, Metric

__all__ = ["METER_NAME", "CacheMetrics"]

#: The meter (instrumentation scope) the instruments belong to.
METER_NAME = "redicache_async"

_Attributes = frozenset[tuple[str, str]]


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
        self._sources: dict[int, Source] = {}
        #: running totals of the counts, by kind and namespace
        self._totals: dict[tuple[Kind, str], dict[str, int]] = {}
        self._closed = False
        self._hub = _hub(meter_provider if meter_provider is not None else get_meter_provider())
        self._hub.join(self)

    def __repr__(self) -> str:
        return f"<CacheMetrics sources={len(self._sources)}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def observe(self, source: Observed) -> None:
        """Report ``source`` (a :class:`CacheClient` or a :class:`CacheBuilder`, started or
        not) from now on, with everything it counted since it was created; held weakly, until
        it is closed or :meth:`forget` is called. Observing a source twice changes nothing."""
        if isinstance(source, CacheClient):
            kind = CLIENT
        elif isinstance(source, CacheBuilder):
            kind = BUILDER
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
                self._sources[id(source)] = Source(source, kind)

    def forget(self, source: Observed) -> None:
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

    def _measure(self, kind: Kind, metric: Metric, into: dict[_Attributes, int]) -> None:
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
                key = frozenset({NAMESPACE: namespace, **attributes}.items())
                into[key] = into.get(key, 0) + values[field]

    def _refresh(self, kind: Kind) -> None:
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

    def _advance(self, source: Source, stats: Stats) -> None:
        kind = source.kind
        totals = self._totals.setdefault((kind, source.namespace), dict.fromkeys(kind.counters, 0))
        for field in kind.counters:
            value: int = getattr(stats, field)
            # A builder's sums drop when a registration goes: that is no negative increase.
            totals[field] += max(0, value - source.last[field])
            source.last[field] = value
        source.current = {field: getattr(stats, field) for field in kind.gauges}

    def _prune(self, kind: Kind) -> None:
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
        for kind in (CLIENT, BUILDER):
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
        self, kind: Kind, metric: Metric
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
