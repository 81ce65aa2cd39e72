"""One Redis/Valkey server process on 127.0.0.1, owned by this Python process.

:class:`RedisServer` is the building block of this package (its docstring says how to use it);
:class:`ServerTLS` makes one speak TLS only. Servers still running when the interpreter exits are
stopped here, for the multi-server set-ups too, since every process they run is a
:class:`RedisServer`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

from . import resp
from ._lifecycle import Startable
from .binaries import find_cli_binary, find_server_binary, server_version
from .ports import HOST, free_port

__all__ = ["RedisServer", "ServerStartError", "ServerTLS"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 3
_LOG_NAME = "server.log"
_CONFIG_NAME = "redis.conf"


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer PING, while starting."""


@dataclass(frozen=True)
class ServerTLS:
    """PEM files that make a :class:`RedisServer` speak TLS only (see the package docstring).

    ``cert_file`` is the server's certificate (its chain may follow it), ``key_file`` its
    private key, and ``ca_file`` the CA that signed it: the server names it as its trust store
    (``--tls-ca-cert-file``, required by the server) and the readiness check verifies the
    server's certificate, including that it is valid for 127.0.0.1, against it.
    """

    cert_file: str | os.PathLike[str]
    key_file: str | os.PathLike[str]
    ca_file: str | os.PathLike[str]

    def args(self, port: int) -> list[str]:
        """The server's options: TLS on ``port``, plain TCP off, no client certificates."""
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            os.fspath(self.cert_file),
            "--tls-key-file",
            os.fspath(self.key_file),
            "--tls-ca-cert-file",
            os.fspath(self.ca_file),
            "--tls-auth-clients",
            "no",
        ]

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts ``ca_file`` (and checks the host name)."""
        return ssl.create_default_context(cafile=os.fspath(self.ca_file))


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


_live_servers: set[RedisServer] = set()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        if server._owner_pid == os.getpid():  # not in a forked child: the servers are not its
            with contextlib.suppress(Exception):
                server.stop()


class RedisServer(Startable):
    """One redis-server/valkey-server process on 127.0.0.1, owned by this Python process.

    ``port=None`` picks a free port when the object is made (so :attr:`url` is known before
    :meth:`start`); the port then never changes, across :meth:`restart`, :meth:`kill` and
    :meth:`start`. The server keeps no data on disk (``--save "" --appendonly no``) and runs in
    a temporary directory that :meth:`stop` removes; :meth:`kill` and :meth:`restart` keep it,
    so files a node wrote there (a cluster's ``nodes-P.conf``, a Sentinel's config) survive.

    ``extra_args`` are appended to the command line (later options win over earlier ones).
    ``config``, if given, is written to ``redis.conf`` in the server's directory (once: the
    server may rewrite it, as Sentinel does) and passed as the first argument. ``tls`` makes
    the server TLS-only on :attr:`port` (see :class:`ServerTLS`).
    """

    host: str
    port: int
    binary: str

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        config: str | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        self.binary = binary or find_server_binary()
        self.host = HOST
        self._port_chosen = port is None
        self.port = free_port() if port is None else port
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.password = password
        self.config = config
        self.tls = tls
        self._tls_context: ssl.SSLContext | None = None  # made when first needed
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._paused = False
        self._version: str | None = None
        self._owner_pid = os.getpid()

    # -- introspection ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:P/0`` (``rediss://`` with TLS), with ``:password@`` when the
        server has one."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id while the server runs (paused included), else ``None``."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process exists and has not exited (a paused server is running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def directory(self) -> Path | None:
        """The server's ``--dir`` (log, config, cluster files); ``None`` when stopped."""
        return self._directory

    @property
    def log_path(self) -> Path | None:
        return None if self._directory is None else self._directory / _LOG_NAME

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log."""
        return "(no log)" if self.log_path is None else _tail(self.log_path, lines)

    def version(self) -> str:
        """Engine and version from ``<binary> --version``, e.g. ``"valkey 8.1.8"``."""
        if self._version is None:
            self._version = server_version(self.binary)
        return self._version

    def cli_binary(self) -> str:
        """``valkey-cli``/``redis-cli`` matching this server's binary."""
        return find_cli_binary(self.binary)

    def command(self) -> list[str]:
        """The command line :meth:`start` runs (the directory must exist)."""
        if self._directory is None:
            raise RuntimeError("the server has no directory yet: start() it")
        args = [self.binary]
        if self.config is not None:
            args.append(str(self._directory / _CONFIG_NAME))
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += self.tls.args(self.port)
        args += ["--bind", self.host]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        args += ["--dir", str(self._directory)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += self.extra_args
        return args

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING within ``timeout`` seconds."""
        try:
            return self._ask("PING", timeout=timeout) == "PONG"
        except (OSError, ValueError, resp.ReplyError):
            return False

    def _ask(self, *command: str, timeout: float) -> resp.Reply:
        return resp.ask(
            self.host,
            self.port,
            *command,
            timeout=timeout,
            password=self.password,
            tls=self._client_tls(),
        )

    def _pid_answering(self) -> int | None:
        """``process_id`` of the server answering on the port, if one does."""
        try:
            info = self._ask("INFO", "server", timeout=0.5)
        except (OSError, ValueError, resp.ReplyError):
            return None
        match = re.search(r"^process_id:(\d+)", str(info), re.MULTILINE)
        return int(match[1]) if match else None

    def _client_tls(self) -> ssl.SSLContext | None:
        if self.tls is not None and self._tls_context is None:
            self._tls_context = self.tls.client_context()
        return self._tls_context

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn the server and return once it answers (within ~10 s).

        Raises :class:`ServerStartError`, with the tail of the server's log, when the process
        exits or does not answer in time. A port this object picked itself that turns out to
        be taken is replaced by another free one, before the first successful start only.
        """
        if self.running:
            raise RuntimeError(f"server already running on port {self.port} (pid {self.pid})")
        fresh_directory = self._directory is None
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix=f"redicache-server-{self.port}-"))
        if self.config is not None and not (self._directory / _CONFIG_NAME).exists():
            (self._directory / _CONFIG_NAME).write_text(self.config)
        self._owner_pid = os.getpid()
        _live_servers.add(self)
        try:
            for attempt in range(_PORT_ATTEMPTS):
                try:
                    self._spawn_and_wait()
                except ServerStartError as error:
                    port_taken = "already in use" in str(error).lower()
                    if not (port_taken and self._port_chosen and attempt + 1 < _PORT_ATTEMPTS):
                        raise
                    self.port = free_port()
                else:
                    break
        except BaseException:  # ServerStartError, or e.g. KeyboardInterrupt while waiting
            self._end_process(graceful=False)
            if fresh_directory:
                self._remove_directory()
                _live_servers.discard(self)
            raise
        self._port_chosen = False
        return self

    def _spawn_and_wait(self) -> None:
        command = self.command()
        assert self.log_path is not None
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._paused = False
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.002
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise ServerStartError(self._failure(f"exited with status {code}", command))
            # Ready when *this* process answers (not some other server already on the port).
            if self._pid_answering() == self._process.pid:
                return
            if time.monotonic() > deadline:
                self._end_process(graceful=False)
                raise ServerStartError(
                    self._failure(f"did not answer PING within {_START_TIMEOUT:g} s", command)
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _failure(self, what: str, command: list[str]) -> str:
        return (
            f"{os.path.basename(self.binary)} on port {self.port} {what}\n"
            f"command: {subprocess.list2cmdline(command)}\n"
            f"log ({self.log_path}):\n{self.log_tail()}"
        )

    def _end_process(self, *, graceful: bool) -> None:
        """SIGKILL the process, or (``graceful``) SIGTERM it and SIGKILL it only if it is
        still there after 5 s; then reap it."""
        process = self._process
        if process is None:
            return
        if graceful and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
                process.send_signal(signal.SIGCONT)  # a paused server acts on SIGTERM once woken
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_TIMEOUT)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        process.wait()
        self._process = None
        self._paused = False

    def _remove_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def stop(self) -> None:
        """Shut down (SIGTERM; SIGKILL after 5 s) and remove the directory. Idempotent."""
        self._end_process(graceful=True)
        self._remove_directory()
        _live_servers.discard(self)

    def kill(self) -> None:
        """SIGKILL the server and reap it, as a crash would; :meth:`start` brings it back."""
        self._end_process(graceful=False)

    def restart(self, *, graceful: bool = False) -> None:
        """Kill (``graceful``: SIGTERM) and start again on the same port and directory."""
        self._end_process(graceful=graceful)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered until :meth:`resume`."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or not self.running:
            raise RuntimeError(f"server on port {self.port} is not running")
        self._process.send_signal(signum)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {os.path.basename(self.binary)} {self.host}:{self.port} {state}>"
