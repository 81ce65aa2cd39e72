"""``python -m redicache_async demo``: the mission, shown on real processes and a real server.

Several worker processes, each with its own :class:`~redicache_async.CacheClient`, wait for one
start signal and then ask for the same cold key from many coroutines at once: one fetch runs in
the whole group. Then one process regenerates the key, and every other process reports when its
local layer let go of the old value and served the new one. Every figure printed is measured.

Then, on the same server, three processes each run a :class:`~redicache_async.CacheBuilder`
with the same registration (a list and a hash target). The demo finds the leader in the
registration's state in Redis, SIGKILLs it and times the takeover, SIGTERMs the next leader and
times the handover, while a reader in the demo process checks every read of both targets: one
whole build, never older than the previous read.

Workers are this module run as ``python -m redicache_async.demo --worker JSON`` (or
``--builder-worker JSON``); the parent drives them through Redis lists and signals, and reads one
JSON line per step from their stdout.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from signal import SIGTERM
from typing import Any

import redis.asyncio as aioredis

from .builder import CacheBuilder
from .client import CacheClient
from .keys import KeySpace
from .targets import Target

__all__ = ["add_arguments", "main", "run_builder_demo", "run_demo"]

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


# -- part 2: CacheBuilder ------------------------------------------------------------------
#
# Three builder processes register one registration; the parent finds the leader in the
# registration's state in Redis, SIGKILLs it, times the takeover, SIGTERMs the next leader,
# times the handover, and reads both targets the whole time.

BUILDER_NAME = "sampleCacheName"
BUILDER_PROCESSES = 3
BUILDER_ITEMS = 300
BUILDER_INTERVAL = 0.5
BUILDER_LEASE_TTL = 1.5
#: How long the parent lets the builders run between steps (a couple of builds each time).
BUILDER_PAUSE = 1.0
#: A takeover or a handover slower than this (after the lease expired) counts as none.
TAKEOVER_GRACE = 5.0


@dataclass(frozen=True)
class BuilderKeys:
    """The registration's targets, its state and lease (the library's names), and a counter."""

    namespace: str

    @property
    def list_target(self) -> str:
        return f"{self.namespace}:sample-key-list"

    @property
    def hash_target(self) -> str:
        return f"{self.namespace}:sample-key-hash"

    @property
    def build_counter(self) -> str:
        return f"{self.namespace}:demo:builds"

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
            _say(event="ready", pid=pid, instance=builder.instance_id)
            try:
                await asyncio.wait_for(stop.wait(), IDLE_SECONDS)
            except TimeoutError:
                raise DemoError("no SIGTERM from the parent") from None
            status = builder.status(BUILDER_NAME)
            closing = time.monotonic()
        _say(
            event="stopped",
            leading=status.is_leader,
            builds=status.builds,
            failures=status.failures,
            close_ms=(time.monotonic() - closing) * 1000,
        )
    finally:
        await r.aclose()


def builder_worker_main(config_json: str) -> int:
    config = json.loads(config_json)
    try:
        asyncio.run(_builder_worker(config))
    except DemoError as exc:
        print(f"demo builder {config.get('index')}: {exc}", file=sys.stderr)
        return 1
    return 0


def _json_items(raws: list[bytes]) -> Any:
    """The items of a raw LRANGE or HVALS reply (decoded in one go: it is faster)."""
    try:
        return json.loads(b"[" + b",".join(raws) + b"]")
    except ValueError:
        return None


def _check_build(items: Any, ordered: bool) -> tuple[int, int] | str:
    """``(build, pid)`` when ``items`` is one whole build, else what is wrong with it."""
    if items is None:
        return "not JSON"
    if not items:
        return "empty"
    if len(items) != BUILDER_ITEMS:
        return f"partial ({len(items)} of {BUILDER_ITEMS} items)"
    ids = [item["id"] for item in items]
    if (ids if ordered else sorted(ids)) != list(range(BUILDER_ITEMS)):
        return "wrong ids"
    builds = {(item["build"], item["by"]) for item in items}
    if len(builds) != 1:
        return f"items of {len(builds)} builds"
    return builds.pop()


class TargetReader:
    """Reads both targets in a loop, raw (one MULTI: LLEN, LRANGE, HLEN, HVALS) and through
    ``CacheClient.get_target``, and counts every read that was not one whole, newer-or-same
    build."""

    def __init__(self, r: aioredis.Redis, cache: CacheClient, keys: BuilderKeys) -> None:
        self._r = r
        self._cache = cache
        self._keys = keys
        self.raw_reads = 0
        self.client_reads = 0
        self.bad = 0
        self.problems: list[str] = []
        #: ``(monotonic time, build, pid)`` each time the raw reader saw a new build.
        self.builds: list[tuple[float, int, int]] = []
        self._stop = asyncio.Event()

    def _bad(self, what: str) -> None:
        self.bad += 1
        if len(self.problems) < 5:
            self.problems.append(what)

    async def _raw(self) -> None:
        last = 0
        keys = self._keys
        while not self._stop.is_set():
            try:
                async with self._r.pipeline(transaction=True) as pipe:
                    pipe.llen(keys.list_target)
                    pipe.lrange(keys.list_target, 0, -1)
                    pipe.hlen(keys.hash_target)
                    pipe.hvals(keys.hash_target)
                    llen, lrange, hlen, hvals = await pipe.execute()
            except Exception as exc:  # reported, not raised: the count is the result
                self._bad(f"raw read failed: {exc!r}")
                await asyncio.sleep(0.01)
                continue
            self.raw_reads += 1
            as_list = _check_build(_json_items(lrange), ordered=True)
            as_hash = _check_build(_json_items(hvals), ordered=False)
            if llen != BUILDER_ITEMS or hlen != BUILDER_ITEMS:
                self._bad(f"raw read: LLEN {llen}, HLEN {hlen}")
            elif isinstance(as_list, str) or isinstance(as_hash, str):
                self._bad(f"raw read: list {as_list}, hash {as_hash}")
            elif as_list != as_hash:
                self._bad(f"raw read: list of build {as_list[0]}, hash of build {as_hash[0]}")
            elif as_list[0] < last:
                self._bad(f"raw read: build {as_list[0]} after build {last}")
            elif as_list[0] > last:
                last = as_list[0]
                self.builds.append((time.monotonic(), *as_list))

    async def _client(self) -> None:
        last = {self._keys.list_target: 0, self._keys.hash_target: 0}
        while not self._stop.is_set():
            for key, last_build in last.items():
                try:
                    value = await self._cache.get_target(key)
                except Exception as exc:
                    self._bad(f"get_target({key!r}) failed: {exc!r}")
                    continue
                self.client_reads += 1
                if isinstance(value, dict):
                    value = list(value.values())
                found = (
                    "missing"
                    if value is None
                    else _check_build(value, ordered=key == self._keys.list_target)
                )
                if isinstance(found, str):
                    self._bad(f"get_target({key!r}): {found}")
                elif found[0] < last_build:
                    self._bad(f"get_target({key!r}): build {found[0]} after {last_build}")
                else:
                    last[key] = found[0]
            # Local hits do not yield to the loop: give the other tasks their turn.
            await asyncio.sleep(POLL_SECONDS)

    async def run(self) -> None:
        await asyncio.gather(self._raw(), self._client())

    def stop(self) -> None:
        self._stop.set()

    def first_build_after(self, since: float, pid: int) -> float | None:
        """When the raw reader first saw a build by ``pid`` made after ``since``."""
        return next((at for at, _, by in self.builds if at >= since and by == pid), None)


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pid_of(leader: bytes | str | None) -> int | None:
    """The pid in a leader id ``host:pid:random``."""
    if leader is None:
        return None
    parts = _text(leader).rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


async def _poll(
    check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.001
) -> Any:
    """The first truthy result of ``check()``, polled every ``interval``; None after timeout."""
    deadline = time.monotonic() + timeout
    task = asyncio.current_task()
    while True:
        result = await check()
        # On Python 3.11, asyncio.wait_for (which redis-py wraps every send in) can swallow a
        # cancellation, e.g. Ctrl-C's; Task.cancelling() still tells.
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        if result or time.monotonic() > deadline:
            return result or None
        await asyncio.sleep(interval)


async def run_builder_demo(url: str, *, out: Callable[[str], None] = print) -> int:
    """The CacheBuilder part: leadership, a SIGKILLed leader, a graceful handover, and a reader
    that never sees a gap. Prints its report; 0 when everything held, else 1."""
    begun = time.monotonic()
    keys = BuilderKeys(f"demo-{uuid.uuid4().hex[:8]}")
    r = aioredis.Redis.from_url(url)
    procs: list[Worker] = []
    reader_task: asyncio.Task[None] | None = None
    try:
        for index in range(BUILDER_PROCESSES):
            config = {"url": url, "namespace": keys.namespace, "index": index}
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "redicache_async.demo",
                "--builder-worker",
                json.dumps(config),
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(Worker(index, process))
        await _gather_lines(procs, "ready", 30.0)
        out(
            f'CacheBuilder · {len(procs)} processes register "{BUILDER_NAME}": a list and a '
            f"hash of {BUILDER_ITEMS} items, every {BUILDER_INTERVAL:g} s, "
            f"lease {BUILDER_LEASE_TTL:g} s"
        )
        async with CacheClient(r, namespace=keys.namespace) as cache:
            reader = TargetReader(r, cache, keys)

            async def first_build() -> bool:
                return bool(await r.exists(keys.list_target, keys.hash_target) == 2)

            if not await _poll(first_build, 15.0, 0.005):
                raise DemoError("no build landed within 15 s of the registrations")
            reader_task = asyncio.create_task(reader.run())
            status = await _builder_steps(r, keys, procs, reader, begun, out)
            reader.stop()
            await reader_task
    finally:
        if reader_task is not None and not reader_task.done():
            reader_task.cancel()
            with contextlib.suppress(BaseException):
                await reader_task
        for w in procs:
            if w.process.returncode is None:
                w.process.kill()
                await w.process.wait()
        try:
            async for key in r.scan_iter(match=f"{keys.namespace}:*"):
                await r.delete(key)
        finally:
            await r.aclose()
    return status


async def _builder_steps(
    r: aioredis.Redis,
    keys: BuilderKeys,
    procs: Sequence[Worker],
    reader: TargetReader,
    begun: float,
    out: Callable[[str], None],
) -> int:
    problems: list[str] = []
    by_pid = {w.pid: w for w in procs}

    async def leader() -> Worker | None:
        return by_pid.get(_pid_of(await r.hget(keys.state, "leader")) or 0)

    def name(w: Worker) -> str:
        return f"worker {w.index} (pid {w.pid})"

    # 4. Who leads.
    await asyncio.sleep(BUILDER_PAUSE)
    first = await leader()
    if first is None:
        raise DemoError("the registration's state names no leader among the workers")
    epoch = _text(await r.hget(keys.state, "epoch"))
    sample = _text(await r.hget(keys.hash_target, "7"))
    out("")
    own = {by for _, _, by in reader.builds}
    out(
        f"4. {name(first)} leads (epoch {epoch}); the reader has seen "
        f"{_plural(len(reader.builds), 'build', 'builds')} so far, "
        + ("all of them its own" if own == {first.pid} else f"by pids {sorted(own)}")
    )
    if own != {first.pid}:
        problems.append("builds by more than one process before the kill")
    out(f"   HGET {keys.hash_target} 7 -> {sample}")

    # 5. SIGKILL the leader: the lease runs out, a follower takes over.
    lease_left = await r.pttl(keys.lease) / 1000
    killed_at = time.monotonic()
    first.process.kill()
    await first.process.wait()
    out("")
    out(f"5. SIGKILL {name(first)}, the leader; its lease had {lease_left:.2f} s left")

    async def new_leader() -> Worker | None:
        current = await leader()
        return current if current is not None and current is not first else None

    second: Worker | None = await _poll(new_leader, BUILDER_LEASE_TTL + TAKEOVER_GRACE)
    elected_at = time.monotonic()
    if second is None:
        raise DemoError(f"no takeover within {BUILDER_LEASE_TTL + TAKEOVER_GRACE:g} s")

    async def built_by_second() -> float | None:
        assert second is not None
        return reader.first_build_after(killed_at, second.pid)

    served_at = await _poll(built_by_second, BUILDER_INTERVAL + TAKEOVER_GRACE)
    takeover = elected_at - killed_at
    out(
        f"   {name(second)} took over {takeover * 1000:.0f} ms after the kill "
        f"(the lease's expiry + {(takeover - lease_left) * 1000:.0f} ms)"
    )
    out(
        f"   its first build was served {(served_at - killed_at) * 1000:.0f} ms after the kill"
        if served_at is not None
        else "   NO build of it was served"
    )
    if served_at is None:
        problems.append("the new leader's builds were not served")
    if takeover > BUILDER_LEASE_TTL + 0.5:
        problems.append(f"the takeover took {takeover:.2f} s, longer than the lease")

    # 6. SIGTERM the new leader: it closes, releases its lease, the last one takes over.
    await asyncio.sleep(BUILDER_PAUSE)
    third = next(w for w in procs if w is not first and w is not second)
    if await leader() is not second:
        problems.append("the leader changed without a kill")
    stopped_at = time.monotonic()
    second.process.terminate()

    async def third_leads() -> bool:
        return await leader() is third

    handed_over = await _poll(third_leads, BUILDER_LEASE_TTL + TAKEOVER_GRACE)
    handover = time.monotonic() - stopped_at
    stopped = await second.expect("stopped", 10.0)
    code = await second.process.wait()

    async def built_by_third() -> float | None:
        return reader.first_build_after(stopped_at, third.pid)

    served_at = await _poll(built_by_third, BUILDER_INTERVAL + TAKEOVER_GRACE)
    out("")
    out(
        f"6. SIGTERM {name(second)}: it closed in {stopped['close_ms']:.0f} ms, exit "
        f"status {code}, after {_plural(stopped['builds'], 'build', 'builds')} of its own"
    )
    if not handed_over:
        raise DemoError(f"{name(third)} did not take over after the graceful stop")
    out(
        f"   {name(third)} took over {handover * 1000:.0f} ms after the signal "
        "(the lease was released, not waited out)"
    )
    out(
        f"   its first build was served {(served_at - stopped_at) * 1000:.0f} ms after the "
        "signal, on the previous leader's schedule"
        if served_at is not None
        else "   NO build of it was served"
    )
    if code != 0:
        problems.append(f"{name(second)} exited with status {code} after SIGTERM")
    if served_at is None:
        problems.append("the last leader's builds were not served")
    if handover > BUILDER_LEASE_TTL:
        problems.append(f"the graceful handover took {handover:.2f} s, as long as a lease")

    # 7. SIGTERM the last one; the targets keep their last build. Then the reader's tally.
    await asyncio.sleep(BUILDER_PAUSE / 2)
    third.process.terminate()
    stopped = await third.expect("stopped", 10.0)
    code = await third.process.wait()
    await asyncio.sleep(0.2)  # the reader goes on: nothing is left to build, nothing goes away
    reader.stop()
    state = await r.hgetall(keys.state)
    out("")
    out(
        f"7. SIGTERM {name(third)}, the last one: it closed in {stopped['close_ms']:.0f} ms, "
        f"exit status {code}; {int(state.get(b'builds', 0))} builds in all"
    )
    if code != 0:
        problems.append(f"{name(third)} exited with status {code} after SIGTERM")
    builders = sorted({by for _, _, by in reader.builds})
    numbers = [build for _, build, _ in reader.builds] or [0]
    out(
        f"   the reader in this process, all along: {reader.raw_reads} raw reads "
        "(one MULTI: LLEN, LRANGE, HLEN, HVALS)"
    )
    out(
        f"   and {reader.client_reads} CacheClient.get_target reads; it saw builds "
        f"#{numbers[0]} to #{numbers[-1]}, by pids {', '.join(map(str, builders))}"
    )
    out(f"   empty, partial, mixed or older reads: {reader.bad}")
    for problem in reader.problems:
        out(f"     {problem}")
    if reader.bad:
        problems.append(f"{reader.bad} bad reads")
    if not reader.raw_reads or not reader.client_reads:
        problems.append("the reader did not read")

    out("")
    took = time.monotonic() - begun
    if problems:
        out(f"FAILED: {'; '.join(problems)} (builder part took {took:.1f} s)")
        return 1
    out(
        f"OK: takeover {takeover * 1000:.0f} ms after a SIGKILL (lease {BUILDER_LEASE_TTL:g} s), "
        f"{handover * 1000:.0f} ms after a SIGTERM; {reader.raw_reads + reader.client_reads} "
        f"reads, none empty or partial (took {took:.1f} s)"
    )
    return 0


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


async def _both_parts(url: str, options: dict[str, Any], *, started_server: bool = False) -> int:
    status = await run_demo(url, started_server=started_server, **options)
    print()
    return await run_builder_demo(url) or status


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
            return asyncio.run(_both_parts(args.url, options))
        from .testing import RedisServer

        with RedisServer() as server:
            return asyncio.run(_both_parts(server.url, options, started_server=True))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redicache_async.demo")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--builder-worker", metavar="JSON", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    if args.builder_worker is not None:
        return builder_worker_main(args.builder_worker)
    return main(args)


if __name__ == "__main__":
    sys.exit(_cli())
