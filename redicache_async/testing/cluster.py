"""A Redis Cluster of real server processes on 127.0.0.1, and the failures a test inflicts on it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, overload

from redis.crc import key_slot

from ._control import (
    Failover,
    Problems,
    ReplyError,
    ServerGroup,
    address,
    ask,
    ask_text,
    ports,
    role,
    wait_until,
)
from .cluster_health import myself, strangers, whole_cluster_problems
from .server import RedisServer, ServerStartError

__all__ = ["ClusterServers"]

_SLOT_COUNT = 16384
# A node is suspected down after this long without an answer, and a failover follows within
# about one more timeout (the replicas' election waits 0.5-1 s). 1 s makes a failover in a test
# take ~2.3 s (~4 s at 2 s; the default is 15 s), and is still far above anything a node on
# loopback takes to answer, even on a loaded 2-core CI machine.
_NODE_TIMEOUT_MS = 1000
_START_TIMEOUT = 30.0
_SETTLE_TIMEOUT = 30.0


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 slots cut into ``masters`` contiguous ranges as even as can be."""
    bounds = [_SLOT_COUNT * index // masters for index in range(masters + 1)]
    return [(bounds[index], bounds[index + 1] - 1) for index in range(masters)]


class ClusterServers(ServerGroup):
    """``masters`` primaries with ``replicas`` replicas each, as one Redis Cluster.

    Every node is a :class:`RedisServer` (:attr:`nodes`; its ports are known before
    :meth:`start`). :meth:`start` returns once the cluster is whole: every node reports
    ``cluster_state:ok``, knows every other node, and agrees with the others on who serves
    which slots, and every replica's link to its master is up. The slots are split evenly over
    the first ``masters`` nodes; replica ``i`` follows master ``i % masters``. It raises
    :class:`ServerStartError` if a node does not start or the cluster does not settle within
    30 s (saying what was missing); every node is stopped again then.

    Roles change with failovers, so :meth:`masters`, :meth:`replicas`, :meth:`replica_of`
    and :meth:`master_of_slot` ask the live nodes each time. A killed node is left dead until
    :meth:`restart_node`; :meth:`stop` stops everything (as does the end of the interpreter).
    """

    nodes: tuple[RedisServer, ...]

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        binary: str | None = None,
        node_timeout_ms: int = _NODE_TIMEOUT_MS,
    ) -> None:
        super().__init__(binary, masters=(masters, 1), replicas=(replicas, 0))
        self.node_timeout_ms = node_timeout_ms
        self._master_count = masters
        node_args = [
            "--cluster-enabled",
            "yes",
            # Each node has a directory of its own, so one name fits all; a node restarted
            # after a kill finds its identity and its view of the cluster there.
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # The default delay (5 s) waits for more replicas to sync from one RDB; a replica
            # (re)joining in a test should not wait for company.
            "--repl-diskless-sync-delay",
            "0",
        ]
        # No --cluster-port: the bus listens on port + 10000, which free_port() keeps below
        # the ephemeral range. Should the bus port be taken, the node fails with "already in
        # use" and RedisServer.start() retries with a new port, and so a new bus port too.
        self.nodes = tuple(
            RedisServer(binary=self.binary, extra_args=node_args)
            for _ in range(masters * (1 + replicas))
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _launch(self) -> None:
        for node in self.nodes:
            node.start()
        try:
            self._form()
        except (OSError, ReplyError, ValueError) as error:
            raise ServerStartError(f"forming the cluster ({self._ports()}): {error}") from error
        wait_until(
            self._problems,
            timeout=_START_TIMEOUT,
            error=ServerStartError,
            what=f"a cluster of {len(self.nodes)} nodes ({self._ports()}) all ok",
        )

    def _form(self) -> None:
        masters = self.nodes[: self._master_count]
        for epoch, (master, (first, last)) in enumerate(
            zip(masters, _slot_ranges(len(masters)), strict=True), start=1
        ):
            # Distinct config epochs, as `redis-cli --cluster create` gives, so the masters
            # need not first settle an epoch collision between themselves.
            ask(master, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
            ask(master, "CLUSTER", "ADDSLOTSRANGE", first, last)
        introducer = self.nodes[0]
        for node in self.nodes[1:]:
            ask(introducer, "CLUSTER", "MEET", node.host, node.port)
        wait_until(
            self._strangers,
            timeout=_START_TIMEOUT,
            error=ServerStartError,
            what=f"every node of the cluster ({self._ports()}) knowing every other",
        )
        master_ids = [ask_text(master, "CLUSTER", "MYID") for master in masters]
        for index, replica in enumerate(self.nodes[len(masters) :]):
            ask(replica, "CLUSTER", "REPLICATE", master_ids[index % len(masters)])

    def _stop_order(self) -> Iterable[RedisServer]:
        # The replicas of the start first: a master stopping before its replicas waits up to
        # 1 s for them to acknowledge its last writes.
        return reversed(self.nodes)

    # -- where things are ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:P/0`` of a live master, for ``RedisCluster.from_url``."""
        masters = self.masters()
        if not masters:
            raise RuntimeError(f"no live master in the cluster ({self._ports()})")
        return masters[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, dead or alive: a client tries them in turn."""
        return [(node.host, node.port) for node in self.nodes]

    def masters(self) -> list[RedisServer]:
        """The live nodes that say they are masters."""
        return [node for node in self._live() if _role_or_none(node) == ("master", None)]

    def replicas(self, of: RedisServer | None = None) -> list[RedisServer]:
        """The live nodes that say they are replicas (of ``of``, if given)."""
        found = []
        for node in self._live():
            said = _role_or_none(node)
            if said is not None and said[0] == "replica" and (of is None or said[1] == of.port):
                found.append(node)
        return found

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A live replica of ``master`` (the first in :attr:`nodes` order)."""
        replicas = self.replicas(of=master)
        if not replicas:
            raise LookupError(f"{address(master)} has no live replica")
        return replicas[0]

    def master_of_slot(self, slot: int) -> RedisServer:
        """The live master serving ``slot``, as the masters themselves say.

        Were two to claim it (an old master back before it learned it was replaced), the
        higher config epoch wins, as it does in the cluster.
        """
        if not 0 <= slot < _SLOT_COUNT:
            raise ValueError(f"slot {slot} is not in 0..{_SLOT_COUNT - 1}")
        claims = []
        for master in self.masters():
            said = myself(master)
            if said.serves(slot):
                claims.append((said.config_epoch, master))
        if not claims:
            raise LookupError(f"no live master serves slot {slot}")
        return max(claims, key=lambda claim: claim[0])[1]

    def master_for_key(self, key: str | bytes) -> RedisServer:
        """The live master serving ``key`` (hash tags included, as clients compute it)."""
        return self.master_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    # -- failures --------------------------------------------------------------------------

    @overload
    def fail_master(
        self, master: RedisServer, *, wait: Literal[True] = ..., timeout: float = ...
    ) -> Failover: ...

    @overload
    def fail_master(
        self, master: RedisServer, *, wait: Literal[False], timeout: float = ...
    ) -> None: ...

    def fail_master(
        self, master: RedisServer, *, wait: bool = True, timeout: float = _SETTLE_TIMEOUT
    ) -> Failover | None:
        """SIGKILL ``master``; with ``wait``, return once a replica has taken over its slots
        and the cluster is whole again, with the replica and the seconds since the kill.

        Raises ``ValueError`` if ``master`` is not a live master, or (with ``wait``) has no
        live replica to take over, and ``TimeoutError`` if the cluster has not settled after
        ``timeout`` seconds.
        """
        self._check_member(master)
        if not master.running or _role_or_none(master) != ("master", None):
            raise ValueError(f"{address(master)} is not a live master")
        if wait and not self.replicas(of=master):
            raise ValueError(f"{address(master)} has no live replica to take over")
        slots = myself(master).slots
        if not slots:
            raise ValueError(f"{address(master)} serves no slots: nothing to take over")
        first_slot = slots[0][0]
        master.kill()
        if not wait:
            return None
        seconds = self.wait_ok(timeout)
        return Failover(self.master_of_slot(first_slot), seconds)

    def restart_node(self, node: RedisServer, *, timeout: float = _SETTLE_TIMEOUT) -> float:
        """Start a killed node again (same port, same directory, so the same cluster identity)
        and return the seconds until the cluster is whole with it.

        A master that was failed over comes back as a replica of the node that replaced it.
        """
        self._check_member(node)
        if node.running:
            raise RuntimeError(f"{address(node)} is running")
        node.start()
        return self.wait_ok(timeout)

    def wait_ok(self, timeout: float = _SETTLE_TIMEOUT) -> float:
        """Return the seconds until the live nodes form a whole cluster (see the class), or
        raise ``TimeoutError`` saying what is still missing after ``timeout`` seconds."""
        return wait_until(
            self._problems,
            timeout=timeout,
            error=TimeoutError,
            what=f"the cluster's live nodes ({self._ports()}) all ok",
        )

    def _strangers(self) -> Problems:
        return strangers(self.nodes)

    def _problems(self) -> Problems:
        return whole_cluster_problems(self._live())

    # -- helpers ---------------------------------------------------------------------------

    def _live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running]

    def _ports(self) -> str:
        return ports(self.nodes)

    def _check_member(self, node: RedisServer) -> None:
        if not any(node is member for member in self.nodes):
            raise ValueError(f"{node!r} is not a node of this cluster")

    def __repr__(self) -> str:
        return f"<ClusterServers {len(self.nodes)} nodes on ports {self._ports()} {self._state()}>"


def _role_or_none(node: RedisServer) -> tuple[str, int | None] | None:
    """The node's own word on its role; ``None`` if it does not answer (dying, paused)."""
    try:
        return role(node)
    except (OSError, ReplyError, ValueError):
        return None
