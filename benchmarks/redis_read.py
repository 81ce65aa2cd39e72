"""The Redis-backed read (the local layer off, so every call goes to Redis) of one ~1 KB value,
beside the peers' Redis gets and raw redis-py, on the default event loop and under uvloop.

In one process, against one server, each round runs one batch of each of:

- raw redis-py ``await r.get(key)``, and the same plus ``json.loads`` of the bytes (a raw
  read that returns a value, as every cache does);
- ours: ``await cache.get(key)`` of a :class:`~redicache_async.CacheClient` with
  ``local_max_entries=0``;
- aiocache's ``RedisCache.get`` (its default ``timeout=5``, which runs each call in
  ``wait_for``, and ``timeout=None``, its fastest form) and cashews' ``redis://`` get.

Targets: ours faster than each peer's fastest form, on the default loop. The whole set then
runs again under uvloop (sessions alternate between the loops, so drift hits both), and the
uvloop column is reported beside the default loop's, without a target. Within a loop, a ratio
is the median of the per-round ratios; across loops, the ratio of the medians. The
``raw GET + json.loads`` baseline of the hot path's target lives in :mod:`benchmarks.hot_path`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from redicache_async import CacheClient

from .cli import part_main
from .hot_path import VALUE, Bench, format_ns, measure
from .results import Finding, Result, Table

__all__ = ["Settings", "main", "run"]

PART = "Redis read"
RAW = "redis-py GET"
RAW_JSON = "redis-py GET + json.loads"
OURS = "ours: CacheClient.get, local layer off"
AIOCACHE_DEFAULT = "aiocache RedisCache().get (timeout=5)"
AIOCACHE_FAST = "aiocache RedisCache(timeout=None).get"
CASHEWS = 'cashews Cache().setup("redis://").get'
#: Each peer, by its forms; its fastest form is the one ours is held to.
PEERS = {"aiocache": (AIOCACHE_DEFAULT, AIOCACHE_FAST), "cashews": (CASHEWS,)}


@dataclass(frozen=True)
class Settings:
    sessions: int
    """Sessions per loop; the loops' sessions alternate."""
    rounds: int
    batch: int


SMOKE = Settings(sessions=1, rounds=3, batch=100)
FULL = Settings(sessions=3, rounds=8, batch=500)

Samples = dict[str, list[float]]
"""Nanoseconds per call, by bench name, one per measured round."""


