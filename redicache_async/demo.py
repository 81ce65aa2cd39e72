"""``python -m redicache_async demo``: the mission, shown on real processes and a real server.

Several worker processes, each with its own :class:`~redicache_async.CacheClient`, wait for one
start signal and then ask for the same cold key from many coroutines at once: one fetch runs in
the whole group. Then one process regenerates the key, and every other process reports when its
local layer let go of the old value and served the new one. Every figure printed is measured.

Workers are this module run as ``python -m redicache_async.demo --worker JSON``; the parent
drives them through Redis lists and reads one JSON line per step from their stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .client import CacheClient

__all__ = ["add_arguments", "main", "run_demo"]

KEY = "report"
#: How often a watching worker looks at its local layer (asyncio rounds it up to ~1 ms).
POLL_SECONDS = 0.0005
#: Longest a worker waits for a command before giving up (so an orphan never lingers).
IDLE_SECONDS = 60.0


class DemoError(Exception):
    """The demo could not run (a worker died or a step timed out)."""


@dataclass(frozen=True)
class DemoKeys:
    """The plain Redis keys the demo uses to coordinate, beside the cache's own keys."""

    namespace: str

    @property
    def go(self) -> str:
        return f"{self.namespace}:demo:go"

    @property
    def fetches(self) -> str:
        return f"{self.namespace}:demo:fetches"

    @property
    def regen_fetches(self) -> str:
        return f"{self.namespace}:demo:regen-fetches"

    def commands(self, index: int) -> str:
        return f"{self.namespace}:demo:cmd:{index}"


# -- worker side ----------------------------------------------------------------------------


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _worker(config: dict[str, Any]) -> None:
    index: int = config["index"]
    fetch_seconds: float = config["fetch_seconds"]
    keys = DemoKeys(config["namespace"])
    pid = os.getpid()
    r = aioredis.Redis.from_url(config["url"])
    try:
        async with CacheClient(r, namespace=keys.namespace) as cache:

            async def slow_fetch() -> dict[str, Any]:
                await r.incr(keys.fetches)
                await asyncio.sleep(fetch_seconds)
                return {"generation": 1, "fetched_by": index, "pid": pid}

            _say(event="ready", pid=pid)
            if await r.blpop([keys.go], timeout=IDLE_SECONDS) is None:
                raise DemoError("no start signal")
            woke = time.time()

            async def caller() -> tuple[float, Any]:
                value = await cache.get_or_init(KEY, slow_fetch, ttl=None)
                return time.time(), value

            answers = await asyncio.gather(*(caller() for _ in range(config["callers"])))
            values = sorted({json.dumps(value, sort_keys=True) for _, value in answers})
            _say(
                event="stampede",
                woke=woke,
                answered_at=[at for at, _ in answers],
                values=values,
                fetches=cache.stats().fetches,
            )
            await _serve_commands(r, cache, keys, index, fetch_seconds)
    finally:
        await r.aclose()


async def _serve_commands(
    r: aioredis.Redis, cache: CacheClient, keys: DemoKeys, index: int, fetch_seconds: float
) -> None:
    while True:
        reply = await r.blpop([keys.commands(index)], timeout=IDLE_SECONDS)
        if reply is None:
            raise DemoError("no command from the parent")
        command = json.loads(reply[1])["op"]
        if command == "watch":
            await _watch(cache)
        elif command == "regenerate":
            await _regenerate(r, cache, keys, index, fetch_seconds)
        elif command == "quit":
            _say(event="stats", **_stats_fields(cache))
            return


async def _watch(cache: CacheClient) -> None:
    """Read the key in a loop until the new generation shows; report when things happened."""
    first = await cache.get(KEY)
    base = cache.stats()
    _say(event="watching", generation=_generation(first))
    invalidated_at: float | None = None
    at_invalidation = base
    seen_at: float | None = None
    polls = old_served = none_served = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    started = time.time()
    while loop.time() < deadline:
        stats = cache.stats()
        if invalidated_at is None and stats.invalidations_received > base.invalidations_received:
            invalidated_at = time.time()
            at_invalidation = stats
        value = await cache.get(KEY)
        polls += 1
        generation = _generation(value)
        if generation is None:
            none_served += 1
        elif generation >= 2:
            seen_at = time.time()
            break
        else:
            old_served += 1
        await asyncio.sleep(POLL_SECONDS)
    _say(
        event="watched",
        invalidated_at=invalidated_at,
        seen_at=seen_at,
        poll_interval=(time.time() - started) / max(polls, 1),
        old_served=old_served,
        none_served=none_served,
        # Where the old value came from until the invalidation arrived.
        local_before=at_invalidation.local_hits - base.local_hits,
        redis_before=at_invalidation.redis_hits - base.redis_hits,
    )


