"""A :class:`~redicache_async.CacheBuilder` rebuild of a large hash target, next to raw redis-py.

- ours: ``await builder.refresh(name)`` on the leader of a registration with one hash target
  (``id_field="id"``) whose fetch returns a prebuilt list of items, so that the figure is the
  build itself: serialization, the pipelined writes to a temporary key, the fenced swap (a
  ``RENAME`` over the target, in a script) and the build's record in the registration's state.
- baseline: the same items written as a hash with redis-py, the plain way: ``json.dumps(item,
  separators=(",", ":"))`` and ``pipe.hset(key, str(item["id"]), value)`` per item on one
  non-transactional pipeline, executed all at once or every 10,000 commands; and the fastest
  raw form, ``HSET key f1 v1 ... f1000 v1000`` (1,000 items per command, as the builder sends
  them) on one pipeline. Every variant is measured; the fastest (by median) is the baseline. It
  writes into an emptied key (UNLINK before the clock starts); there is no swap, so readers
  could see it half written.
- target (issue 5): ours at most 1.3x the baseline.

Like :mod:`benchmarks.hot_path`, all the measurements run round by round, interleaved, in one
process against one server; a figure is the median over the rounds, a ratio the median of the
per-round ratios, and nothing asserts a timing. The data is checked (not timed) at the end: the
target and the raw hashes hold the same fields with byte-identical values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from redicache_async import CacheBuilder, Target

from .cli import on_server, part_parser
from .hot_path import Bench, Timer, format_ns, measure, ratio
from .results import Result

__all__ = ["format_duration", "main", "make_items", "run"]

NAME = "rebuild-bench"
#: Commands per ``execute()`` in the chunked raw variant.
CHUNK = 10_000
#: Issue 16: a build costs no more than the fastest raw pipelined form of the same writes.
TARGET_RATIO = 1.0
ONCE = "redis-py HSET per item, one execute"
CHUNKED = f"redis-py HSET per item, execute per {CHUNK // 1000}k"
#: Items per command in the multi-field raw variant (as many as the builder sends in one).
FIELDS_PER_HSET = 1000
MULTI = f"redis-py HSET of {FIELDS_PER_HSET} items, one execute"


@dataclass
class Settings:
    rounds: int
    items: int


def format_duration(ns: float) -> str:
    return f"{ns / 1e9:.3f} s" if ns >= 1e9 else format_ns(ns)


def make_items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"item-{i}", "price": i * 0.5, "tags": ["a", "b"]} for i in range(count)
    ]


def _refresh_timer(builder: CacheBuilder) -> Timer:
    async def run(n: int) -> int:
        started = perf_counter_ns()
        for _ in range(n):
            await builder.refresh(NAME)
        return perf_counter_ns() - started

    return run


def _raw_timer(r: aioredis.Redis, key: str, fill: Callable[[Any], Awaitable[None]]) -> Timer:
    """Raw redis-py writes of the items into ``key``: ``fill(pipe)`` queues (and may execute)
    the commands, the rest is executed at the end. ``key`` is emptied outside the clock."""

    async def run(n: int) -> int:
        elapsed = 0
        for _ in range(n):
            await r.unlink(key)
            started = perf_counter_ns()
            pipe = r.pipeline(transaction=False)
            await fill(pipe)
            if len(pipe):
                await pipe.execute()
            elapsed += perf_counter_ns() - started
        return elapsed

    return run


def _per_item(
    key: str, items: Sequence[dict[str, Any]], chunk: int | None
) -> Callable[[Any], Awaitable[None]]:
    """json.dumps + HSET per item, executed every ``chunk`` commands (None: once, at the end)."""

    async def fill(pipe: Any) -> None:
        for item in items:
            pipe.hset(key, str(item["id"]), json.dumps(item, separators=(",", ":")))
            if chunk is not None and len(pipe) >= chunk:
                await pipe.execute()

    return fill


def _multi_field(key: str, items: Sequence[dict[str, Any]]) -> Callable[[Any], Awaitable[None]]:
    """json.dumps per item, ``HSET key f1 v1 f2 v2 ...`` with FIELDS_PER_HSET items a command."""

    async def fill(pipe: Any) -> None:
        for start in range(0, len(items), FIELDS_PER_HSET):
            arguments: list[str] = []
            for item in items[start : start + FIELDS_PER_HSET]:
                arguments += (str(item["id"]), json.dumps(item, separators=(",", ":")))
            pipe.execute_command("HSET", key, *arguments)

    return fill


async def _wait_for_first_build(builder: CacheBuilder, timeout: float) -> bool:
    try:
        await builder.wait_built(NAME, timeout=timeout)
    except TimeoutError:
        return False
    return builder.status(NAME).is_leader


async def run(
    url: str,
    settings: Settings,
    *,
    out: Callable[[str], None] = print,
    collect: list[Result] | None = None,
) -> int:
    """Measure against the server at ``url`` and print the table; returns an exit status.
    The target's figure is appended to ``collect`` when given."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    target_key = f"{namespace}:rebuild-hash"
    raw_keys = {
        ONCE: f"{namespace}:raw-hash-once",
        CHUNKED: f"{namespace}:raw-hash-chunked",
        MULTI: f"{namespace}:raw-hash-multi-field",
    }
    items = make_items(settings.items)

    async def fetch() -> list[dict[str, Any]]:
        return items

    r = aioredis.Redis.from_url(url)
    problems: list[str] = []
    try:
        info = await r.info("server")
        engine = "valkey" if "valkey_version" in info else "redis"
        engine_version = info.get("valkey_version") or info.get("redis_version", "?")
        async with CacheBuilder(r, namespace=namespace) as builder:
            await builder.register(
                fetch,
                targets=[Target(target_key, "hash", id_field="id")],
                refresh_interval=24 * 3600.0,  # only the refreshes below build
                name=NAME,
            )
            if not await _wait_for_first_build(builder, 60.0):
                out("error: the builder did not lead and build within 60 s")
                return 1
            before = builder.status(NAME)
            ours = Bench("CacheBuilder.refresh() on the leader", _refresh_timer(builder), 1)
            fill = _per_item(raw_keys[ONCE], items, None)
            raws = [Bench(ONCE, _raw_timer(r, raw_keys[ONCE], fill), 1)]
            if settings.items > CHUNK:  # else the same as one execute
                fill = _per_item(raw_keys[CHUNKED], items, CHUNK)
                raws.append(Bench(CHUNKED, _raw_timer(r, raw_keys[CHUNKED], fill), 1))
            fill = _multi_field(raw_keys[MULTI], items)
            raws.append(Bench(MULTI, _raw_timer(r, raw_keys[MULTI], fill), 1))
            await measure([ours, *raws], settings.rounds)
            after = builder.status(NAME)

        # Sanity (not timing): every refresh built, and every copy holds the same data.
        if after.builds - before.builds != settings.rounds + 1 or after.failures:
            problems.append(
                f"{after.builds - before.builds} builds for {settings.rounds + 1} refreshes, "
                f"{after.failures} failures ({after.last_error})"
            )
        built = await r.hgetall(target_key)
        if len(built) != settings.items:
            problems.append(f"the target holds {len(built)} of {settings.items} items")
        for raw in raws:
            if await r.hgetall(raw_keys[raw.name]) != built:
                problems.append(f"the raw hash of '{raw.name}' differs from the builder's target")
        await r.delete(target_key, *raw_keys.values())
        async for key in r.scan_iter(match=f"{namespace}:*"):
            await r.delete(key)
    finally:
        await r.aclose()

    raws.sort(key=lambda bench: bench.median)
    _print_table(
        out,
        settings,
        ours,
        raws,
        context=(
            f"{engine} {engine_version} at {url} · Python {platform.python_version()} · "
            f"redis-py {redis.__version__} ({'hiredis' if HIREDIS_AVAILABLE else 'Python'} parser)"
        ),
    )
    for problem in problems:
        out(f"error: {problem}")
    if collect is not None:
        collect.append(
            Result(
                "rebuild",
                f"builder rebuild of a {settings.items:,}-item hash / the fastest raw pipelined "
                "HSET",
                ratio(ours, raws[0]),
                "x",
                TARGET_RATIO,
                detail=(
                    f"ours {format_duration(ours.median)}, raw '{raws[0].name}' "
                    f"{format_duration(raws[0].median)} (medians of {settings.rounds})"
                ),
            )
        )
    return 1 if problems else 0


