"""Free TCP ports on 127.0.0.1 for servers (and a cluster node's bus, at port + 10000)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["HOST", "free_port", "port_is_free"]

#: Every server here listens on loopback only.
HOST = "127.0.0.1"
# The cluster bus listens on port + 10000 unless --cluster-port says otherwise.
_MAX_PORT = 55535
_MIN_PORT = 10000


def _ephemeral_port_floor() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    """Whether nothing is bound to ``port`` on 127.0.0.1 at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to, below 55535.

    Ports are drawn below the kernel's ephemeral range when there is room (so that neither the
    port nor port + 10000, a cluster node's bus, is handed out to some outgoing connection in the
    meantime); otherwise the kernel picks one. Another process may still take it before it is
    used: :meth:`RedisServer.start` retries with a new port when it chose the port itself.
    """
    top = min(_ephemeral_port_floor() - 10000, _MAX_PORT)
    if top - _MIN_PORT >= 1000:
        for _ in range(200):
            port = random.randrange(_MIN_PORT, top)
            if port_is_free(port):
                return port
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port < _MAX_PORT:
            return port
    raise RuntimeError(f"no free TCP port below {_MAX_PORT} on {HOST}")