def _timer(call: Callable[[str], Awaitable[object]], key: str) -> Callable[[int], Awaitable[int]]:
    async def run(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            await call(key)
        return perf_counter_ns() - started

    return run


async def _peers(url: str, namespace: str) -> tuple[dict[str, Callable[[str], Any]], list[Any]]:
    """The peers' Redis gets, each on a value written through the peer itself (its own
    serializer and key layout); empty for a peer that is not installed."""
    gets: dict[str, Callable[[str], Any]] = {}
    closers: list[Any] = []
    try:
        aiocache = importlib.import_module("aiocache")
    except ImportError:
        pass
    else:
        parts = urlsplit(url)
        where = {
            "endpoint": parts.hostname or "127.0.0.1",
            "port": parts.port or 6379,
            "db": int(parts.path.lstrip("/") or 0),
            "namespace": f"{namespace}-aiocache",
        }
        for name, options in ((AIOCACHE_DEFAULT, {}), (AIOCACHE_FAST, {"timeout": None})):
            cache = aiocache.RedisCache(**where, **options)
            closers.append(cache)
            await cache.set("report", VALUE)
            gets[name] = cache.get
    try:
        cashews = importlib.import_module("cashews")
    except ImportError:
        pass
    else:
        cache = cashews.Cache()
        cache.setup(url)
        closers.append(cache)
        await cache.set(f"{namespace}-cashews:report", VALUE)
        key = f"{namespace}-cashews:report"
        get = cache.get
        gets[CASHEWS] = lambda _: get(key)
    return gets, closers


async def session(url: str, settings: Settings) -> Samples:
    """One session on the running loop: every read, interleaved round by round."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    raw_key = f"{namespace}:raw"
    payload = json.dumps(VALUE).encode()
    r = aioredis.Redis.from_url(url)
    try:
        await r.set(raw_key, payload)
        async with (
            CacheClient(r, namespace=namespace) as writer,
            CacheClient(r, namespace=namespace, local_max_entries=0) as reader,
        ):
            await writer.set("report", VALUE)
            peers, closers = await _peers(url, namespace)
            try:

                async def raw_json(key: str) -> Any:
                    return json.loads(await r.get(key))  # type: ignore[arg-type]

                reads: dict[str, tuple[Callable[[str], Any], str]] = {
                    RAW: (r.get, raw_key),
                    RAW_JSON: (raw_json, raw_key),
                    OURS: (reader.get, "report"),
                    **{name: (get, "report") for name, get in peers.items()},
                }
                # Sanity, not timing: every read answers the value, from Redis.
                for name, (read, key) in reads.items():
                    answer = await read(key)
                    expected = payload if name == RAW else VALUE
                    if answer != expected:
                        raise AssertionError(f"{name} answered {answer!r:.80}, not the value")
                before = reader.stats()
                benches = [
                    Bench(name, _timer(read, key), settings.batch)
                    for name, (read, key) in reads.items()
                ]
                await measure(benches, settings.rounds)
                after = reader.stats()
                if after.local_hits != before.local_hits or after.redis_hits == before.redis_hits:
                    raise AssertionError("our reads did not all go to Redis")
            finally:
                for peer in closers:
                    await peer.close()
        return {bench.name: bench.samples for bench in benches}
    finally:
        await r.aclose()


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def measure_loops(url: str, settings: Settings) -> dict[str, Samples]:
    """Samples by loop ("asyncio", and "uvloop" when installed), sessions alternating."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    if (uvloop := _uvloop_factory()) is not None:
        factories["uvloop"] = uvloop
    by_loop: dict[str, Samples] = {name: {} for name in factories}
    for _ in range(settings.sessions):
        for name, factory in factories.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                samples = runner.run(session(url, settings))
            for bench, values in samples.items():
                by_loop[name].setdefault(bench, []).extend(values)
    return by_loop


def _ratio(samples: Samples, subject: str, baseline: str) -> float:
    """The median of the per-round ratios (each round ran both, one after the other)."""
    pairs = zip(samples[subject], samples[baseline], strict=True)
    return statistics.median(a / b for a, b in pairs)


def _median(samples: Samples, name: str) -> float:
    return statistics.median(samples[name])


def findings(by_loop: dict[str, Samples]) -> list[Finding]:
    default = by_loop["asyncio"]
    results: list[Finding] = []
    for peer, forms in PEERS.items():
        present = [form for form in forms if form in default]
        if not present:
            continue
        fastest = min(present, key=lambda form: _median(default, form))
        results.append(
            Result(
                PART,
                f"Redis-backed read: how many times faster than {peer}'s Redis get "
                "(its fastest form)",
                _ratio(default, fastest, OURS),
                "x",
                1.0,
                "at_least",
                detail=(
                    f"ours {format_ns(_median(default, OURS))}, {fastest} "
                    f"{format_ns(_median(default, fastest))} (medians, default loop)"
                ),
            )
        )
    for loop, samples in by_loop.items():
        results.append(
            Result(
                PART,
                f"Redis-backed read ({loop}): ours / redis-py GET + json.loads",
                _ratio(samples, OURS, RAW_JSON),
                "x",
                None,
                detail=(
                    f"ours {format_ns(_median(samples, OURS))}, GET + json.loads "
                    f"{format_ns(_median(samples, RAW_JSON))}, GET "
                    f"{format_ns(_median(samples, RAW))}"
                ),
            )
        )
    if "uvloop" in by_loop:
        uv = by_loop["uvloop"]
        results.append(
            Result(
                PART,
                "Redis-backed read: ours under uvloop / ours on the default loop",
                _median(uv, OURS) / _median(default, OURS),
                "x",
                None,
                detail=(
                    f"{format_ns(_median(uv, OURS))} under uvloop, "
                    f"{format_ns(_median(default, OURS))} on asyncio's loop (ratio of medians)"
                ),
            )
        )
    results.append(_table(by_loop))
    return results


def _table(by_loop: dict[str, Samples]) -> Table:
    loops = list(by_loop)
    columns = ["read"] + [f"{loop}: {what}" for loop in loops for what in ("median", "/ ours")]
    rows = []
    for name in by_loop["asyncio"]:
        cells = [name]
        for loop in loops:
            samples = by_loop[loop]
            cells += [format_ns(_median(samples, name)), f"{_ratio(samples, name, OURS):.2f}x"]
        rows.append(tuple(cells))
    return Table(
        PART,
        "one ~1 KB value read from Redis, by loop",
        tuple(columns),
        tuple(rows),
        note=(
            "median: per call, over the rounds; / ours: the median of the per-round ratios "
            "to our read (above 1.00x: slower than ours). The loops run in alternating "
            "sessions of their own."
        ),
    )


def run(
    url: str,
    *,
    smoke: bool = False,
    settings: Settings | None = None,
    out: Callable[[str], None] = print,
) -> list[Finding]:
    settings = settings or (SMOKE if smoke else FULL)
    by_loop = measure_loops(url, settings)
    table = _table(by_loop)
    out(
        f"redicache_async Redis-backed read beside its peers: {settings.sessions} session(s) per "
        f"loop, {settings.rounds} rounds of {settings.batch} calls each"
    )
    columns = list(zip(table.columns, *table.rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    for line in (table.columns, *table.rows):
        out("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    if "uvloop" not in by_loop:
        out("note: uvloop is not installed: its column is skipped")
    for peer in PEERS:
        if not any(form in by_loop["asyncio"] for form in PEERS[peer]):
            out(f"note: {peer} is not installed: its rows are skipped")
    found = findings(by_loop)
    for finding in found:
        if isinstance(finding, Result):
            out(finding.verdict)
    out("ratios: medians of the per-round ratios. Timings are figures, not assertions.")
    return found


main = part_main(
    "redis_read",
    "The Redis-backed read beside aiocache's and cashews' Redis gets, with a uvloop column.",
    smoke="one short session per loop (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
