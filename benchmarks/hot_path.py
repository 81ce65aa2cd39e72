"""The hot paths of :class:`~redicache_async.CacheClient`, each next to its baseline.

- local hit: ``await cache.get_or_init(key, fetch)`` on a warm key against an awaited dict
  lookup (``async def get(k): return d.get(k)``); target: at most 2.5x (issue 16).
- Redis-backed read: ``await cache.get(key)`` with the local layer off against a raw redis-py
  ``await r.get(key)`` plus ``json.loads`` of the same bytes (the cache returns values, not
  bytes); target: at most 1.1x. The bare GET is shown beside it.
- write: ``await cache.set(key, value)`` against a raw redis-py ``SET``; and the client's
  write script with and without its ``XADD`` to the namespace's event stream, which shows what
  the stream (the replay of missed invalidations after a reconnect) costs each write.
- peers, when importable: aiocache's and cashews' in-memory ``get`` on a warm key.

Every measurement runs in batches of calls, and the batches of all measurements are interleaved
round by round, in one process, against one server, so that drift and noise hit them alike. A
figure is the median over the batches of the time per call; a ratio is the median of the
per-round ratios. Nothing asserts a timing: the machines are shared and noisy, and the ratios
measured side by side are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import platform
import statistics
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from redicache_async import CacheClient, JsonSerializer
from redicache_async.invalidation import OP_SET, event_prefix
from redicache_async.keys import KeySpace
from redicache_async.scripts import Scripts

from .cli import on_server, part_parser
from .results import Result

__all__ = ["main", "run"]

#: Issue 16's targets: a local hit within 2.5x an awaited dict lookup; a decorated function's
#: hit at least 20x faster than aiocache's ``@cached`` and 35x faster than cashews' ``@cache``.
LOCAL_HIT_TARGET = 2.5
DECORATOR_TARGETS = {"aiocache": 20.0, "cashews": 35.0}

Timer = Callable[[int], Awaitable[int]]
"""Runs ``n`` calls and returns the nanoseconds they took."""

#: A small report, like the data the cache is for (about 1 KB of JSON).
VALUE: dict[str, Any] = {
    "title": "daily report",
    "rows": [{"id": i, "name": f"item-{i}", "score": i * 7 % 100} for i in range(24)],
}


@dataclass
class Bench:
    name: str
    run: Timer
    batch: int
    samples: list[float] = field(default_factory=list)
    """Nanoseconds per call, one per measured round."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Comparison:
    title: str
    subject: Bench
    baseline: Bench
    target: float | None = None


@dataclass
class Settings:
    rounds: int
    local_batch: int
    redis_batch: int


async def _fetch() -> dict[str, Any]:
    return VALUE


