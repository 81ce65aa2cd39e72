"""How the demo's parent process and its worker processes talk, for both parts of the demo.

A worker is the package run as ``python -m redicache_async.demo --worker JSON`` (or
``--builder-worker JSON``): the JSON is its configuration, and it reports each step as one JSON
line on its stdout (:func:`say`). The parent starts workers (:func:`start_worker`), reads their
lines through a :class:`Worker` handle, drives them through Redis lists and signals, and in the
end reaps them (:func:`reap`) and deletes the demo's keys (:func:`drop_namespace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

__all__ = [
    "IDLE_SECONDS",
    "POLL_SECONDS",
    "DemoError",
    "DemoKey",
    "DemoKeySet",
    "Worker",
    "drop_namespace",
    "gather_lines",
    "reap",
    "run_worker",
    "say",
    "start_worker",
]

#: The module a worker process runs (the package's ``__main__``).
WORKER_MODULE = "redicache_async.demo"
#: How often a watching worker looks at its local layer (asyncio rounds it up to ~1 ms).
POLL_SECONDS = 0.0005
#: Longest a worker waits for a command before giving up (so an orphan never lingers).
IDLE_SECONDS = 60.0


@dataclass(frozen=True)
class DemoKeySet:
    """The keys one run of a demo part uses, all under its own namespace; a part names them as
    :class:`DemoKey` attributes of a subclass."""

    namespace: str


class DemoKey:
    """A plain Redis key of the demo's own, ``<namespace>:<name>``, as an attribute of a
    :class:`DemoKeySet`: ``go = DemoKey("demo:go")``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, keys: DemoKeySet, owner: type | None = None) -> str:
        return f"{keys.namespace}:{self.name}"


class DemoError(Exception):
    """The demo could not run (a worker died or a step timed out)."""


# -- worker side ----------------------------------------------------------------------------


def say(**fields: Any) -> None:
    """Report one step to the parent: one JSON line on stdout."""
    print(json.dumps(fields), flush=True)


def run_worker(
    what: str,
    body: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
    config_json: str,
) -> int:
    """A worker process's life: ``body(config)``; exit status 1 (said on stderr) on a
    :class:`DemoError`, else 0."""
    config = json.loads(config_json)
    try:
        asyncio.run(body(config))
    except DemoError as exc:
        print(f"{what} {config.get('index')}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- parent side ----------------------------------------------------------------------------


class Worker:
    """The parent's handle on one worker process: its index, its process, its lines."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.pid = process.pid

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line of this worker, which must be ``event``."""
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise DemoError(
                f"worker {self.index} (pid {self.pid}) said nothing for {timeout:g} s"
            ) from None
        if not raw:
            code = await self.process.wait()
            raise DemoError(f"worker {self.index} (pid {self.pid}) exited with status {code}")
        line: dict[str, Any] = json.loads(raw)
        if line.get("event") != event:
            raise DemoError(f"worker {self.index} said {line!r}, expected {event!r}")
        return line


async def start_worker(flag: str, index: int, config: dict[str, Any]) -> Worker:
    """Start ``python -m redicache_async.demo FLAG JSON``, its stdout piped to the parent."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        WORKER_MODULE,
        flag,
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
    )
    return Worker(index, process)


async def gather_lines(workers: Sequence[Worker], event: str, timeout: float) -> list[Any]:
    """The next line of every worker, each of which must be ``event``."""
    return list(await asyncio.gather(*(w.expect(event, timeout) for w in workers)))


async def reap(procs: Sequence[Worker], *, graceful: bool) -> bool:
    """Wait for every worker to exit: they do after 'quit'; when the demo failed before
    sending it (or a worker does not exit within moments), kill them. True if all exited 0."""
    clean = True
    for w in procs:
        if graceful:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.process.wait(), 5.0)
        if w.process.returncode is None:
            w.process.kill()
            await w.process.wait()
            clean = False  # killed here: it did not finish its part
        elif w.process.returncode != 0:
            clean = False
            print(f"worker {w.index} exited with status {w.process.returncode}", file=sys.stderr)
    return clean


async def drop_namespace(r: aioredis.Redis, namespace: str) -> None:
    """Delete every key of ``namespace`` (the demo's and the cache's), then close ``r``."""
    try:
        async for key in r.scan_iter(match=f"{namespace}:*"):
            await r.delete(key)
    finally:
        await r.aclose()
