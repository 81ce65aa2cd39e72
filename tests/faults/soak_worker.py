"""One load process of the soak test: ``python tests/faults/soak_worker.py JSON-ARGS``.

It opens one ``redis.asyncio.Redis`` and one :class:`CacheClient`, prints ``{"ready": true}`` and
then obeys one command per line on stdin:

- ``go``: start ``coroutines`` coroutines that call ``get_or_init``, ``get``, ``set`` and
  ``attempt_regeneration`` in a random mix over ``keys`` keys (log-uniform, so that a few keys
  are hot and contended), each call bounded by its op's ``bounds`` entry;
- ``stop``: let every coroutine finish its current call, then print ``{"stopped": ...}``;
- ``converge``: wait until the listener is subscribed again, compare ``cache.get(key)`` with the
  value hash in Redis for every key until a whole pass agrees (or ``converge_seconds`` pass),
  close the client and the Redis client, check that nothing leaked, and print the report.

End of input before a command means the test went away: the worker closes and exits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import io
import json
import logging
import math
import os
import random
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from redicache_async import CacheClient, FetchTimeout, RegenerationInProgress
from redicache_async.errors import RedisUnavailableError
from redicache_async.stored import unpack

OPS = ("get_or_init", "get", "set", "attempt_regeneration")
WEIGHTS = (50, 20, 20, 10)

#: Exceptions each operation may raise under faults, as the README documents them: reads
#: answer without Redis, ``set`` raises RedisUnavailableError, a fetch may time out, and a
#: regeneration meets another holder's lock.
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "get_or_init": (FetchTimeout,),
    "get": (),
    "set": (RedisUnavailableError,),
    "attempt_regeneration": (RegenerationInProgress, FetchTimeout),
}

_KEEP_DETAILS = 20  # unexpected exceptions and hung calls described in full, per worker


def say(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


class LogRecorder(logging.Handler):
    """Counts warnings by message template; keeps errors (and what they carry) in full."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {record.msg}"] += 1
        if record.levelno >= logging.ERROR and len(self.errors) < _KEEP_DETAILS:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.errors.append(text)


