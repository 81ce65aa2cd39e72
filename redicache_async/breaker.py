"""A circuit breaker for Redis calls, so that a dead or frozen server costs callers nothing.

Closed, every call goes to Redis. After ``threshold`` failures in a row (connection errors and
timeouts, not refused commands) it opens: calls skip Redis for a window that starts short and
doubles with every failure while open, up to ``max_window``. When a window ends, one call is let
through as a probe; its success closes the breaker, its failure opens the next window. Anything
else that proves Redis is back (the listener resubscribing) may close it early with
:meth:`CircuitBreaker.close`.

:class:`Breakers` keeps one per node a call goes to: on a cluster, one per master (the owner of
the call's key's slot), so that a dead master costs only its own slots; on one server or
through Sentinel, one for all.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any, Final

from .errors import RedisUnavailableError
from .topology import is_cluster, masters, slot_map, slot_owner

__all__ = ["Breakers", "CircuitBreaker", "CircuitOpenError"]

logger = logging.getLogger("redicache_async")

_CLOSED: Final = 0.0


class CircuitOpenError(RedisUnavailableError):
    """Redis was not tried: it failed just before and the breaker's window is still open."""

    def __init__(self) -> None:
        super().__init__("Redis is unreachable (recent calls failed; it is probed again soon)")


class CircuitBreaker:
    __slots__ = (
        "_failures",
        "_first_window",
        "_max_window",
        "_open_until",
        "_probing",
        "_threshold",
        "_window",
        "epoch",
        "name",
        "opened",
        "skipped",
    )

    def __init__(
        self,
        *,
        threshold: int = 3,
        first_window: float = 0.05,
        max_window: float = 2.0,
        name: str = "Redis",
    ) -> None:
        #: What the breaker guards, for its log lines ("Redis", or a cluster node's address).
        self.name = name
        self._threshold = threshold
        self._first_window = first_window
        self._max_window = max_window
        self._failures = 0
        self._window = first_window
        #: ``monotonic()`` until which calls skip Redis; 0 while closed.
        self._open_until = _CLOSED
        self._probing = False
        #: Times the breaker opened, and calls it answered without trying Redis.
        self.opened = 0
        self.skipped = 0
        #: Bumped by :meth:`close`. A call reports the epoch it started in: a failure from
        #: before the last close (a call to a master that a failover replaced, ending after the
        #: listener reached the new one) says nothing about Redis now.
        self.epoch = 0

    @property
    def is_open(self) -> bool:
        return self._open_until != _CLOSED

    def allow(self) -> bool:
        """Whether a call may go to Redis now. When this returns True while the breaker is
        open, the call is the probe (``is_open`` tells): report its end with ``succeeded``,
        ``failed(probe=True)`` or ``abandoned()``."""
        if self._open_until == _CLOSED:
            return True
        if self._probing or monotonic() < self._open_until:
            self.skipped += 1
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self._failures:
            self.close()

    def failed(self, *, probe: bool = False, epoch: int | None = None) -> None:
        """A call found Redis unreachable (``probe``: the call that ``allow`` let through while
        open; a failure of a call sent before the breaker opened frees no probe slot).
        ``epoch``: the :attr:`epoch` the call started in; a call older than the last close
        is not counted."""
        if epoch is not None and epoch != self.epoch:
            return
        self._failures += 1
        if probe:
            self._probing = False
        if self._failures < self._threshold:
            return
        if self._open_until == _CLOSED:
            self.opened += 1
            logger.warning(
                "%s is unreachable; calls skip it (probing every %.2f-%.1f s) until it answers",
                self.name,
                self._first_window,
                self._max_window,
            )
        else:
            self._window = min(self._window * 2, self._max_window)
        self._open_until = monotonic() + self._window

    def abandoned(self) -> None:
        """The probe ended without telling anything (cancelled, or refused for another reason)."""
        self._probing = False

    def close(self) -> None:
        if self._open_until != _CLOSED:
            logger.warning("%s answers again; calls go to it", self.name)
        self._failures = 0
        self._window = self._first_window
        self._open_until = _CLOSED
        self._probing = False
        self.epoch += 1


class Breakers:
    """The circuit breakers of one client's calls: one for all of them on one server or
    through Sentinel; on a cluster, one per master, chosen by the call's key (:meth:`for_key`).

    A failing master then opens only its own breaker: calls for the slots of the others neither
    wait nor answer as if Redis were down. Breakers are keyed by node address, so when a
    failover moves a slot to the promoted replica, that slot's calls go to the replica's own
    breaker (closed) from the moment the client's map of the slots names it, not to the dead
    node's. Each time the client builds a new map, the breakers of nodes that are no longer
    masters are dropped: a node that comes back (as a replica) and is promoted later starts
    with a closed breaker, not the open one it left with. Keyless calls (loading the scripts)
    and calls made before the client has a map use :attr:`whole`.
    """

    __slots__ = (
        "_by_node",
        "_cluster",
        "_dropped_opened",
        "_dropped_skipped",
        "_map",
        "_redis",
        "whole",
    )

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._cluster = is_cluster(redis)
        self.whole = CircuitBreaker()
        self._by_node: dict[str, CircuitBreaker] = {}
        self._map: object = None
        self._dropped_opened = 0
        self._dropped_skipped = 0

    def for_key(self, key: str | None) -> CircuitBreaker:
        """The breaker of the node a command for ``key`` goes to."""
        if not self._cluster or key is None:
            return self.whole
        node = slot_owner(self._redis, key)
        if node is None:
            return self.whole
        current = slot_map(self._redis)
        if current is not self._map:
            self._map = current
            self._forget_former_masters()
        breaker = self._by_node.get(node)
        if breaker is None:
            breaker = self._by_node[node] = CircuitBreaker(name=f"Redis node {node}")
        return breaker

    def _forget_former_masters(self) -> None:
        live = masters(self._redis)
        for node in [node for node in self._by_node if node not in live]:
            dropped = self._by_node.pop(node)
            self._dropped_opened += dropped.opened
            self._dropped_skipped += dropped.skipped

    def _every(self) -> list[CircuitBreaker]:
        return [self.whole, *self._by_node.values()]

    @property
    def opened(self) -> int:
        """Times a breaker opened, all nodes together."""
        return self._dropped_opened + sum(breaker.opened for breaker in self._every())

    @property
    def skipped(self) -> int:
        """Calls answered without trying Redis, all nodes together."""
        return self._dropped_skipped + sum(breaker.skipped for breaker in self._every())

    def node(self, name: str) -> CircuitBreaker | None:
        """The breaker of the cluster node ``name`` (``host:port``), if it has one."""
        return self._by_node.get(name)

    def close(self) -> None:
        """Something proved Redis answers (the listener subscribed): every call may try it."""
        self.whole.close()
        for breaker in self._by_node.values():
            breaker.close()
