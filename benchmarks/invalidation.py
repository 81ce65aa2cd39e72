"""How fast a write in one process reaches another process's local layer, next to raw pub/sub.

- ours: process A's :class:`~redicache_async.CacheClient` does ``await cache.set(k, value)``
  (the clock starts just before the call) while process B's client holds ``k`` in its local
  layer; the clock stops when B's invalidation listener has dropped that local copy (a
  benchmark-only subclass notes the moment, in the listener's callback).
- baseline: plain redis-py pub/sub between the same two processes: A does ``await
  r.publish(ch, str(time.monotonic_ns()))``; B, subscribed with ``r.pubsub()``, receives with
  ``await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)`` and takes the receive
  time minus the sent time.
- target: ours at most 1.5x the baseline at p50.

``time.monotonic_ns()`` is CLOCK_MONOTONIC, shared by every process of the machine, so the two
processes' readings compare. One sample at a time: A waits for B's acknowledgement (a line on
B's stdout, not timed) before the next send, so nothing queues; after each of ours, B reads
``k`` again (not timed), so that the next write has a local copy to drop, and A checks that B
read the value it had set. After each raw sample B makes the same round trip (a ``GET``, not
timed) before it answers, so that both methods start each sample after the same pause: on this
host a sample that follows a longer idle gap is slower (with the raw side answering at once,
its p50 was 10-20 µs lower than after a ``GET``, which put 0.06-0.11 on the ratio). The two
methods run in alternating blocks (one warm-up block of each first, not reported), so that
drift hits both alike. Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from redicache_async import CacheClient

from .cli import on_server, part_parser
from .cold_key import Report, TimedClient, Worker, describe_server, emit, percentile, stdin_reader
from .results import Result

__all__ = ["main", "run"]

PART = "invalidation"
TARGET_RATIO = 1.5
BLOCK = 50
KEY = "report"
RAW = "raw redis-py publish → get_message"
OURS = "CacheClient.set in A → B's local copy dropped"
START_TIMEOUT = 30.0
#: Seconds A waits for B's acknowledgement of one sample: an event lost would stop the run.
SAMPLE_TIMEOUT = 5.0
NAME = "set in A → B's local layer updated / raw redis-py publish→receive"


# -- process B -------------------------------------------------------------------------------


async def _worker(url: str, namespace: str, channel: str) -> None:
    orders = await stdin_reader()
    dropped: asyncio.Queue[int] = asyncio.Queue()

    def on_set(key: str, ns: int) -> None:
        if key == KEY:
            dropped.put_nowait(ns)

    r = aioredis.Redis.from_url(url)
    try:
        async with TimedClient(r, namespace=namespace, on_set=on_set) as cache:
            pubsub = r.pubsub()
            try:
                await pubsub.subscribe(channel)
                # Confirmed before A is told to start, so that no publish goes unheard.
                while (await pubsub.get_message(timeout=1.0)) is None:
                    pass
                emit({"ready": await cache.get(KEY)})
                tasks = [
                    asyncio.create_task(_receive_raw(pubsub, r)),
                    asyncio.create_task(_acknowledge_drops(cache, dropped)),
                ]
                eof = asyncio.create_task(orders.read())  # A closes B's stdin when it is done
                try:
                    done, _ = await asyncio.wait([eof, *tasks], return_when="FIRST_COMPLETED")
                finally:
                    for task in [eof, *tasks]:
                        task.cancel()
                    await asyncio.gather(eof, *tasks, return_exceptions=True)
                for task in done:
                    task.result()  # a failed loop raises here
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # unannotated in redis-py
    finally:
        await r.aclose()


async def _receive_raw(pubsub: PubSub, r: aioredis.Redis) -> None:
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        received = time.monotonic_ns()
        await r.get(KEY)  # the round trip ours makes before answering (see the docstring)
        emit({"raw": received - int(message["data"])})


async def _acknowledge_drops(cache: CacheClient, dropped: asyncio.Queue[int]) -> None:
    while True:
        at = await dropped.get()
        emit({"dropped": at, "value": await cache.get(KEY)})


# -- process A -------------------------------------------------------------------------------


async def _measure(url: str, samples: int, out: Callable[[str], None]) -> Report:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    channel = f"{namespace}:raw-bench"
    blocks = max(1, samples // BLOCK)
    raw: list[list[float]] = []
    ours: list[list[float]] = []
    mismatches = 0
    r = aioredis.Redis.from_url(url)
    try:
        context = await describe_server(r, url)
        async with CacheClient(r, namespace=namespace) as cache:
            value: dict[str, Any] = {"title": "daily report", "seq": 0}
            await cache.set(KEY, value)
            worker = await Worker.start(
                "benchmarks.invalidation",
                *("--url", url, "--namespace", namespace, "--channel", channel),
            )
            try:
                ready = await worker.receive(START_TIMEOUT)
                if ready["ready"] != value:
                    mismatches += 1
                for block in range(2 * (blocks + 1)):  # the first two warm up; not reported
                    gc.collect()
                    times: list[float] = []
                    for _ in range(BLOCK):
                        if block % 2 == 0:
                            await r.publish(channel, str(time.monotonic_ns()))
                            times.append((await worker.receive(SAMPLE_TIMEOUT))["raw"] / 1000)
                            continue
                        value = {**value, "seq": value["seq"] + 1}
                        sent = time.monotonic_ns()
                        await cache.set(KEY, value)
                        ack = await worker.receive(SAMPLE_TIMEOUT)
                        times.append((ack["dropped"] - sent) / 1000)
                        mismatches += ack["value"] != value
                    if block >= 2:
                        (raw if block % 2 == 0 else ours).append(times)
            finally:
                await worker.stop()
    finally:
        await r.aclose()

    results = _results(raw, ours)
    _print_report(out, raw, ours, results, context)
    problems = []
    if mismatches:
        problems.append(
            f"{mismatches} times B read a value other than the one A had just set "
            "(a stale local copy, or an event out of step)"
        )
    for problem in problems:
        out(f"error: {problem}")
    return Report(results, problems)


def _flat(blocks: Sequence[Sequence[float]]) -> list[float]:
    return [t for block in blocks for t in block]


def _results(raw: Sequence[Sequence[float]], ours: Sequence[Sequence[float]]) -> list[Result]:
    base, mine = _flat(raw), _flat(ours)
    detail = (
        f"ours p50 {percentile(mine, 50):.1f} µs, p99 {percentile(mine, 99):.1f} µs; "
        f"raw p50 {percentile(base, 50):.1f} µs, p99 {percentile(base, 99):.1f} µs"
    )
    return [
        Result(
            PART,
            f"invalidation p{q}: {NAME}",
            percentile(mine, q) / percentile(base, q),
            "x",
            bound,
            "at_most",
            detail=detail,
        )
        for q, bound in ((50, TARGET_RATIO), (99, None))
    ]


def _print_report(
    out: Callable[[str], None],
    raw: Sequence[Sequence[float]],
    ours: Sequence[Sequence[float]],
    results: Sequence[Result],
    context: str,
) -> None:
    base, mine = _flat(raw), _flat(ours)
    out(
        f"redicache_async invalidation, process A → process B: {len(mine)} samples of each, in "
        f"alternating blocks of {BLOCK} (after 1 warm-up block of each)"
    )
    out(context)
    out("")
    width = 48
    quantiles = (50, 90, 99)
    out(f"{'µs':<{width}} " + " ".join(f"{f'p{q}':>8}" for q in quantiles) + f" {'max':>8}")
    for name, times in ((f"{RAW} (baseline)", base), (OURS, mine)):
        cells = [percentile(times, q) for q in quantiles] + [max(times)]
        out(f"{name:<{width}} " + " ".join(f"{cell:>8.1f}" for cell in cells))
    ratios = [percentile(mine, q) / percentile(base, q) for q in quantiles]
    out(f"{'ratio (ours / raw)':<{width}} " + " ".join(f"{f'{x:.2f}x':>8}" for x in ratios))
    per_block = statistics.median(
        statistics.median(o) / statistics.median(b) for o, b in zip(ours, raw, strict=True)
    )
    out(f"median over the block pairs of the ratio of their p50s: {per_block:.2f}x")
    out("")
    for result in results:
        out(result.verdict)
    out(f"  {results[0].detail}")
    out("Times are figures, not assertions.")


# -- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = part_parser(
        "invalidation",
        "A write in one process reaching another's local layer, next to pub/sub.",
        smoke="100 samples instead of 2000 (CI)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--channel", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(url: str, *, smoke: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    """Measure against the server at ``url``, print the table through ``out``."""
    return asyncio.run(_measure(url, 100 if smoke else 2000, out)).results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        asyncio.run(_worker(args.url, args.namespace, args.channel))
        return 0
    samples = 100 if args.smoke else 2000
    report = on_server(args.url, lambda url: asyncio.run(_measure(url, samples, print)))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
