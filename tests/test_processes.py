"""Real separate processes sharing one Redis: one fetch among all of them, takeover after a
crash, fencing of a holder that was frozen past its lease."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient

from .helpers import wait_until
from .values import stored_payload

WORKER = Path(__file__).with_name("worker.py")

pytestmark = pytest.mark.slow


class Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float = 20.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, f"worker {self.process.pid} exited with {await self.process.wait()}"
        result: dict[str, Any] = json.loads(raw)
        return result


SpawnWorker = Callable[[str, dict[str, Any]], Coroutine[Any, Any, Worker]]


@pytest.fixture
async def spawn(redis_url: str, namespace: str) -> AsyncIterator[SpawnWorker]:
    workers: list[Worker] = []

    async def start(mode: str, args: dict[str, Any]) -> Worker:
        args = {"url": redis_url, "namespace": namespace, **args}
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), mode, json.dumps(args), stdout=asyncio.subprocess.PIPE
        )
        worker = Worker(process)
        workers.append(worker)
        assert (await worker.line())["ready"]
        return worker

    yield start
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.kill()
        await worker.process.wait()


async def test_cold_key_is_fetched_once_across_processes(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str
) -> None:
    counter, go = f"{namespace}:test:fetches", f"{namespace}:test:go"
    args = {"key": "report", "counter": counter, "go": go, "callers": 50, "fetch_seconds": 0.3}
    workers = [await spawn("stampede", args) for _ in range(4)]
    await redis.rpush(go, *range(len(workers)))
    reports = [await w.line() for w in workers]
    assert int(await redis.get(counter) or 0) == 1
    assert sum(r["fetches"] for r in reports) == 1
    assert len({v for r in reports for v in r["values"]}) == 1
    assert all(r["answered"] == 50 for r in reports)
    assert sum(r["lock_waits"] for r in reports) == 3


@pytest.mark.parametrize("removal", ["invalidate_tags", "clear"])
async def test_an_invalidation_by_tag_or_a_clear_reaches_every_process(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str, removal: str
) -> None:
    keys = ["user:1", "page"]
    async with CacheClient(redis, namespace=namespace) as cache:
        await cache.set("user:1", "ada", tags=("users",))
        await cache.set("page", "home", tags=("pages",))
        asks = [f"{namespace}:test:ask:{i}" for i in range(2)]
        workers = [await spawn("watch", {"keys": keys, "ask": ask}) for ask in asks]

        async def answers(i: int) -> dict[str, Any]:
            await redis.rpush(asks[i], "look")
            return await workers[i].line()

        for i in range(len(workers)):
            assert (await answers(i))["local"] == {"user:1": "ada", "page": "home"}
        if removal == "clear":
            await cache.clear()
            gone = keys
        else:
            await cache.invalidate_tags("users")
            gone = ["user:1"]
        for i in range(len(workers)):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            answer = await answers(i)
            while any(answer["local"][key] is not None for key in gone):
                assert loop.time() < deadline, f"worker {i} still holds {answer['local']}"
                answer = await answers(i)
            assert all(answer["read"][key] is None for key in gone)
            if removal != "clear":
                assert answer["local"]["page"] == answer["read"]["page"] == "home"
            await redis.rpush(asks[i], "stop")


async def test_eager_refresh_across_processes_refreshes_one_at_a_time_and_nobody_misses(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str
) -> None:
    """Three processes read one hot key with ``eager_refresh=0.5`` under steady traffic: the
    value is refreshed again and again, one fetch at a time across all of them (the lock
    decides who), and no call ever finds it gone (none waits for a fetch)."""
    log, counter, go = (f"{namespace}:test:{name}" for name in ("log", "fetches", "go"))
    ttl = 2.0
    args = {
        "key": "hot",
        "log": log,
        "counter": counter,
        "go": go,
        "ttl": ttl,
        "fraction": 0.5,
        "fetch_seconds": 0.2,
        "seconds": 4.0,
        "pace": 0.01,
    }
    workers = [await spawn("eager", args) for _ in range(3)]
    # Seeded once every worker is ready, just before they start: starting three interpreters
    # can take longer than the value lives on a busy machine, and then the first call of each
    # would rightly find it gone.
    async with CacheClient(redis, namespace=namespace) as cache:

        async def seed() -> dict[str, int]:
            return {"n": 0}

        await cache.get_or_init("hot", seed, ttl)
    await redis.rpush(go, *range(len(workers)))
    reports = [await w.line(timeout=60.0) for w in workers]
    assert all(r["misses"] == 0 for r in reports)  # nobody found the value gone
    assert all(r["lock_waits"] == 0 for r in reports)
    events = [json.loads(raw) for raw in await redis.lrange(log, 0, -1)]
    fetches = int(await redis.get(counter) or 0)
    assert fetches >= 2  # refreshed, again and again
    # One fetch at a time across the processes: each start comes after the previous end.
    events.sort(key=lambda event: event[2])
    kinds = [kind for kind, _, _ in events]
    assert kinds[: 2 * fetches] == ["start", "end"] * fetches
    for report in reports:
        assert report["seen"] == sorted(report["seen"])  # never back in time
        assert report["seen"][-1] >= 1  # each process read refreshed values


async def test_lock_holder_killed_mid_fetch_is_taken_over_after_its_lease(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str
) -> None:
    # killed long before its first renewal (a third of lock_ttl after the claim)
    holder = await _start_holder(spawn, redis, namespace, fetch_seconds=3600, lock_ttl=1.0)
    holder.process.send_signal(signal.SIGKILL)
    await holder.process.wait()
    # its lease outlives it, but not for longer than lock_ttl: it was claimed with an expiry
    assert 0 < await redis.pttl(f"{namespace}:lock:{{k}}") <= 1000
    async with CacheClient(redis, namespace=namespace) as cache:

        async def fetch() -> str:
            return "taken over"

        assert await cache.get_or_init("k", fetch) == "taken over"
        stats = cache.stats()
        assert (stats.lock_waits, stats.fetches, stats.lock_wait_timeouts) == (1, 1, 0)


async def test_frozen_holder_that_lost_its_lease_cannot_overwrite_its_successor(
    spawn: SpawnWorker, redis: aioredis.Redis, namespace: str
) -> None:
    holder = await _start_holder(spawn, redis, namespace, fetch_seconds=0.5, lock_ttl=0.3)
    holder.process.send_signal(signal.SIGSTOP)  # a long GC pause, a VM freeze
    try:
        lock = f"{namespace}:lock:{{k}}"
        await wait_until(lambda: _gone(redis, lock), what="the frozen holder's lease to expire")
        async with CacheClient(redis, namespace=namespace) as successor:

            async def fetch() -> str:
                return "successor"

            assert await successor.attempt_regeneration("k", fetch) == "successor"
    finally:
        holder.process.send_signal(signal.SIGCONT)
    report = await holder.line()
    assert report == {"value": "late", "fenced_writes": 1, "fetches": 1}
    assert await stored_payload(redis, f"{namespace}:v:{{k}}") == b'"successor"'


async def _start_holder(
    spawn: SpawnWorker,
    redis: aioredis.Redis,
    namespace: str,
    *,
    fetch_seconds: float,
    lock_ttl: float,
) -> Worker:
    """A worker process that holds the lock of key "k", once its fetch has begun."""
    started = f"{namespace}:test:started"
    args = {"fetch_seconds": fetch_seconds, "options": {"lock_ttl": lock_ttl}}
    holder = await spawn("hold", {"key": "k", "started": started, **args})
    await wait_until(lambda: _exists(redis, started), what="the holder's fetch to start")
    return holder


async def _exists(redis: aioredis.Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)
