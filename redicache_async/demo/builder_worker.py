"""A worker process of the demo's second part (``--builder-worker JSON``): one CacheBuilder.

Each builder process runs a :class:`~redicache_async.CacheBuilder` with the same registration
(:data:`BUILDER_NAME`: a list and a hash target of :data:`BUILDER_ITEMS` items, rebuilt every
:data:`BUILDER_INTERVAL` seconds under a lease of :data:`BUILDER_LEASE_TTL` seconds), until the
parent SIGTERMs it; then it reports whether it led and how many builds it made. Every item
carries its build's number (counted across all processes) and the builder's pid, so a reader
can tell builds apart. :class:`BuilderKeys` names the registration's keys in Redis.
"""

from __future__ import annotations

import asyncio
import os
import time
from signal import SIGTERM
from typing import Any

import redis.asyncio as aioredis

from redicache_async.builder import CacheBuilder
from redicache_async.keys import KeySpace
from redicache_async.targets import Target

from .processes import IDLE_SECONDS, DemoError, DemoKey, DemoKeySet, run_worker, say

__all__ = [
    "BUILDER_INTERVAL",
    "BUILDER_ITEMS",
    "BUILDER_LEASE_TTL",
    "BUILDER_NAME",
    "BuilderKeys",
    "builder_worker_main",
]

BUILDER_NAME = "sampleCacheName"
BUILDER_PROCESSES = 3
BUILDER_ITEMS = 300
BUILDER_INTERVAL = 0.5
BUILDER_LEASE_TTL = 1.5


class BuilderKeys(DemoKeySet):
    """The registration's targets, its state and lease (the library's names), and a counter."""

    list_target = DemoKey("sample-key-list")
    hash_target = DemoKey("sample-key-hash")
    build_counter = DemoKey("demo:builds")

    @property
    def state(self) -> str:
        return KeySpace(self.namespace).state(BUILDER_NAME)

    @property
    def lease(self) -> str:
        return KeySpace(self.namespace).lease(BUILDER_NAME)

    def targets(self) -> list[Target]:
        return [Target(self.list_target, "list"), Target(self.hash_target, "hash", id_field="id")]


def _build_items(build: int, pid: int) -> list[dict[str, Any]]:
    """One build's items: every value carries the build number and the builder's pid."""
    return [
        {"id": i, "name": f"item-{i}", "price": i * 0.5 + build, "build": build, "by": pid}
        for i in range(BUILDER_ITEMS)
    ]


async def _builder_worker(config: dict[str, Any]) -> None:
    keys = BuilderKeys(config["namespace"])
    pid = os.getpid()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(SIGTERM, stop.set)
    r = aioredis.Redis.from_url(config["url"])
    try:
        async with CacheBuilder(
            r, namespace=keys.namespace, lease_ttl=BUILDER_LEASE_TTL
        ) as builder:

            async def fetch() -> list[dict[str, Any]]:
                # A number per build across all processes, so readers can tell builds apart.
                return _build_items(int(await r.incr(keys.build_counter)), pid)

            await builder.register(
                fetch,
                targets=keys.targets(),
                refresh_interval=BUILDER_INTERVAL,
                name=BUILDER_NAME,
            )
            say(event="ready", pid=pid, instance=builder.instance_id)
            try:
                await asyncio.wait_for(stop.wait(), IDLE_SECONDS)
            except TimeoutError:
                raise DemoError("no SIGTERM from the parent") from None
            status = builder.status(BUILDER_NAME)
            closing = time.monotonic()
        say(
            event="stopped",
            leading=status.is_leader,
            builds=status.builds,
            failures=status.failures,
            close_ms=(time.monotonic() - closing) * 1000,
        )
    finally:
        await r.aclose()


def builder_worker_main(config_json: str) -> int:
    """The ``--builder-worker JSON`` process: its exit status."""
    return run_worker("demo builder", _builder_worker, config_json)
