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
attribute ``redicache.namespace``; the names, units and other attributes are listed in
``metrics.toml`` in this package (and in the docs' operating guide).

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

from .reporter import METER_NAME, CacheMetrics

__all__ = ["METER_NAME", "CacheMetrics"]
