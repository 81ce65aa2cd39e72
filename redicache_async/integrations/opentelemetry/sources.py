"""One observed client or builder: held weakly, and its figures at its last reading."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.logs import Throttle
from redicache_async.stats import BuilderStats, CacheStats

from .table import Kind

__all__ = ["Observed", "Source", "Stats"]

Observed = CacheClient | CacheBuilder
Stats = CacheStats | BuilderStats

_throttle = Throttle()


class Source:
    """One observed client or builder, and its figures at its last reading."""

    __slots__ = ("current", "key", "kind", "last", "namespace", "ref")

    def __init__(self, source: Observed, kind: Kind) -> None:
        self.ref = weakref.ref(source)
        self.key = id(source)
        self.kind = kind
        self.namespace = source.namespace
        #: counts at the last reading (its increase since then feeds the totals)
        self.last = dict.fromkeys(kind.counters, 0)
        #: current values at the last reading; None before the first
        self.current: dict[str, int] | None = None

    def read(self) -> tuple[Stats | None, bool]:
        """This source's ``stats()`` (None if unavailable now), and whether it is gone for
        good, in which case this reading was its last."""
        source = self.ref()
        if source is None:
            return None, True
        finished = source.closed  # checked first: a reading after the close is complete
        stats: Callable[[], Stats] = source.stats
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
