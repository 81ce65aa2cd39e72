"""Failovers that no listener hears of, on a cluster.

Replication is asynchronous: a master can acknowledge a write and die before its replica got
it, and the replica that takes over serves the older value. A listener on the dead node
reconnects and, finding no stream to replay (a cluster has none a script can write), drops
every local copy; a listener on a surviving node hears nothing at all, and its process would
serve the lost value from its local layer for ever.

Every failover raises the cluster's current epoch (``CLUSTER INFO``: a promoted replica takes a
new config epoch and tells every node at once). :class:`FailoverWatch` polls it and reports a
rise, so that its owner can stop trusting what it holds, as after a reconnection that could
not replay. The report comes at most ``interval + timeout`` after the node asked learned of the
new epoch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster

from .cancellation import bounded
from .errors import REDIS_FAILURES, describe_error

__all__ = ["FailoverWatch"]

logger = logging.getLogger("redicache_async")


class FailoverWatch:
    """Calls ``on_failover()`` each time the cluster's current epoch is seen to rise."""

    def __init__(
        self,
        redis: Any,
        *,
        on_failover: Callable[[], None],
        interval: float,
        timeout: float,
    ) -> None:
        self._redis = redis
        self._on_failover = on_failover
        self._interval = interval
        self._timeout = timeout
        #: The highest epoch seen (None: none yet). Nodes learn of a rise by gossip, so one
        #: asked later may still tell a lower one: only a rise past the highest counts.
        self.epoch: int | None = None

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        try:
            info = await bounded(
                self._redis.execute_command("CLUSTER INFO", target_nodes=RedisCluster.RANDOM),
                self._timeout,
            )
            epoch = int(info["cluster_current_epoch"])
        except REDIS_FAILURES as exc:  # an outage: the listener and the breaker deal with it
            logger.debug("reading the cluster's epoch failed: %s", describe_error(exc))
            return
        if self.epoch is not None and epoch > self.epoch:
            logger.info("the cluster's epoch rose (%d -> %d): a failover", self.epoch, epoch)
            self._on_failover()
        if self.epoch is None or epoch > self.epoch:
            self.epoch = epoch
