"""A master, its replicas and the Sentinels watching them, as real server processes on
127.0.0.1, and the failovers a test causes."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal, overload

from ._control import (
    Failover,
    Problems,
    Reply,
    ReplyError,
    ServerGroup,
    address,
    as_fields,
    ask,
    ask_list,
    info,
    ports,
    role,
    wait_until,
)
from .server import RedisServer, ServerStartError

__all__ = ["SentinelServers"]

# A master that has not answered for this long is subjectively down; once a quorum agrees, the
# failover starts. 1 s (the default is 30 s) puts a killed master's replacement in place in a
# few seconds, and no node on loopback is silent for a whole second unless a test made it so.
_DOWN_AFTER_MS = 1000
# A Sentinel waits twice this before trying again after a failover attempt that failed (a split
# vote, say), and gives a promotion or the replicas' reconfiguration this long. 3 s (the
# default is 3 min) lets a test see a retry, while leaving a slow CI machine ample time for
# each step.
_FAILOVER_TIMEOUT_MS = 3000
# Sentinel's own timers, shortened for tests (SENTINEL DEBUG; not settable in its config).
# Every 2 s (PUBLISH-PERIOD) a Sentinel announces itself and its view on the master's hello
# channel: how the Sentinels find each other and learn a new master. A master that a failover
# left running is made a replica once it has reported itself master for 4 such periods, and
# is asked for INFO only every 10 s (INFO-PERIOD): after SENTINEL FAILOVER, the old master
# stayed a writable master for ~10 s. At 0.5 s and 1 s, the same steps take ~2 s.
_SENTINEL_TIMERS = ("PUBLISH-PERIOD", 500, "INFO-PERIOD", 1000)
_START_TIMEOUT = 30.0
_SETTLE_TIMEOUT = 30.0
# Flags a Sentinel shows for an instance it trusts as working.
_MASTER_UP = frozenset({"master"})
_REPLICA_UP = frozenset({"slave"})
_SENTINEL_UP = frozenset({"sentinel"})
# Only remembers another Sentinel's vote on a master (the one just failed over), for 5 s after
# the vote: not a fault of that Sentinel.
_STALE_VOTE = frozenset({"master_down"})


class SentinelServers(ServerGroup):
    """A master with ``replicas`` replicas, watched by ``sentinels`` Sentinels.

    Every process is a :class:`RedisServer`: :attr:`nodes` are the data nodes (the first
    one is the master at the start), :attr:`sentinels` the Sentinels, which monitor the master
    as :attr:`master_name` with a quorum of a majority of them.

    :meth:`start` returns once the set-up is settled, as :meth:`wait_master` and the failover
    helpers also wait for it to be: every Sentinel names the same master, which says it is one;
    every other live data node replicates it with its link up and no sync in progress; and
    every Sentinel sees the master and those replicas as up, and every other live Sentinel.
    It raises :class:`ServerStartError` if a process does not start or the set-up does not
    settle within 30 s (saying what was missing); everything is stopped again then.

    Failures are detected fast (``down_after_ms``, ``failover_timeout_ms``) and the Sentinels'
    own announce and INFO timers are shortened at start (``SENTINEL DEBUG``; a Sentinel a test
    restarts runs with the default ones again), so a failover settles in ~3 s. A data node
    that a test kills stays dead; ``node.start()`` then :meth:`wait_master` brings it back,
    as a replica once the Sentinels have reconfigured it.
    """

    nodes: tuple[RedisServer, ...]
    sentinels: tuple[RedisServer, ...]

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        master_name: str = "mymaster",
        binary: str | None = None,
        down_after_ms: int = _DOWN_AFTER_MS,
        failover_timeout_ms: int = _FAILOVER_TIMEOUT_MS,
    ) -> None:
        super().__init__(binary, replicas=(replicas, 0), sentinels=(sentinels, 1))
        self.master_name = master_name
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # Any data node may become the master, and then a (re)joining replica should not wait
        # the default 5 s for others to sync from the same RDB.
        self._node_args = ("--repl-diskless-sync-delay", "0")
        self.nodes = tuple(
            RedisServer(binary=self.binary, extra_args=self._node_args) for _ in range(1 + replicas)
        )
        # Their config names the master's port, so is written at start.
        self.sentinels = tuple(
            RedisServer(binary=self.binary, extra_args=["--sentinel"]) for _ in range(sentinels)
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _launch(self) -> None:
        master, *replicas = self.nodes
        master.start()
        for replica in replicas:
            # Its master's port is final only now that the master has started.
            replica.extra_args = (
                *self._node_args,
                "--replicaof",
                master.host,
                str(master.port),
            )
            replica.start()
        # Replicas first: a Sentinel learns of them from the master's INFO, which it asks
        # at once when it connects but then only every 10 s.
        wait_until(
            lambda: self._replication_problems(master),
            timeout=_START_TIMEOUT,
            error=ServerStartError,
            what=f"every replica of {address(master)} in sync",
        )
        for sentinel in self.sentinels:
            sentinel.config = self._sentinel_config(master)
            sentinel.start()
            ask(sentinel, "SENTINEL", "DEBUG", *_SENTINEL_TIMERS)
        self._wait_settled(
            timeout=_START_TIMEOUT,
            error=ServerStartError,
            what=f"the Sentinels ({self._sentinel_ports()}) all seeing {address(master)}",
        )

    def _sentinel_config(self, master: RedisServer) -> str:
        # A file the Sentinel rewrites as it learns (replicas, other Sentinels, failovers).
        name = self.master_name
        return (
            f"sentinel monitor {name} {master.host} {master.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def _stop_order(self) -> Iterable[RedisServer]:
        # Sentinels first, so that they start no failover; then the replicas of the start, as
        # a master stopping before its replicas waits up to 1 s for them to acknowledge its
        # last writes.
        return (*self.sentinels, *reversed(self.nodes))

    # -- where things are ------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel, as ``redis.asyncio.Sentinel(...)`` takes them."""
        return [(sentinel.host, sentinel.port) for sentinel in self.sentinels]

    def master(self) -> RedisServer:
        """The data node that a live Sentinel (the first that answers) names as the master."""
        errors = []
        for sentinel in self._live_sentinels():
            try:
                return self._named_master(sentinel)
            except (OSError, ReplyError, ValueError, LookupError) as error:
                errors.append(f"{address(sentinel)}: {error}")
        raise LookupError(f"no Sentinel names a master for {self.master_name!r}: {errors}")

    def replicas(self) -> list[RedisServer]:
        """The live data nodes that say they are replicas."""
        found = []
        for node in self.nodes:
            if node.running:
                try:
                    if role(node)[0] == "replica":
                        found.append(node)
                except (OSError, ReplyError, ValueError):
                    continue
        return found

    # -- failures --------------------------------------------------------------------------

    @overload
    def failover(self, *, wait: Literal[True] = ..., timeout: float = ...) -> Failover: ...

    @overload
    def failover(self, *, wait: Literal[False], timeout: float = ...) -> None: ...

    def failover(self, *, wait: bool = True, timeout: float = _SETTLE_TIMEOUT) -> Failover | None:
        """Ask a Sentinel to fail over now (``SENTINEL FAILOVER``, no agreement needed); with
        ``wait``, return the new master and the seconds until the set-up has settled on it,
        the old master included, now one of its replicas.

        Raises ``RuntimeError`` with the Sentinel's reason if it refuses (no replica fit to
        promote, a failover already in progress), ``TimeoutError`` if the set-up has not
        settled after ``timeout`` seconds.
        """
        old_master = self.master()
        sentinel = self._live_sentinels()[0]
        started = time.monotonic()
        try:
            ask(sentinel, "SENTINEL", "FAILOVER", self.master_name)
        except ReplyError as error:
            raise RuntimeError(f"{address(sentinel)} refused to fail over: {error}") from error
        if not wait:
            return None
        return self._wait_for_successor(old_master, started, timeout)

    @overload
    def kill_master(self, *, wait: Literal[True] = ..., timeout: float = ...) -> Failover: ...

    @overload
    def kill_master(self, *, wait: Literal[False], timeout: float = ...) -> None: ...

    def kill_master(
        self, *, wait: bool = True, timeout: float = _SETTLE_TIMEOUT
    ) -> Failover | None:
        """SIGKILL the master; with ``wait``, return the replica the Sentinels promoted and the
        seconds from the kill until the set-up has settled on it.

        Raises ``ValueError`` (with ``wait``) if no live replica could take over,
        ``TimeoutError`` if the set-up has not settled after ``timeout`` seconds.
        """
        old_master = self.master()
        if wait and not any(node.running for node in self.nodes if node is not old_master):
            raise ValueError(f"{address(old_master)} has no live replica to take over")
        started = time.monotonic()
        old_master.kill()
        if not wait:
            return None
        return self._wait_for_successor(old_master, started, timeout)

    def wait_master(self, timeout: float = _SETTLE_TIMEOUT) -> RedisServer:
        """The master, once the set-up has settled on one (see the class); ``TimeoutError``
        saying what is still missing after ``timeout`` seconds."""
        return self._wait_settled(
            timeout=timeout, error=TimeoutError, what="the Sentinel set-up settled"
        )

    def _wait_for_successor(
        self, old_master: RedisServer, started: float, timeout: float
    ) -> Failover:
        new_master = self._wait_settled(
            timeout=timeout,
            error=TimeoutError,
            what=f"the Sentinels settled on a master other than {address(old_master)}",
            not_master=old_master,
        )
        return Failover(new_master, time.monotonic() - started)

    # -- checks ----------------------------------------------------------------------------

    def _wait_settled(
        self,
        *,
        timeout: float,
        error: type[Exception],
        what: str,
        not_master: RedisServer | None = None,
    ) -> RedisServer:
        settled_on: list[RedisServer] = []

        def problems() -> Problems:
            master, found = self._survey()
            if master is not None and master is not_master:
                found.append(f"the Sentinels still name {address(master)}")
            settled_on[:] = [master] if master is not None else []
            return found

        wait_until(problems, timeout=timeout, error=error, what=what)
        return settled_on[0]

    def _survey(self) -> tuple[RedisServer | None, Problems]:
        """The master every live Sentinel names (``None`` if they do not agree), and what
        keeps the set-up from being settled on it."""
        sentinels = self._live_sentinels()
        named: dict[int, RedisServer] = {}
        problems: Problems = []
        for sentinel in sentinels:
            try:
                named[sentinel.port] = self._named_master(sentinel)
            except (OSError, ReplyError, ValueError, LookupError) as error:
                problems.append(f"{address(sentinel)} names no master: {error}")
        if len({node.port for node in named.values()}) != 1:
            described = ", ".join(f"{port} -> {node.port}" for port, node in named.items())
            return None, [*problems, f"the Sentinels do not agree on the master: {described}"]
        master = next(iter(named.values()))
        problems += self._replication_problems(master)
        for sentinel in sentinels:
            try:
                problems += self._view_problems(sentinel, master, sentinels)
            except (OSError, ReplyError, ValueError) as error:
                problems.append(f"{address(sentinel)} does not answer: {error}")
        return master, problems

    def _replication_problems(self, master: RedisServer) -> Problems:
        """Whether ``master`` says it is one and every other live data node replicates it."""
        problems = []
        for node in self.nodes:
            if not node.running:
                continue
            try:
                replication = info(node, "replication")
            except (OSError, ReplyError, ValueError) as error:
                problems.append(f"{address(node)} does not answer: {error}")
                continue
            if node is master:
                if replication.get("role") != "master":
                    problems.append(f"{address(node)}, named master, says it is a replica")
            elif replication.get("role") != "slave":
                problems.append(f"{address(node)} is not a replica yet")
            elif int(replication.get("master_port", "0")) != master.port:
                problems.append(f"{address(node)} does not replicate {address(master)} yet")
            elif replication.get("master_link_status") != "up":
                problems.append(f"{address(node)}: link to {address(master)} not up yet")
            elif replication.get("master_sync_in_progress") != "0":
                problems.append(f"{address(node)} is still syncing from {address(master)}")
        return problems

    def _view_problems(
        self, sentinel: RedisServer, master: RedisServer, sentinels: list[RedisServer]
    ) -> Problems:
        """What ``sentinel`` does not (yet) see as up: the master, a live replica, a live
        Sentinel."""
        name = self.master_name
        problems = []
        master_flags = _flags(as_fields(ask(sentinel, "SENTINEL", "MASTER", name)))
        if master_flags != _MASTER_UP:
            problems.append(_seen_as(sentinel, master, master_flags))
        replica_flags = _flags_by_port(ask_list(sentinel, "SENTINEL", "REPLICAS", name))
        for node in self.nodes:
            flags = replica_flags.get(node.port, frozenset())
            if node is not master and node.running and flags != _REPLICA_UP:
                problems.append(_seen_as(sentinel, node, flags))
        sentinel_flags = _flags_by_port(ask_list(sentinel, "SENTINEL", "SENTINELS", name))
        for other in sentinels:
            flags = sentinel_flags.get(other.port, frozenset())
            if other is not sentinel and flags - _STALE_VOTE != _SENTINEL_UP:
                problems.append(_seen_as(sentinel, other, flags))
        return problems

    # -- helpers ---------------------------------------------------------------------------

    def _named_master(self, sentinel: RedisServer) -> RedisServer:
        reply = ask_list(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        port = int(str(reply[1]))
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"{address(sentinel)} names 127.0.0.1:{port}, not a node of ours")

    def _live_sentinels(self) -> list[RedisServer]:
        return [sentinel for sentinel in self.sentinels if sentinel.running]

    def _sentinel_ports(self) -> str:
        return ports(self.sentinels)

    def __repr__(self) -> str:
        return (
            f"<SentinelServers {self.master_name!r} nodes on ports {ports(self.nodes)}, "
            f"Sentinels on ports {self._sentinel_ports()} {self._state()}>"
        )


def _seen_as(sentinel: RedisServer, server: RedisServer, flags: frozenset[str]) -> str:
    described = ",".join(sorted(flags)) or "unknown"
    return f"{address(sentinel)} sees {address(server)} as {described}"


def _flags(fields: dict[str, str]) -> frozenset[str]:
    return frozenset(flag for flag in fields.get("flags", "").split(",") if flag)


def _flags_by_port(records: list[Reply]) -> dict[int, frozenset[str]]:
    """``SENTINEL REPLICAS`` or ``SENTINEL SENTINELS``: each instance's flags, by port."""
    fields = [as_fields(record) for record in records]
    return {int(instance["port"]): _flags(instance) for instance in fields}