class Load:
    """The coroutines' shared state and everything they count."""

    def __init__(self, cache: CacheClient, args: dict[str, Any]) -> None:
        self.cache = cache
        self.worker = int(args["worker"])
        self.keys = int(args["keys"])
        self.bounds: dict[str, float] = args["bounds"]
        self.think = float(args["think_seconds"])
        self.slow_fetch_ratio = float(args["slow_fetch_ratio"])
        self.slow_fetch_seconds = float(args["slow_fetch_seconds"])
        self.rng = random.Random(int(args["seed"]))
        self.stop = asyncio.Event()
        self.counter = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.ok: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.errors_by_op: dict[str, collections.Counter[str]] = {
            op: collections.Counter() for op in OPS
        }
        self.latencies: dict[str, list[float]] = {op: [] for op in OPS}
        #: Successful calls per op and per second of wall-clock time (``int(time.time())``).
        self.ok_by_second: dict[str, collections.Counter[int]] = {
            op: collections.Counter() for op in OPS
        }
        self.hung = 0
        self.hung_details: list[str] = []
        self.unexpected = 0
        self.unexpected_details: list[str] = []
        self.fetches = 0
        self.slow_fetches = 0

    def key(self) -> str:
        # log-uniform over 0..keys-1: k0..k9 take about a third of the calls
        return f"k{min(self.keys - 1, int(self.keys ** self.rng.random()) - 1)}"

    def value(self, via: str) -> dict[str, Any]:
        self.counter += 1
        return {"w": self.worker, "n": self.counter, "via": via, "t": round(time.time(), 3)}

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        value = self.value("fetch")
        if self.rng.random() < self.slow_fetch_ratio:
            self.slow_fetches += 1  # outlives fetch_timeout: exercises FetchTimeout
            await asyncio.sleep(self.slow_fetch_seconds)
        else:
            await asyncio.sleep(self.rng.uniform(0.0, 0.02))  # the work a fetch stands for
        return value

    def operation(self, op: str, key: str) -> Callable[[], Awaitable[Any]]:
        cache = self.cache
        if op == "get_or_init":
            return lambda: cache.get_or_init(key, self.fetch, ttl=None)
        if op == "get":
            return lambda: cache.get(key)
        if op == "set":
            value = self.value("set")
            return lambda: cache.set(key, value, ttl=None)
        return lambda: cache.attempt_regeneration(key, self.fetch, ttl=None)

    async def call(self, op: str, key: str) -> None:
        self.calls[op] += 1
        bound = self.bounds[op]
        started = time.perf_counter()
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                await self.operation(op, key)()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            elapsed = time.perf_counter() - started
            self.latencies[op].append(elapsed)
            if deadline.expired():
                self.count_hung(op, key, bound, traceback.format_exc())
                return
            name = type(exc).__name__
            self.errors[name] += 1
            self.errors_by_op[op][name] += 1
            if isinstance(exc, ALLOWED[op]):
                return
            self.unexpected += 1
            if len(self.unexpected_details) < _KEEP_DETAILS:
                self.unexpected_details.append(
                    f"{op}({key!r}) raised {exc!r} after {elapsed:.3f} s "
                    f"(at {time.time():.3f}):\n{traceback.format_exc()}"
                )
            return
        self.latencies[op].append(time.perf_counter() - started)
        if deadline.expired():  # the call swallowed the cancellation of its bound
            self.count_hung(op, key, bound, "(returned normally after its bound expired)")
            return
        self.ok[op] += 1
        self.ok_by_second[op][int(time.time())] += 1

    def count_hung(self, op: str, key: str, bound: float, where: str) -> None:
        self.hung += 1
        self.errors["HUNG"] += 1
        self.errors_by_op[op]["HUNG"] += 1
        if len(self.hung_details) < _KEEP_DETAILS:
            self.hung_details.append(
                f"{op}({key!r}) still running after its {bound:g} s bound "
                f"(at {time.time():.3f}); where it waited:\n{where}"
            )

    async def run(self) -> None:
        while not self.stop.is_set():
            op = self.rng.choices(OPS, WEIGHTS)[0]
            await self.call(op, self.key())
            # think time: paces the load, and lets the loop run when a call was a local hit
            await asyncio.sleep(self.rng.uniform(0.0, 2 * self.think))

    def latency_summary(self) -> dict[str, dict[str, float]]:
        summary: dict[str, dict[str, float]] = {}
        for op, samples in self.latencies.items():
            ordered = sorted(samples)
            if not ordered:
                summary[op] = {"max": 0.0, "p99": 0.0}
                continue
            p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
            summary[op] = {"max": ordered[-1], "p99": p99}
        return summary


async def read_command() -> str:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.strip() or "eof"


async def stop_load(load: Load, tasks: list[asyncio.Task[None]]) -> list[str]:
    """Stop the coroutines; those that do not end within every bound plus a margin are stuck
    (a call that ignored the cancellation of its bound): their stacks are returned."""
    load.stop.set()
    _, pending = await asyncio.wait(tasks, timeout=max(load.bounds.values()) + 5.0)
    stuck = []
    for task in pending:
        stack = io.StringIO()
        task.print_stack(file=stack)
        stuck.append(f"{task.get_name()} did not stop:\n{stack.getvalue()}")
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            stuck.append(f"{task.get_name()} failed: {exc!r}")
    return stuck


def value_key(namespace: str, key: str) -> str:
    """The value hash of ``key``, as the README documents it (keys hold no braces here)."""
    return f"{namespace}:v:{{{key}}}"


async def wait_subscribed(cache: CacheClient, timeout: float) -> bool:
    """Wait until the client's listener is subscribed (it resubscribes after every fault)."""
    listener = getattr(cache, "_listener", None)
    if listener is None or not hasattr(listener, "connected"):
        return True  # nothing to watch: the comparison below waits for agreement anyway
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not listener.connected:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def local_entry(cache: CacheClient, key: str) -> dict[str, Any] | None:
    """What the local layer holds for ``key`` (for the report of a disagreement)."""
    layer = getattr(cache, "_local", None)
    entries = getattr(layer, "_entries", None)
    entry = None if entries is None else entries.get(key)
    if entry is None:
        return None
    now = time.monotonic()
    return {
        "value": entry.value,
        "version": entry.version,
        "fresh_for": None if math.isinf(entry.expires_at) else entry.expires_at - now,
    }