async def _regenerate(
    r: aioredis.Redis, cache: CacheClient, keys: DemoKeys, index: int, fetch_seconds: float
) -> None:
    fetched_at: list[float] = []

    async def new_report() -> dict[str, Any]:
        await r.incr(keys.regen_fetches)
        await asyncio.sleep(fetch_seconds)
        fetched_at.append(time.time())
        return {"generation": 2, "fetched_by": index, "pid": os.getpid()}

    started = time.time()
    value = await cache.attempt_regeneration(KEY, new_report, ttl=None)
    returned = time.time()
    _say(
        event="regenerated",
        started=started,
        fetched_at=fetched_at[0] if fetched_at else None,
        returned=returned,
        generation=_generation(value),
    )


def _generation(value: Any) -> int | None:
    return value.get("generation") if isinstance(value, dict) else None


def _stats_fields(cache: CacheClient) -> dict[str, int]:
    s = cache.stats()
    return {
        "local_hits": s.local_hits,
        "redis_hits": s.redis_hits,
        "fetches": s.fetches,
        "lock_waits": s.lock_waits,
        "invalidations_received": s.invalidations_received,
    }


def worker_main(config_json: str) -> int:
    config = json.loads(config_json)
    try:
        asyncio.run(_worker(config))
    except DemoError as exc:
        print(f"demo worker {config.get('index')}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- parent side ----------------------------------------------------------------------------


class Worker:
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


async def _gather_lines(workers: Sequence[Worker], event: str, timeout: float) -> list[Any]:
    return list(await asyncio.gather(*(w.expect(event, timeout) for w in workers)))


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _spread(values_ms: Sequence[float]) -> str:
    if not values_ms:
        return "n/a"
    return (
        f"min {min(values_ms):.1f} ms · median {statistics.median(values_ms):.1f} ms · "
        f"max {max(values_ms):.1f} ms"
    )


async def run_demo(
    url: str,
    *,
    workers: int,
    callers: int,
    fetch_seconds: float,
    started_server: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    """Run the demo against ``url``; print its report; 0 when everything held, else 1."""
    begun = time.monotonic()
    keys = DemoKeys(f"demo-{uuid.uuid4().hex[:8]}")
    r = aioredis.Redis.from_url(url)
    procs: list[Worker] = []
    graceful = False
    try:
        info = await r.info("server")
        engine = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version", "?")
        label = f"{engine} {version} at {url}" + (
            " (started for the demo)" if started_server else ""
        )
        for index in range(workers):
            config = {
                "url": url,
                "namespace": keys.namespace,
                "index": index,
                "callers": callers,
                "fetch_seconds": fetch_seconds,
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "redicache_async.demo",
                "--worker",
                json.dumps(config),
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(Worker(index, process))
        await _gather_lines(procs, "ready", 30.0)
        total = workers * callers
        out(f"redicache_async demo · {workers} processes x {callers} callers · {label}")
        status = await _steps(r, keys, procs, total, fetch_seconds, begun, out)
        graceful = True
    finally:
        clean = await _reap(procs, graceful=graceful)
        try:
            async for key in r.scan_iter(match=f"{keys.namespace}:*"):
                await r.delete(key)
        finally:
            await r.aclose()
    if not clean:
        out("FAILED: a worker process exited with an error (see above)")
        return 1
    return status


async def _steps(
    r: aioredis.Redis,
    keys: DemoKeys,
    procs: Sequence[Worker],
    total: int,
    fetch_seconds: float,
    begun: float,
    out: Callable[[str], None],
) -> int:
    problems: list[str] = []

    # 1. The stampede.
    out("")
    out(f'1. Cold key "{KEY}": all {total} callers at once; the fetch takes {fetch_seconds:g} s')
    signal = time.time()
    await r.rpush(keys.go, *["go"] * len(procs))
    stampede = await _gather_lines(procs, "stampede", 30.0 + 3 * fetch_seconds)
    counted = int(await r.get(keys.fetches) or 0)
    fetchers = [(w, line["fetches"]) for w, line in zip(procs, stampede, strict=True)]
    fetched_in = [f"worker {w.index} (pid {w.pid})" for w, n in fetchers if n]
    values = {v for line in stampede for v in line["values"]}
    waits = [(at - signal) * 1000 for line in stampede for at in line["answered_at"]]
    woke = [(line["woke"] - signal) * 1000 for line in stampede]
    out(f"   fetches run: {counted} (counted in Redis), in {', '.join(fetched_in) or 'none'}")
    out(f"   the start signal reached all {len(procs)} processes within {max(woke):.1f} ms")
    out(f"   caller waits from the start signal: {_spread(waits)}")
    same = len(values) == 1 and len(waits) == total
    out(f"   every caller got the same value: {'yes' if same else 'NO'} ({len(waits)} answers)")
    if counted != 1 or sum(n for _, n in fetchers) != 1:
        problems.append(f"{counted} fetches ran, expected 1")
    if not same:
        problems.append(f"{len(values)} different values in {len(waits)} answers")

    # 2. A regeneration, and how fast the other local layers follow.
    writer = next((w for w, n in fetchers if not n), procs[-1])
    watchers = [w for w in procs if w is not writer]
    out("")
    out(
        f'2. Worker {writer.index} (pid {writer.pid}) calls attempt_regeneration("{KEY}"); '
        f"its fetch takes {fetch_seconds:g} s"
    )
    for w in watchers:
        await r.rpush(keys.commands(w.index), json.dumps({"op": "watch"}))
    ready = await _gather_lines(watchers, "watching", 10.0)
    if any(line["generation"] != 1 for line in ready):
        problems.append("a process did not hold the first value before the regeneration")
    await r.rpush(keys.commands(writer.index), json.dumps({"op": "regenerate"}))
    regen = await writer.expect("regenerated", 30.0 + 3 * fetch_seconds)
    watched = await _gather_lines(watchers, "watched", 40.0)
    regen_fetches = int(await r.get(keys.regen_fetches) or 0)
    fetched_at = regen["fetched_at"]
    if regen["generation"] != 2 or fetched_at is None or regen_fetches != 1:
        problems.append(f"the regeneration did not run once ({regen_fetches} fetches)")
        fetched_at = regen["returned"]
    old = sum(line["old_served"] for line in watched)
    from_local = sum(line["local_before"] for line in watched)
    from_redis = sum(line["redis_before"] for line in watched)
    nones = sum(line["none_served"] for line in watched)
    out(
        f"   meanwhile the other {len(watchers)} processes served the old value {old} times "
        f"({from_local} local hits, {from_redis} Redis reads, {nones} misses)"
    )
    invalidated = [
        (line["invalidated_at"] - fetched_at) * 1000
        for line in watched
        if line["invalidated_at"] is not None
    ]
    seen = [(line["seen_at"] - fetched_at) * 1000 for line in watched if line["seen_at"]]
    out("   after the new value's fetch returned (the write is the next Redis call):")
    out(f"     invalidation received by the others: {_spread(invalidated)}")
    out(f"     new value served by the others:      {_spread(seen)}")
    poll_ms = statistics.mean(line["poll_interval"] for line in watched) * 1000
    out(
        f"     (each process checked every {poll_ms:.1f} ms on average; "
        f"attempt_regeneration returned after {(regen['returned'] - fetched_at) * 1000:.1f} ms)"
    )
    if len(seen) != len(watchers):
        problems.append(f"{len(watchers) - len(seen)} processes never saw the new value")
    if nones:
        problems.append(f"the key read as missing {nones} times during the regeneration")

    # 3. Every worker's counters.
    for w in procs:
        await r.rpush(keys.commands(w.index), json.dumps({"op": "quit"}))
    final = await _gather_lines(procs, "stats", 10.0)
    out("")
    out("3. Stats per process (counts include step 2: its reads and the regeneration's fetch)")
    columns = [
        ("local hits", "local_hits"),
        ("redis hits", "redis_hits"),
        ("fetches", "fetches"),
        ("lock waits", "lock_waits"),
        ("invalidations rcvd", "invalidations_received"),
    ]
    out("   worker  pid      " + "  ".join(title for title, _ in columns))
    for w, line in zip(procs, final, strict=True):
        cells = "  ".join(f"{line[name]:>{len(title)}}" for title, name in columns)
        out(f"   {w.index:<6}  {w.pid:<7}  {cells}")

    out("")
    took = time.monotonic() - begun
    if problems:
        out(f"FAILED: {'; '.join(problems)} (demo took {took:.1f} s)")
        return 1
    out(
        f"OK: 1 fetch for {total} callers in {len(procs)} processes; the new value reached "
        f"the {_plural(len(watchers), 'other process', 'other processes')} within "
        f"{max(seen):.1f} ms (demo took {took:.1f} s)"
    )
    return 0


async def _reap(procs: Sequence[Worker], *, graceful: bool) -> bool:
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


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="processes (default 4, min 2)")
    parser.add_argument(
        "--callers", type=int, default=50, help="coroutines per process (default 50)"
    )
    parser.add_argument(
        "--fetch-seconds", type=float, default=0.5, help="how long a fetch takes (default 0.5)"
    )
    parser.add_argument("--url", help="use this Redis instead of starting a server for the demo")


def main(args: argparse.Namespace) -> int:
    if args.workers < 2 or args.callers < 1 or not 0 <= args.fetch_seconds <= 60:
        print(
            "error: need --workers >= 2, --callers >= 1 and 0 <= --fetch-seconds <= 60",
            file=sys.stderr,
        )
        return 2
    options: dict[str, Any] = {
        "workers": args.workers,
        "callers": args.callers,
        "fetch_seconds": args.fetch_seconds,
    }
    try:
        if args.url:
            return asyncio.run(run_demo(args.url, **options))
        from .testing import RedisServer

        with RedisServer() as server:
            return asyncio.run(run_demo(server.url, started_server=True, **options))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redicache_async.demo")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    return main(args)


if __name__ == "__main__":
    sys.exit(_cli())
