"""One command to one server on a fresh plain socket, and its RESP2 reply as Python values.

The one small client of this package: servers' readiness checks and the multi-server set-ups'
launchers both use it. A launcher has to see what a node said, and a node that is down is a
fact to report, not a connection to retry: a full client, with its own retries, connection
handshake and reply reshaping, would hide both.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import BinaryIO, TypeAlias

__all__ = ["Reply", "ReplyError", "ask", "encode"]

Reply: TypeAlias = str | int | list["Reply"] | None


class ReplyError(Exception):
    """The server answered with an error reply (``-ERR ...``, ``-NOGOODSLAVE ...``)."""


def encode(*parts: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def ask(
    host: str,
    port: int,
    *command: str | int,
    timeout: float,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """The reply to one command (after ``AUTH`` if ``password``), on a fresh connection to
    ``host:port`` (wrapped in ``tls`` if given).

    Raises ``OSError`` when the server cannot be reached (``TimeoutError`` when it does not
    answer in ``timeout`` seconds, ``ssl.SSLError`` when the handshake fails),
    :class:`ReplyError` for an error reply (to ``AUTH`` too), ``ValueError`` for something
    that is not RESP2.
    """
    request = encode(*(str(part).encode() for part in command))
    if password is not None:
        request = encode(b"AUTH", password.encode()) + request
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
        reader = stack.enter_context(sock.makefile("rb"))
        sock.sendall(request)
        if password is not None:
            read_reply(reader)
        return read_reply(reader)


def read_reply(reader: BinaryIO) -> Reply:
    """One RESP2 reply from ``reader`` (errors raised as :class:`ReplyError`)."""
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
        return None if count < 0 else [read_reply(reader) for _ in range(count)]
    raise ValueError(f"not a RESP2 reply: {line!r}")