async def converge(
    cache: CacheClient, r: aioredis.Redis, namespace: str, keys: int, timeout: float
) -> dict[str, Any]:
    """Compare the client with Redis on every key until one whole pass agrees."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    subscribed = await wait_subscribed(cache, timeout)
    names = [f"k{i}" for i in range(keys)]
    passes = 0
    disagreeing: dict[str, dict[str, Any]] = {}
    first_pass_disagreeing = -1
    while True:
        passes += 1
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.get(value_key(namespace, name))
        stored = [unpack(raw) if raw is not None else None for raw in await pipe.execute()]
        disagreeing = {}
        for name, (version, _, payload, _) in zip(
            names, (s or (None, 0, None, ()) for s in stored), strict=True
        ):
            expected = None if payload is None else json.loads(payload)
            try:
                async with asyncio.timeout(5.0):
                    actual = await cache.get(name)
            except Exception as exc:  # reported as a disagreement, with what it raised
                actual = f"<raised {exc!r}>"
            if actual != expected:
                disagreeing[name] = {
                    "client": actual,
                    "redis": expected,
                    "redis_version": None if version is None else int(version),
                    "local": local_entry(cache, name),
                }
        if first_pass_disagreeing < 0:
            first_pass_disagreeing = len(disagreeing)
        if not disagreeing or loop.time() - started > timeout:
            break
        await asyncio.sleep(0.1)  # the next pass: nothing to wait on but time
    return {
        "subscribed": subscribed,
        "passes": passes,
        "first_pass_disagreeing": first_pass_disagreeing,
        "disagreeing": len(disagreeing),
        "disagreeing_details": dict(list(disagreeing.items())[:_KEEP_DETAILS]),
        "seconds": loop.time() - started,
    }


async def close_and_check(cache: CacheClient, r: aioredis.Redis) -> dict[str, Any]:
    """Close the client, then the Redis client; report what is left behind."""
    await cache.aclose()
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    tasks = [repr(t) for t in asyncio.all_tasks() if t is not current and not t.done()]
    pool = r.connection_pool
    in_use = len(list(pool._get_in_use_connections()))
    await r.aclose()
    connections = [*pool._get_free_connections(), *pool._get_in_use_connections()]
    still_connected = sum(1 for c in connections if c.is_connected)
    gc.collect()
    return {
        "tasks_left": tasks,
        "connections_in_use_after_close": in_use,
        "connections_open_after_aclose": still_connected,
    }


async def main() -> None:
    args: dict[str, Any] = json.loads(sys.argv[1])
    recorder = LogRecorder()
    logging.getLogger().addHandler(recorder)
    logging.captureWarnings(True)
    r = aioredis.Redis.from_url(
        args["url"],
        protocol=int(args["protocol"]),
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    cache = CacheClient(r, namespace=args["namespace"], **args["options"])
    closed = False
    try:
        await cache.start()
        say(ready=True, pid=os.getpid())
        if await read_command() != "go":
            return
        load = Load(cache, args)
        tasks = [
            asyncio.create_task(load.run(), name=f"soak-{args['worker']}-{i}")
            for i in range(int(args["coroutines"]))
        ]
        command = await read_command()
        stuck = await stop_load(load, tasks)
        say(stopped=True, at=time.time())
        if command != "stop" or await read_command() != "converge":
            return
        convergence = await converge(
            cache, r, args["namespace"], load.keys, float(args["converge_seconds"])
        )
        stats = dataclasses.asdict(cache.stats())
        closed = True
        leaks = await close_and_check(cache, r)
        say(
            report={
                "worker": load.worker,
                "pid": os.getpid(),
                "protocol": int(args["protocol"]),
                "calls": dict(load.calls),
                "ok": dict(load.ok),
                "errors": dict(load.errors),
                "errors_by_op": {op: dict(c) for op, c in load.errors_by_op.items() if c},
                "hung": load.hung,
                "hung_details": load.hung_details,
                "unexpected": load.unexpected,
                "unexpected_details": load.unexpected_details,
                "stuck": stuck,
                "fetches": load.fetches,
                "slow_fetches": load.slow_fetches,
                "stale_served": stats["stale_served"],
                "stats": stats,
                "latency": load.latency_summary(),
                "ok_by_second": {
                    op: {str(s): n for s, n in c.items()} for op, c in load.ok_by_second.items()
                },
                "convergence": convergence,
                "leaks": leaks,
                "log_counts": dict(recorder.counts.most_common(15)),
                "logged_errors": recorder.errors,
            }
        )
    finally:
        if not closed:
            with contextlib.suppress(Exception):
                await cache.aclose()
            await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
