"""What the nodes of a Redis Cluster say of it (``CLUSTER NODES``, ``CLUSTER INFO``, ``INFO
replication``), and where their words show it is not whole yet."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._control import Problems, ReplyError, address, ask_text, info
from .server import RedisServer

__all__ = ["Peer", "myself", "myself_in", "peers", "strangers", "whole_cluster_problems"]

# Flags that say one node does not (yet, or any more) trust another as a working peer.
_UNHEALTHY_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class Peer:
    """One line of ``CLUSTER NODES``: what the asked node believes about a node."""

    port: int
    flags: frozenset[str]
    config_epoch: int
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, line: str) -> Peer:
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


def peers(node: RedisServer) -> list[Peer]:
    return [Peer.parse(line) for line in ask_text(node, "CLUSTER", "NODES").splitlines()]


def myself_in(view: list[Peer]) -> Peer:
    return next(peer for peer in view if "myself" in peer.flags)


def myself(node: RedisServer) -> Peer:
    """What ``node`` says of itself: its role, its slots, its config epoch."""
    return myself_in(peers(node))


def strangers(nodes: Sequence[RedisServer]) -> Problems:
    """Nodes that do not yet know (past the handshake) every other node."""
    problems = []
    everyone = {node.port for node in nodes}
    for node in nodes:
        try:
            known = {p.port for p in peers(node) if not p.flags & {"handshake", "noaddr"}}
        except (OSError, ReplyError, ValueError) as error:
            problems.append(f"{address(node)} does not answer CLUSTER NODES: {error}")
            continue
        if everyone - known:
            problems.append(f"{address(node)} does not know {_listed(everyone - known)}")
    return problems


def whole_cluster_problems(live: Sequence[RedisServer]) -> Problems:
    """What keeps the ``live`` nodes from being a whole cluster: each says the cluster is ok,
    knows every other as a healthy peer in the role that one claims, and agrees with the
    others on which live master serves each slot; each replica's link to its master is up."""
    live_ports = {node.port for node in live}
    problems: Problems = []
    views: dict[int, list[Peer]] = {}
    for node in live:
        try:
            problems += _own_problems(node, live_ports)
            views[node.port] = peers(node)
        except (OSError, ReplyError, ValueError) as error:
            problems.append(f"{address(node)} does not answer: {error}")
    return problems + _disagreements(views, live_ports)


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


def _disagreements(views: dict[int, list[Peer]], live_ports: set[int]) -> Problems:
    """Where the live nodes' views (``CLUSTER NODES``, by port of the node asked) differ from
    what each node says of itself, from each other, or from which nodes are alive."""
    return _peer_problems(views) + _slot_problems(views, live_ports)


def _peer_problems(views: dict[int, list[Peer]]) -> Problems:
    """Where a node does not see another as a healthy peer in the role that one claims."""
    claimed_roles = {
        port: "master" if "master" in myself_in(view).flags else "slave"
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


def _slot_problems(views: dict[int, list[Peer]], live_ports: set[int]) -> Problems:
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


def _slot_map(view: list[Peer]) -> frozenset[tuple[int, int, int]]:
    return frozenset((first, last, peer.port) for peer in view for first, last in peer.slots)


def _describe_slots(slot_map: Iterable[tuple[int, int, int]]) -> str:
    return ", ".join(f"{first}-{last}@{port}" for first, last, port in sorted(slot_map))


def _listed(ports: Iterable[int]) -> str:
    return ", ".join(f"127.0.0.1:{port}" for port in sorted(ports))
