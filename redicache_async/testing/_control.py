"""What the multi-server set-ups share: their lifecycle, one command to one node, and waiting
for them to settle.

Commands go through :mod:`.resp`, the one small client of this package: a launcher has to see
what a node said, not a client's retries.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import NamedTuple, Self, TypeAlias

from . import resp
from ._lifecycle import Startable
from .binaries import find_server_binary
from .resp import Reply, ReplyError
from .server import RedisServer

__all__ = [
    "Failover",
    "Problems",
    "Reply",
    "ReplyError",
    "ServerGroup",
    "address",
    "as_fields",
    "ask",
    "ask_list",
    "ask_text",
    "info",
    "ports",
    "role",
    "wait_until",
]

#: What a set-up still lacks before it is the shape it should be; empty when it is.
Problems: TypeAlias = list[str]

_ASK_TIMEOUT = 1.0
_POLL_INTERVAL = 0.02


class Failover(NamedTuple):
    """The outcome of a failover a test caused: who took over, and how long until the set-up
    had settled again (from the kill, or the failover command, to the last check passing)."""

    new_master: RedisServer
    seconds: float


class ServerGroup(Startable):
    """Server processes started together as one set-up, and stopped together.

    :meth:`start` runs :meth:`_launch` once; if that fails, or is interrupted, everything it
    started is stopped again before the error goes on.
    """

    def __init__(self, binary: str | None, **counts: tuple[int, int]) -> None:
        """``counts``: how many of each kind of process, as ``(count, minimum)``."""
        if any(count < minimum for count, minimum in counts.values()):
            need = " and ".join(f"{name} >= {minimum}" for name, (_, minimum) in counts.items())
            given = ", ".join(str(count) for count, _ in counts.values())
            raise ValueError(f"need {need}, not {given}")
        self.binary = binary or find_server_binary()
        self._started = False

    @abstractmethod
    def _launch(self) -> None:
        """Start the processes and return once the set-up is the shape it should be."""

    @abstractmethod
    def _stop_order(self) -> Iterable[RedisServer]:
        """Every process, in the order they should be stopped."""

    def start(self) -> Self:
        if self._started:
            raise RuntimeError(f"{self!r} is already started")
        self._started = True
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process and remove its directory. Idempotent."""
        for server in self._stop_order():
            server.stop()
        self._started = False

    def _state(self) -> str:
        return "started" if self._started else "stopped"


def address(node: RedisServer) -> str:
    return f"{node.host}:{node.port}"


def ports(servers: Iterable[RedisServer]) -> str:
    return ", ".join(str(server.port) for server in servers)


def ask(node: RedisServer, *command: str | int, timeout: float = _ASK_TIMEOUT) -> Reply:
    """The reply to one command, on a fresh connection to ``node`` (see :func:`.resp.ask`)."""
    return resp.ask(node.host, node.port, *command, timeout=timeout)


def ask_text(node: RedisServer, *command: str | int) -> str:
    """A command whose reply is text (a bulk or status string)."""
    reply = ask(node, *command)
    if not isinstance(reply, str):
        raise ValueError(f"{command[0]} on {address(node)}: expected text, got {reply!r}")
    return reply


def ask_list(node: RedisServer, *command: str | int) -> list[Reply]:
    reply = ask(node, *command)
    if not isinstance(reply, list):
        raise ValueError(f"{command[0]} on {address(node)}: expected a list, got {reply!r}")
    return reply


def as_fields(reply: Reply) -> dict[str, str]:
    """A flat ``[name, value, name, value, ...]`` reply (``SENTINEL MASTER``) as a dict."""
    if not isinstance(reply, list) or len(reply) % 2:
        raise ValueError(f"expected name/value pairs, got {reply!r}")
    return {str(name): str(value) for name, value in zip(reply[::2], reply[1::2], strict=True)}


def info(node: RedisServer, section: str) -> dict[str, str]:
    """One ``INFO`` section as ``{field: value}``."""
    fields = {}
    for line in ask_text(node, "INFO", section).splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value
    return fields


def role(node: RedisServer) -> tuple[str, int | None]:
    """``("master", None)``, ``("replica", port of its master)`` or ``("sentinel", None)``,
    as the node itself says (``ROLE``)."""
    reply = ask_list(node, "ROLE")
    kind = str(reply[0])
    if kind == "slave":
        return "replica", int(str(reply[2]))
    return kind, None


def wait_until(
    problems: Callable[[], Problems],
    *,
    timeout: float,
    error: type[Exception],
    what: str,
) -> float:
    """Seconds until ``problems()`` comes back empty, checked every 20 ms.

    After ``timeout`` seconds, raises ``error`` naming ``what`` was awaited and the problems
    seen last, which is what a reader of a failed test needs to know.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        found = problems()
        now = time.monotonic()
        if not found:
            return now - started
        if now > deadline:
            listed = "\n".join(f"  - {problem}" for problem in found)
            raise error(f"{what}: not reached within {timeout:g} s; still missing:\n{listed}")
        time.sleep(_POLL_INTERVAL)
