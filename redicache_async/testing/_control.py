"""What the multi-server set-ups share: one command to one node, and waiting for them to settle.

Commands go over a fresh plain socket, as :class:`~.server.RedisServer`'s readiness check does,
and RESP2 replies come back as plain Python values, not interpreted. A launcher has to see what
a node said, and a node that is down is a fact to report, not a connection to retry: a full
client, with its own retries, connection handshake and reply reshaping, would hide both.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import BinaryIO, NamedTuple, TypeAlias

from .server import RedisServer, _encode

Reply: TypeAlias = str | int | list["Reply"] | None
#: What a set-up still lacks before it is the shape it should be; empty when it is.
Problems: TypeAlias = list[str]

_ASK_TIMEOUT = 1.0
_POLL_INTERVAL = 0.02


class ReplyError(Exception):
    """The node answered with an error reply (``-ERR ...``, ``-NOGOODSLAVE ...``)."""


class Failover(NamedTuple):
    """The outcome of a failover a test caused: who took over, and how long until the set-up
    had settled again (from the kill, or the failover command, to the last check passing)."""

    new_master: RedisServer
    seconds: float


def address(node: RedisServer) -> str:
    return f"{node.host}:{node.port}"


def ask(node: RedisServer, *command: str | int, timeout: float = _ASK_TIMEOUT) -> Reply:
    """The reply to one command, on a fresh connection to ``node``.

    Raises ``OSError`` when the node cannot be reached (``TimeoutError`` when it does not
    answer in ``timeout`` seconds), :class:`ReplyError` for an error reply, ``ValueError``
    for something that is not RESP2.
    """
    request = _encode(*(str(part).encode() for part in command))
    with (
        socket.create_connection((node.host, node.port), timeout=timeout) as connection,
        connection.makefile("rb") as reader,
    ):
        connection.sendall(request)
        return _read_reply(reader)


def _read_reply(reader: BinaryIO) -> Reply:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by the server")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise ReplyError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        length = int(body)
        return None if length < 0 else reader.read(length + 2)[:-2].decode()
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise ValueError(f"not a RESP2 reply: {line!r}")


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
