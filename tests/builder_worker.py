"""A builder process for the multi-process builder tests: ``python tests/builder_worker.py JSON``.

It opens a :class:`CacheBuilder` on ``url``/``namespace`` and registers ``name`` with a list
target and a hash target (``id_field="id"``). Each fetch runs a script that INCRs ``counter`` and
appends ``"<pid> <fetch number> <server seconds> <microseconds> <monotonic>"`` to ``log``, so
the test can tell how many fetches ran, in which process and when. It returns ``items`` items
``{"id": "id<i>", "value": "value<i>-b<n>", "build": n, "pid": pid}`` (``n``: that fetch
number), so successive builds differ.

Optional arguments: ``gate`` (this process's first fetch waits for an element pushed on that
list, so a test can freeze it mid-fetch), ``fetch_delay`` (seconds each fetch sleeps),
``freeze_before_swap`` (a key: the first build writes its lease token and epoch there and then
stops this process with SIGSTOP right before its fenced swap; a test hook, the only place this
worker reaches into the library).

It prints JSON lines on stdout: ``ready`` once registered, ``log`` for each record of the
library's logger, ``status`` on SIGUSR1, and on SIGTERM ``closing`` (the status before closing)
then ``closed`` once the builder is closed; it then exits 0. The worker installs these signal
handlers; the library installs none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import redis.asyncio as aioredis

import redicache_async.builder.refresh as builder_module
from redicache_async import CacheBuilder, Target
from redicache_async.target_swap import swap as real_swap

# KEYS[1]: fetch counter, KEYS[2]: fetch log. ARGV[1]: pid, ARGV[2]: monotonic time of the
# fetch's start. Returns the fetch number.
_LOG_FETCH = """
local n = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. n .. ' ' .. t[1] .. ' ' .. t[2] .. ' ' .. ARGV[2])
return n
"""


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class _Forward(logging.Handler):
    """Prints each record of the library's logger as a ``log`` line."""

    def emit(self, record: logging.LogRecord) -> None:
        say(event="log", level=record.levelname, message=record.getMessage())


def _status(builder: CacheBuilder, name: str) -> dict[str, Any]:
    return dataclasses.asdict(builder.status(name))


def _freeze_before_first_swap(r: aioredis.Redis, marker: str) -> None:
    pending = True

    async def swap(*args: Any, **kwargs: Any) -> None:
        nonlocal pending
        if pending:
            pending = False
            await r.set(marker, json.dumps({"token": kwargs["token"], "epoch": kwargs["epoch"]}))
            os.kill(os.getpid(), signal.SIGSTOP)  # resumes here on SIGCONT
        await real_swap(*args, **kwargs)

    # The builder calls the ``swap`` it imported from ``target_swap``: replace that name.
    if vars(builder_module).get("swap") is not real_swap:
        raise RuntimeError(
            "redicache_async.builder.refresh no longer calls target_swap.swap: update this hook"
        )
    vars(builder_module)["swap"] = swap


async def main() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    a: dict[str, Any] = json.loads(sys.argv[1])
    logger = logging.getLogger("redicache_async")
    logger.addHandler(_Forward())
    logger.setLevel(logging.INFO)
    pid = os.getpid()
    r = aioredis.Redis.from_url(a["url"])
    log_fetch = r.register_script(_LOG_FETCH)
    gate: str | None = a.get("gate")
    fetches = 0

    async def fetch(items: int) -> list[dict[str, Any]]:
        nonlocal fetches
        started = time.monotonic()  # the library calls this at once when a build starts
        fetches += 1
        n = int(await log_fetch(keys=[a["counter"], a["log"]], args=[pid, repr(started)]))
        if gate is not None and fetches == 1:
            await r.blpop([gate], timeout=60)
        if a.get("fetch_delay"):
            await asyncio.sleep(a["fetch_delay"])
        return [
            {"id": f"id{i}", "value": f"value{i}-b{n}", "build": n, "pid": pid}
            for i in range(1, items + 1)
        ]

    if a.get("freeze_before_swap"):
        _freeze_before_first_swap(r, a["freeze_before_swap"])
    try:
        async with CacheBuilder(r, namespace=a["namespace"], lease_ttl=a["lease_ttl"]) as builder:
            name = await builder.register(
                fetch,
                targets=[
                    Target(a["list_key"], "list"),
                    Target(a["hash_key"], "hash", id_field="id"),
                ],
                refresh_interval=a["interval"],
                name=a["name"],
                kwargs={"items": a["items"]},
            )
            loop.add_signal_handler(
                signal.SIGUSR1,
                lambda: say(event="status", fetches=fetches, **_status(builder, name)),
            )
            say(event="ready", pid=pid, instance=builder.instance_id)
            await stop.wait()
            say(event="closing", fetches=fetches, **_status(builder, name))
            closing = time.monotonic()
        say(event="closed", seconds=time.monotonic() - closing)
    finally:
        await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