def _print_table(
    out: Callable[[str], None],
    settings: Settings,
    ours: Bench,
    raws: Sequence[Bench],
    *,
    context: str,
) -> None:
    width = 54
    baseline = raws[0]

    def items_per_second(bench: Bench) -> str:
        return f"{settings.items / (bench.median / 1e9):,.0f}"

    out(
        f"redicache_async builder rebuild: a {settings.items:,}-item hash target; "
        f"{settings.rounds} interleaved rounds (+1 warm-up)"
    )
    out(context)
    out("")
    out(f"{'':<{width}} {'median/build':>12} {'items/s':>10} {'ratio':>8}  target")
    out(f"rebuild of a {settings.items:,}-item hash")
    out(
        f"  {baseline.name + ' (baseline)':<{width - 2}} {format_duration(baseline.median):>12} "
        f"{items_per_second(baseline):>10} {'1.00x':>8}"
    )
    for bench, target in [*((raw, None) for raw in raws[1:]), (ours, TARGET_RATIO)]:
        value = ratio(bench, baseline)
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g}x ({'met' if value <= target else 'NOT met'})"
        out(
            f"  {bench.name:<{width - 2}} {format_duration(bench.median):>12} "
            f"{items_per_second(bench):>10} {value:>7.2f}x  {verdict}".rstrip()
        )
    out("")
    out(f"baseline: the fastest raw variant by median, here '{baseline.name}'.")
    if settings.items <= CHUNK:
        out(f"({settings.items} items: executing per {CHUNK} commands is the same as once.)")
    out("ours: fetch (a prebuilt list), serialize, write to a temporary key, fenced swap")
    out("(RENAME), record the build. raw: json.dumps + HSET into an emptied key, no swap.")
    out("Ratio: median of the per-round ratios. Timings are figures, not assertions.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = part_parser(
        "builder_rebuild",
        "A CacheBuilder rebuild of a large hash target, next to raw redis-py.",
        smoke="small and short (seconds; CI)",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 5; smoke 2)")
    parser.add_argument("--items", type=int, help="items per build (default 100000; smoke 5000)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rounds = args.rounds or (2 if args.smoke else 5)
    items = args.items or (5_000 if args.smoke else 100_000)
    if rounds < 1 or items < 1:
        print("error: --rounds and --items must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(rounds=rounds, items=items)
    return on_server(args.url, lambda url: asyncio.run(run(url, settings)))


if __name__ == "__main__":
    sys.exit(main())