def _one_arg_timer(call: Callable[[str], Awaitable[object]], key: str) -> Timer:
    async def run(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            await call(key)
        return perf_counter_ns() - started

    return run


def _get_or_init_timer(cache: CacheClient, key: str) -> Timer:
    get_or_init = cache.get_or_init
    fetch = _fetch

    async def run(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            await get_or_init(key, fetch)
        return perf_counter_ns() - started

    return run


def _decoding_get(r: aioredis.Redis) -> Callable[[str], Awaitable[Any]]:
    """A raw GET plus the decoding that the cache does too (it returns values, not bytes),
    with the standard library's ``json.loads``."""
    loads = json.loads

    async def get(k: str) -> Any:
        return loads(cast(bytes, await r.get(k)))

    return get


def _set_timer(cache: CacheClient, key: str) -> Timer:
    async def run(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await cache.set(key, VALUE)
        return perf_counter_ns() - start

    return run


def _write_script_timer(r: aioredis.Redis, namespace: str, key: str, *, stream: bool) -> Timer:
    """The client's write script as ``set`` runs it, with or without the stream key (and so
    with or without its ``XADD``)."""
    keys, scripts = KeySpace(namespace), Scripts(r)
    payload = JsonSerializer().dumps(VALUE)
    prefix = event_prefix(OP_SET, key, "bench")
    write_keys = [keys.value(key), keys.lock(key)] + ([keys.stream] if stream else [])

    async def run(n: int) -> int:
        start = perf_counter_ns()
        for _ in range(n):
            await scripts.write(
                keys=write_keys, args=["", payload, 0, keys.channel, prefix, "", "00"]
            )
        return perf_counter_ns() - start

    return run


def _dict_timer(key: str) -> Timer:
    data = {key: VALUE}

    async def get(k: str) -> Any:
        return data.get(k)

    return _one_arg_timer(get, key)


async def measure(benches: Sequence[Bench], rounds: int, *, warmup: int = 1) -> None:
    """Run every bench's batch once per round, in an order that rotates between rounds."""
    count = len(benches)
    for round_no in range(warmup + rounds):
        shift = round_no % count
        for bench in [*benches[shift:], *benches[:shift]]:
            gc.collect()
            gc.disable()
            try:
                elapsed = await bench.run(bench.batch)
            finally:
                gc.enable()
            if round_no >= warmup:
                bench.samples.append(elapsed / bench.batch)


def ratio(subject: Bench, baseline: Bench) -> float:
    """The median of the per-round ratios (the rounds interleave both, so noise cancels)."""
    return statistics.median(a / b for a, b in zip(subject.samples, baseline.samples, strict=True))


def format_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns / 1_000_000:.2f} ms"


async def _peer_benches(key: str, batch: int) -> tuple[list[Bench], list[str], list[Any]]:
    """aiocache's and cashews' memory get, when they are importable; else a note each."""
    benches: list[Bench] = []
    notes: list[str] = []
    closers: list[Any] = []
    try:
        aiocache = importlib.import_module("aiocache")
    except ImportError:
        notes.append("aiocache is not installed: its row is skipped")
    else:
        default = aiocache.Cache(aiocache.Cache.MEMORY)  # timeout=5: each call in wait_for
        fastest = aiocache.SimpleMemoryCache(timeout=None)
        for cache in (default, fastest):
            await cache.set(key, VALUE)
            closers.append(cache)
        benches.append(
            Bench("aiocache Cache(Cache.MEMORY).get", _one_arg_timer(default.get, key), batch)
        )
        benches.append(
            Bench(
                "aiocache SimpleMemoryCache(timeout=None).get",
                _one_arg_timer(fastest.get, key),
                batch,
            )
        )
    try:
        cashews = importlib.import_module("cashews")
    except ImportError:
        notes.append("cashews is not installed: its row is skipped")
    else:
        mem = cashews.Cache()
        mem.setup("mem://")
        await mem.set(key, VALUE)
        closers.append(mem)
        benches.append(
            Bench('cashews Cache().setup("mem://").get', _one_arg_timer(mem.get, key), batch)
        )
    return benches, notes, closers


def _decorated_timer(function: Callable[[str], Awaitable[object]]) -> Timer:
    return _one_arg_timer(function, "2026-11-23")


async def _report(day: str) -> dict[str, Any]:
    return VALUE


def _decorator_benches(cache: CacheClient, batch: int) -> tuple[Bench, list[Bench], list[str]]:
    """A hit of ``@cache.cached()`` and of the peers' decorators, each on a warm key."""
    ours = Bench("@cache.cached() hit", _decorated_timer(cache.cached(ttl=600)(_report)), batch)
    peers: list[Bench] = []
    notes: list[str] = []
    try:
        aiocache = importlib.import_module("aiocache")
    except ImportError:
        notes.append("aiocache is not installed: its decorator row is skipped")
    else:
        decorated = aiocache.cached(ttl=600)(_report)
        peers.append(Bench("aiocache @cached(ttl=600) hit", _decorated_timer(decorated), batch))
    try:
        cashews = importlib.import_module("cashews")
    except ImportError:
        notes.append("cashews is not installed: its decorator row is skipped")
    else:
        mem = cashews.Cache()
        mem.setup("mem://")
        decorated = mem(ttl=600)(_report)
        peers.append(
            Bench('cashews @cache(ttl=600) hit ("mem://")', _decorated_timer(decorated), batch)
        )
    return ours, peers, notes


async def run(
    url: str,
    settings: Settings,
    *,
    out: Callable[[str], None] = print,
    collect: list[Result] | None = None,
) -> int:
    """Measure against the server at ``url`` and print the table; returns an exit status.
    The targets' figures are appended to ``collect`` when given."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    key = "report"
    raw_key = f"{namespace}:raw-report"
    payload = JsonSerializer().dumps(VALUE)

    r = aioredis.Redis.from_url(url)
    try:
        info = await r.info("server")
        engine = "valkey" if "valkey_version" in info else "redis"
        engine_version = info.get("valkey_version") or info.get("redis_version", "?")
        async with (
            CacheClient(r, namespace=namespace) as cache,
            CacheClient(r, namespace=namespace, local_max_entries=0) as remote,
        ):
            await cache.set(key, VALUE)
            await r.set(raw_key, payload)
            # Sanity (not timing): each path answers what it should, from where it should.
            if await cache.get_or_init(key, _fetch) != VALUE or await remote.get(key) != VALUE:
                out("error: the cache does not return the value it was given")
                return 1
            if await r.get(raw_key) != payload:
                out("error: redis-py does not return the value it was given")
                return 1

            dict_get = Bench("awaited dict lookup", _dict_timer(key), settings.local_batch)
            local = Bench(
                "CacheClient.get_or_init, warm key",
                _get_or_init_timer(cache, key),
                settings.local_batch,
            )
            local_get = Bench(
                "CacheClient.get, warm key", _one_arg_timer(cache.get, key), settings.local_batch
            )
            raw = Bench(
                "redis-py await r.get(key)", _one_arg_timer(r.get, raw_key), settings.redis_batch
            )
            decoded = Bench(
                "redis-py r.get(key) + json.loads",
                _one_arg_timer(_decoding_get(r), raw_key),
                settings.redis_batch,
            )
            remote_get = Bench(
                "CacheClient.get, local layer off",
                _one_arg_timer(remote.get, key),
                settings.redis_batch,
            )
            raw_set = Bench(
                "redis-py await r.set(key, value)",
                _one_arg_timer(lambda k: r.set(k, payload), f"{namespace}:raw-written"),
                settings.redis_batch,
            )
            cache_set = Bench(
                "CacheClient.set (announced, streamed)",
                _set_timer(remote, "written"),
                settings.redis_batch,
            )
            unstreamed = Bench(
                "write script, no stream",
                _write_script_timer(r, namespace, "unstreamed", stream=False),
                settings.redis_batch,
            )
            streamed = Bench(
                "write script with the stream's XADD (as set runs it)",
                _write_script_timer(r, namespace, "streamed", stream=True),
                settings.redis_batch,
            )
            peers, notes, closers = await _peer_benches(key, settings.local_batch)
            decorated, decorator_peers, decorator_notes = _decorator_benches(
                cache, settings.local_batch
            )
            notes += decorator_notes
            for bench in (decorated, *decorator_peers):  # warm: the first call fills each cache
                await bench.run(1)
            try:
                before, remote_before = cache.stats(), remote.stats()
                benches = [
                    dict_get,
                    local,
                    local_get,
                    raw,
                    decoded,
                    remote_get,
                    raw_set,
                    unstreamed,
                    streamed,
                    cache_set,
                    *peers,
                    decorated,
                    *decorator_peers,
                ]
                await measure(benches, settings.rounds)
                after, remote_after = cache.stats(), remote.stats()
            finally:
                for peer in closers:
                    await peer.close()

        # Sanity again: the local rows never went to Redis, the Redis row always did.
        local_calls = (settings.rounds + 1) * settings.local_batch * 3
        remote_calls = (settings.rounds + 1) * settings.redis_batch
        problems = []
        if (
            after.local_hits - before.local_hits != local_calls
            or after.redis_hits != before.redis_hits
        ):
            problems.append("the warm-key rows were not all local hits")
        if (
            remote_after.redis_hits - remote_before.redis_hits != remote_calls
            or remote_after.local_hits != remote_before.local_hits
        ):
            problems.append("the local-layer-off row was not all Redis hits")
    finally:
        await r.aclose()

    comparisons = [
        Comparison("local hit", local, dict_get, LOCAL_HIT_TARGET),
        Comparison("local hit", local_get, dict_get),
        Comparison(f"Redis-backed read, {len(payload)}-byte value", raw, decoded),
        Comparison(f"Redis-backed read, {len(payload)}-byte value", remote_get, decoded, 1.1),
        Comparison(f"write, {len(payload)}-byte value", cache_set, raw_set),
        Comparison("write: cost of the event stream", streamed, unstreamed),
    ]
    _print_table(
        out,
        comparisons,
        peers,
        local,
        header=(
            f"redicache_async hot path: {settings.rounds} interleaved rounds; "
            f"batches of {settings.local_batch} (in-memory) / {settings.redis_batch} (Redis) calls"
        ),
        context=(
            f"{engine} {engine_version} at {url} · Python {platform.python_version()} · "
            f"redis-py {redis.__version__} ({'hiredis' if HIREDIS_AVAILABLE else 'Python'} parser)"
        ),
    )
    if decorator_peers:
        out("decorator hit, warm key (ratio: theirs / ours, i.e. how many times faster ours is)")
        out(f"  {decorated.name:<48} {format_ns(decorated.median):>12}")
        for peer in decorator_peers:
            out(
                f"  {peer.name:<48} {format_ns(peer.median):>12} "
                f"{ratio(peer, decorated):>7.2f}x  >= 10x"
            )
    for note in notes:
        out(f"note: {note}")
    for problem in problems:
        out(f"error: {problem}")
    if collect is not None:
        collect += _results(local, dict_get, peers, remote_get, decoded, decorated, decorator_peers)
    return 1 if problems else 0


def _results(
    local: Bench,
    dict_get: Bench,
    peers: Sequence[Bench],
    remote_get: Bench,
    raw: Bench,
    decorated: Bench,
    decorator_peers: Sequence[Bench],
) -> list[Result]:
    def medians(*benches: Bench) -> str:
        return ", ".join(f"{b.name} {format_ns(b.median)}" for b in benches)

    results = [
        Result(
            "hot path",
            "local hit: get_or_init / awaited dict lookup",
            ratio(local, dict_get),
            "x",
            LOCAL_HIT_TARGET,
            detail=medians(local, dict_get),
        ),
        Result(
            "hot path",
            "Redis-backed read: CacheClient.get (local layer off) / raw redis-py GET + json.loads",
            ratio(remote_get, raw),
            "x",
            1.1,
            detail=medians(remote_get, raw),
        ),
    ]
    if peers:
        fastest = min(peers, key=lambda b: b.median)
        results.append(
            Result(
                "hot path",
                "local hit: how many times faster than the fastest peer's memory get",
                ratio(fastest, local),
                "x",
                5.0,
                "at_least",
                detail=medians(local, fastest),
            )
        )
    for peer in decorator_peers:
        results.append(
            Result(
                "hot path",
                f"decorator hit: how many times faster than {peer.name.split(' hit')[0]}",
                ratio(peer, decorated),
                "x",
                DECORATOR_TARGETS.get(peer.name.split(" ")[0], 10.0),
                "at_least",
                detail=medians(decorated, peer),
            )
        )
    return results


def _print_table(
    out: Callable[[str], None],
    comparisons: Sequence[Comparison],
    peers: Sequence[Bench],
    local: Bench,
    *,
    header: str,
    context: str,
) -> None:
    width = 50
    out(header)
    out(context)
    out("")
    out(f"{'':<{width}} {'median/call':>12} {'ratio':>8}  target")
    title = None
    for comp in comparisons:
        if comp.title != title:
            title = comp.title
            out(title)
            out(
                f"  {comp.baseline.name + ' (baseline)':<{width - 2}} "
                f"{format_ns(comp.baseline.median):>12} {'1.00x':>8}"
            )
        value = ratio(comp.subject, comp.baseline)
        target = ""
        if comp.target is not None:
            verdict = "met" if value <= comp.target else "NOT met"
            target = f"<= {comp.target:g}x ({verdict})"
        out(
            f"  {comp.subject.name:<{width - 2}} {format_ns(comp.subject.median):>12} "
            f"{value:>7.2f}x  {target}".rstrip()
        )
    if peers:
        fastest = min(peers, key=lambda b: b.median)
        out("in-memory get of peers, warm key (ratio: our local hit / theirs)")
        for peer in peers:
            out(
                f"  {peer.name:<{width - 2}} {format_ns(peer.median):>12} "
                f"{ratio(local, peer):>7.2f}x"
            )
        out(
            f"  our local hit vs the fastest peer ({fastest.name.split()[0]}): "
            f"{ratio(local, fastest):.2f}x"
        )
    out("")
    out("median/call: median over the rounds of one batch's time / its calls (loop included);")
    out("ratio: median of the per-round ratios. Timings are figures, not assertions.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = part_parser(
        "hot_path",
        "Hot-path benchmarks of redicache_async.",
        smoke="a few small rounds (seconds; CI)",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 25; smoke 3)")
    parser.add_argument("--batch", type=int, help="calls per batch (default 1000; smoke 100)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rounds = args.rounds or (3 if args.smoke else 25)
    batch = args.batch or (100 if args.smoke else 1000)
    if rounds < 1 or batch < 1:
        print("error: --rounds and --batch must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(rounds=rounds, local_batch=batch, redis_batch=batch)
    return on_server(args.url, lambda url: asyncio.run(run(url, settings)))
