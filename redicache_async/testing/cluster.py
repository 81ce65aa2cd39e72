"""A Redis Cluster of real server processes on 127.0.0.1, and the failures a test inflicts on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, overload

from redis.crc import key_slot

from ._control import (
    Failover,
    Problems,
    ReplyError,
    address,
    ask,
    ask_text,
    info,
    role,
    wait_until,
)
from .server import RedisServer, ServerStartError, find_server_binary

__all__ = ["ClusterServers"]

_SLOT_COUNT = 16384
# A node is suspected down after this long without an answer, and a failover follows within
# about one more timeout (the replicas' election waits 0.5-1 s). 1 s makes a failover in a test
# take ~2.3 s (~4 s at 2 s; the default is 15 s), and is still far above anything a node on
# loopback takes to answer, even on a loaded 2-core CI machine.
_NODE_TIMEOUT_MS = 1000
_START_TIMEOUT = 30.0
_SETTLE_TIMEOUT = 30.0
# Flags that say one node does not (yet, or any more) trust another as a working peer.
_UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class _Peer:
    """One line of ``CLUSTER NODES``: what the asked node believes about a node."""

    port: int
    flags: frozenset[str]
    config_epoch: int
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, line: str) -> _Peer:
        # <id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        fields = line.split()
        _, endpoint, flags, _, _, _, epoch, link = fields[:8]
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated: still owned by its source
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(
            port=int(endpoint.split("@")[0].rpartition(":")[2]),
            flags=frozenset(flags.split(",")),
            config_epoch=int(epoch),
            connected=link == "connected",
            slots=tuple(slots),
        )

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def _peers(node: RedisServer) -> list[_Peer]:
    return [_Peer.parse(line) for line in ask_text(node, "CLUSTER", "NODES").splitlines()]


def _myself_in(view: list[_Peer]) -> _Peer:
    return next(peer for peer in view if "myself" in peer.flags)


def _myself(node: RedisServer) -> _Peer:
    """What ``node`` says of itself: its role, its slots, its config epoch."""
    return _myself_in(_peers(node))


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 slots cut into ``masters`` contiguous ranges as even as can be."""
    bounds = [_SLOT_COUNT * index // masters for index in range(masters + 1)]
    return [(bounds[index], bounds[index + 1] - 1) for index in range(masters)]


class ClusterServers:
    """``masters`` primaries with ``replicas`` replicas each, as one Redis Cluster.

    Every node is a :class:`RedisServer` (:attr:`nodes`; its ports are known before
    :meth:`start`). :meth:`start` returns once the cluster is whole: every node reports
    ``cluster_state:ok``, knows every other node, and agrees with the others on who serves
    which slots, and every replica's link to its master is up. The slots are split evenly over
    the first ``masters`` nodes; replica ``i`` follows master ``i % masters``.

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
        if masters < 1 or replicas < 0:
            raise ValueError(f"need masters >= 1 and replicas >= 0, not {masters}, {replicas}")
        self.binary = binary or find_server_binary()
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
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ClusterServers:
        """Start every node, form the cluster, and return once it is whole (see the class).

        Raises :class:`ServerStartError` if a node does not start or the cluster does not
        settle within 30 s (saying what was missing); every node is stopped again then.
        """
        if self._started:
            raise RuntimeError("the cluster is already started")
        self._started = True
        try:
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
        except BaseException:
            self.stop()
            raise
        return self

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

    def stop(self) -> None:
        """Stop every node and remove its directory. Idempotent."""
        # The replicas of the start first: a master stopping before its replicas waits up to
        # 1 s for them to acknowledge its last writes.
        for node in reversed(self.nodes):
            node.stop()
        self._started = False

    def __enter__(self) -> ClusterServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

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
            myself = _myself(master)
            if myself.serves(slot):
                claims.append((myself.config_epoch, master))
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
        slots = _myself(master).slots
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

    # -- checks ----------------------------------------------------------------------------

    def _strangers(self) -> Problems:
        """Nodes that do not yet know (past the handshake) every other node."""
        problems = []
        everyone = {node.port for node in self.nodes}
        for node in self.nodes:
            try:
                known = {p.port for p in _peers(node) if not p.flags & {"handshake", "noaddr"}}
            except (OSError, ReplyError, ValueError) as error:
                problems.append(f"{address(node)} does not answer CLUSTER NODES: {error}")
                continue
            if everyone - known:
                problems.append(f"{address(node)} does not know {_listed(everyone - known)}")
        return problems

    def _problems(self) -> Problems:
        """What keeps the live nodes from being a whole cluster (see the class)."""
        live_ports = {node.port for node in self._live()}
        problems: Problems = []
        views: dict[int, list[_Peer]] = {}
        for node in self._live():
            try:
                problems += _own_problems(node, live_ports)
                views[node.port] = _peers(node)
            except (OSError, ReplyError, ValueError) as error:
                problems.append(f"{address(node)} does not answer: {error}")
        return problems + _disagreements(views, live_ports)

    # -- helpers ---------------------------------------------------------------------------

    def _live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running]

    def _ports(self) -> str:
        return ", ".join(str(node.port) for node in self.nodes)

    def _check_member(self, node: RedisServer) -> None:
        if not any(node is member for member in self.nodes):
            raise ValueError(f"{node!r} is not a node of this cluster")

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"<ClusterServers {len(self.nodes)} nodes on ports {self._ports()} {state}>"


def _role_or_none(node: RedisServer) -> tuple[str, int | None] | None:
    """The node's own word on its role; ``None`` if it does not answer (dying, paused)."""
    try:
        return role(node)
    except (OSError, ReplyError, ValueError):
        return None


def _cluster_state(node: RedisServer) -> str:
    for line in ask_text(node, "CLUSTER", "INFO").splitlines():
        name, _, value = line.partition(":")
        if name == "cluster_state":
            return value
    return "unknown"


def _own_problems(node: RedisServer, live_ports: set[int]) -> Problems:
    """What ``node`` says is wrong from where it stands: the cluster's state, its replication."""
    problems = []
    state = _cluster_state(node)
    if state != "ok":
        problems.append(f"{address(node)} says cluster_state:{state}")
    replication = info(node, "replication")
    if replication.get("role") == "slave":
        master_port = int(replication.get("master_port", "0"))
        if master_port not in live_ports:
            problems.append(f"{address(node)} replicates 127.0.0.1:{master_port}, which is down")
        elif replication.get("master_link_status") != "up":
            problems.append(f"{address(node)}: its link to its master is not up yet")
    return problems


def _disagreements(views: dict[int, list[_Peer]], live_ports: set[int]) -> Problems:
    """Where the live nodes' views (``CLUSTER NODES``, by port of the node asked) differ from
    what each node says of itself, from each other, or from which nodes are alive."""
    return _peer_problems(views) + _slot_problems(views, live_ports)


def _peer_problems(views: dict[int, list[_Peer]]) -> Problems:
    """Where a node does not see another as a healthy peer in the role that one claims."""
    claimed_roles = {
        port: "master" if "master" in _myself_in(view).flags else "slave"
        for port, view in views.items()
    }
    problems = []
    for port, view in views.items():
        seen = {peer.port: peer for peer in view}
        for other, claimed_role in claimed_roles.items():
            if other == port:
                continue
            peer = seen.get(other)
            if peer is None:
                problems.append(f"127.0.0.1:{port} does not know 127.0.0.1:{other}")
            elif peer.flags & _UNHEALTHY_FLAGS or not peer.connected:
                flags = ",".join(sorted(peer.flags))
                link = "connected" if peer.connected else "disconnected"
                problems.append(f"127.0.0.1:{port} sees 127.0.0.1:{other} as {flags}, {link}")
            elif claimed_role not in peer.flags:
                problems.append(
                    f"127.0.0.1:{port} does not see 127.0.0.1:{other} as {claimed_role} yet"
                )
    return problems


def _slot_problems(views: dict[int, list[_Peer]], live_ports: set[int]) -> Problems:
    """Whether every node gives every slot to the same master, and that master is alive."""
    slot_maps = {port: _slot_map(view) for port, view in views.items()}
    if len(set(slot_maps.values())) > 1:
        described = "; ".join(
            f"127.0.0.1:{port} says {_describe_slots(slot_map)}"
            for port, slot_map in slot_maps.items()
        )
        return [f"the nodes disagree on who serves the slots: {described}"]
    agreed: frozenset[tuple[int, int, int]] = next(iter(slot_maps.values()), frozenset())
    return [
        f"slots {first}-{last} go to 127.0.0.1:{owner}, which is down"
        for first, last, owner in sorted(agreed)
        if owner not in live_ports
    ]


def _slot_map(view: list[_Peer]) -> frozenset[tuple[int, int, int]]:
    return frozenset((first, last, peer.port) for peer in view for first, last in peer.slots)


def _describe_slots(slot_map: Iterable[tuple[int, int, int]]) -> str:
    return ", ".join(f"{first}-{last}@{port}" for first, last, port in sorted(slot_map))


def _listed(ports: Iterable[int]) -> str:
    return ", ".join(f"127.0.0.1:{port}" for port in sorted(ports))
