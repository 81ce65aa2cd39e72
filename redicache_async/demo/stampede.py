"""The demo's first part, driven from the parent: many processes, one cold key, one fetch.

Several worker processes (:mod:`.stampede_worker`), each with its own
:class:`~redicache_async.CacheClient`, wait for one start signal and then ask for the same cold
key from many coroutines at once: one fetch runs in the whole group. Then one process
regenerates the key, and every other process reports when its local layer let go of the old
value and served the new one. Last, each process's counters. Every figure printed is measured.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from .formatting import plural, spread, verdict
from .processes import Worker, drop_namespace, gather_lines, reap, start_worker
from .stampede_worker import KEY, DemoKeys

__all__ = ["run_demo"]


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
            procs.append(await start_worker("--worker", index, config))
        await gather_lines(procs, "ready", 30.0)
        total = workers * callers
        out(f"redicache_async demo · {workers} processes x {callers} callers · {label}")
        status = await _steps(r, keys, procs, total, fetch_seconds, begun, out)
        graceful = True
    finally:
        clean = await reap(procs, graceful=graceful)
        await drop_namespace(r, keys.namespace)
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
    stampede = await gather_lines(procs, "stampede", 30.0 + 3 * fetch_seconds)
    counted = int(await r.get(keys.fetches) or 0)
    fetchers = [(w, line["fetches"]) for w, line in zip(procs, stampede, strict=True)]
    fetched_in = [f"worker {w.index} (pid {w.pid})" for w, n in fetchers if n]
    values = {v for line in stampede for v in line["values"]}
    waits = [(at - signal) * 1000 for line in stampede for at in line["answered_at"]]
    woke = [(line["woke"] - signal) * 1000 for line in stampede]
    out(f"   fetches run: {counted} (counted in Redis), in {', '.join(fetched_in) or 'none'}")
    out(f"   the start signal reached all {len(procs)} processes within {max(woke):.1f} ms")
    out(f"   caller waits from the start signal: {spread(waits)}")
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
    ready = await gather_lines(watchers, "watching", 10.0)
    if any(line["generation"] != 1 for line in ready):
        problems.append("a process did not hold the first value before the regeneration")
    await r.rpush(keys.commands(writer.index), json.dumps({"op": "regenerate"}))
    regen = await writer.expect("regenerated", 30.0 + 3 * fetch_seconds)
    watched = await gather_lines(watchers, "watched", 40.0)
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
    out(f"     invalidation received by the others: {spread(invalidated)}")
    out(f"     new value served by the others:      {spread(seen)}")
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
    final = await gather_lines(procs, "stats", 10.0)
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

    return verdict(
        out,
        problems,
        begun,
        "demo",
        f"1 fetch for {total} callers in {len(procs)} processes; the new value reached "
        f"the {plural(len(watchers), 'other process', 'other processes')} within "
        f"{max(seen):.1f} ms",
    )
