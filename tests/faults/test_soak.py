"""Soak: 4 processes x 4 coroutines of mixed ``get_or_init`` / ``get`` / ``set`` /
``attempt_regeneration`` over 1,000 keys while the server crashes and restarts twice, freezes
once, and has its connections killed. Afterwards every process agrees with Redis on every key,
no call outlived its bound, nothing but the documented exceptions escaped, and nothing leaked.

``REDICACHE_SOAK_SECONDS`` sets the length of the load (45 s by default; the whole test takes
a few seconds more, up to ~30 s more when keys never agree). The summary table is printed
(``-s`` shows it) and recorded as the test's ``soak_summary`` property (in ``--junitxml``
reports). The workers are ``soak_worker.py``; a disagreement is reported with the times at
which each side's value was made, relative to the faults.

Exceptions a call may raise, as the README documents them: ``set`` raises
``RedisUnavailableError`` while Redis is away, a fetch may raise ``FetchTimeout``
(``get_or_init``, ``attempt_regeneration``) and ``attempt_regeneration`` raises
``RegenerationInProgress``; reads answer without Redis. Anything else is unexpected.

Bounds, derived from the client's options (each is what the README promises plus 2 s of slack
for a loaded machine; a call that outlives its bound counts as hung):

- ``get`` and ``set``: one Redis command, ``redis_timeout``;
- ``attempt_regeneration``: claim, fetch, write and release: ``fetch_timeout`` + 3 x
  ``redis_timeout``;
- ``get_or_init``: a first claim, a wait for another holder of at most ``wait_timeout``, a last
  claim, its own fetch, the write and the release: ``wait_timeout`` + ``fetch_timeout`` + 4 x
  ``redis_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from redicache_async.testing import RedisServer
from tests.helpers import wait_until

WORKER = Path(__file__).with_name("soak_worker.py")

SOAK_SECONDS = float(os.environ.get("REDICACHE_SOAK_SECONDS", "45"))

PROCESSES = 4
COROUTINES = 4
KEYS = 1000
OPTIONS: dict[str, float] = {
    "redis_timeout": 0.5,
    "lock_ttl": 2.0,
    "fetch_timeout": 2.0,
    "wait_timeout": 5.0,
    "stale_ttl": 5.0,
}
SLACK = 2.0
_R, _F, _W = OPTIONS["redis_timeout"], OPTIONS["fetch_timeout"], OPTIONS["wait_timeout"]
BOUNDS = {
    "get": _R + SLACK,
    "set": _R + SLACK,
    "attempt_regeneration": _F + 3 * _R + SLACK,
    "get_or_init": _W + _F + 4 * _R + SLACK,
}
CONVERGE_SECONDS = 10.0
#: Calls each process must make for the load to count as real: a few thousand over 45 s.
MIN_CALLS = int(60 * SOAK_SECONDS)

#: The chaos, at fractions of the load's length. A crash stays down for CRASH_DOWN seconds; a
#: freeze lasts PAUSE seconds. The last faults leave the pub/sub connections alone (a freeze this
#: short goes unnoticed by a busy listener): convergence must not depend on the listener
#: reconnecting after them.
CRASH_DOWN = 1.5
PAUSE = 1.0
SCHEDULE: list[tuple[float, str]] = [
    (0.06, "kill normal"),
    (0.12, "kill pubsub"),
    (0.20, "crash"),
    (0.30, "kill normal+pubsub"),
    (0.38, "kill pubsub"),
    (0.46, "restart"),
    (0.56, "kill normal+pubsub"),
    (0.64, "kill normal"),
    (0.72, "pause"),
    (0.82, "kill normal"),
    (0.90, "kill normal"),
]
RESTARTS = ("crash", "restart")

pytestmark = pytest.mark.slow


class Worker:
    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, f"worker {self.index} exited with {await self.process.wait()}"
        result: dict[str, Any] = json.loads(raw)
        return result

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()


async def spawn(index: int, server: RedisServer, namespace: str) -> Worker:
    args = {
        "url": server.url,
        "namespace": namespace,
        "worker": index,
        "protocol": 3 if index % 2 == 0 else 2,  # redis-py's default RESP3, and RESP2
        "options": OPTIONS,
        "bounds": BOUNDS,
        "keys": KEYS,
        "coroutines": COROUTINES,
        "seed": 1000 + index,
        "think_seconds": 0.002,
        "slow_fetch_ratio": 0.003,
        "slow_fetch_seconds": OPTIONS["fetch_timeout"] + 1.0,
        "converge_seconds": CONVERGE_SECONDS,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        json.dumps(args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    worker = Worker(index, process)
    assert (await worker.line(timeout=20.0))["ready"]
    return worker


class Chaos:
    """Faults on the server, each logged with its wall-clock start and end."""

    def __init__(self, server: RedisServer, admin: aioredis.Redis) -> None:
        self.server = server
        self.admin = admin
        self.log: list[dict[str, Any]] = []

    async def kill_clients(self, kinds: str) -> dict[str, int]:
        killed = {}
        for kind in kinds.split("+"):
            killed[kind] = int(await self.admin.client_kill_filter(_type=kind, skipme=True))
        return killed

    async def run(self, action: str) -> None:
        started = time.time()
        detail: Any = None
        if action.startswith("kill "):
            detail = await self.kill_clients(action.removeprefix("kill "))
        elif action == "crash":
            await asyncio.to_thread(self.server.kill)
            await asyncio.sleep(CRASH_DOWN)  # the outage's length, not a wait for anything
            await asyncio.to_thread(self.server.start)
        elif action == "restart":
            await asyncio.to_thread(self.server.restart)
        elif action == "pause":
            self.server.pause()
            try:
                await asyncio.sleep(PAUSE)  # the freeze's length
            finally:
                self.server.resume()
        else:
            raise AssertionError(f"unknown chaos action {action!r}")
        self.log.append({"action": action, "start": started, "end": time.time(), "detail": detail})

    async def play(self, load_started: float) -> None:
        loop = asyncio.get_running_loop()
        for fraction, action in SCHEDULE:
            delay = load_started + fraction * SOAK_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule's next slot
            await self.run(action)


async def lock_keys(admin: aioredis.Redis, namespace: str) -> list[bytes]:
    return [key async for key in admin.scan_iter(match=f"{namespace}:lock:*", count=1000)]


def successes_between(report: dict[str, Any], op: str, start: float, end: float) -> int:
    """Successful ``op`` calls in whole seconds of wall-clock time within [start, end)."""
    first, last = math.ceil(start), math.floor(end)
    return sum(n for second, n in report["ok_by_second"][op].items() if first <= int(second) < last)


def when(at: float, chaos: list[dict[str, Any]]) -> str:
    """``at`` (wall clock) relative to the first fault, and the last fault that began before."""
    origin = chaos[0]["start"] if chaos else at
    before = [e for e in chaos if e["start"] <= at]
    if not before:
        return f"{at - origin:+.2f} s"
    last = before[-1]
    state = "during" if at <= last["end"] else f"{at - last['end']:.2f} s after"
    return f"{at - origin:+.2f} s ({state} {last['action']!r})"


def describe_disagreement(key: str, detail: dict[str, Any], chaos: list[dict[str, Any]]) -> str:
    """One key on which a client and Redis disagree, with the times of both values."""
    client, stored = detail["client"], detail["redis"]
    parts = [f"  {key}: client returns {json.dumps(client)}"]
    if isinstance(client, dict) and "t" in client:
        parts.append(f"made at {when(client['t'], chaos)}")
    local = detail["local"]
    if local is not None:
        parts.append(f"local entry version {local['version']}, fresh for {local['fresh_for']}")
    parts.append(f"| Redis holds {json.dumps(stored)}")
    if detail["redis_version"] is not None:
        parts.append(f"version {detail['redis_version']}")
        parts.append(f"written at {when(detail['redis_version'] / 1e6, chaos)}")
    return " ".join(parts)


def summarize(
    reports: list[dict[str, Any]], chaos: list[dict[str, Any]], extra: dict[str, Any]
) -> str:
    ops = ("get_or_init", "get", "set", "attempt_regeneration")
    lines = [f"soak: {PROCESSES} processes x {COROUTINES} coroutines, {KEYS} keys, "]
    lines[0] += f"{SOAK_SECONDS:g} s of load; bounds " + ", ".join(
        f"{op} {BOUNDS[op]:g} s" for op in ops
    )
    lines.append("chaos (s after the first fault's start):")
    origin = chaos[0]["start"] if chaos else 0.0
    for event in chaos:
        detail = f" {event['detail']}" if event["detail"] else ""
        lines.append(
            f"  {event['start'] - origin:6.2f} .. {event['end'] - origin:6.2f}  "
            f"{event['action']}{detail}"
        )
    header = (
        f"{'worker':>6} {'resp':>4} {'calls':>7} {'ok':>7} {'hung':>4} {'unexp':>5} "
        f"{'stale':>5} {'fetch':>5} {'disagree':>8} {'1st-pass':>8}  errors"
    )
    lines.append(header)
    totals: Counter[str] = Counter()
    errors_total: Counter[str] = Counter()
    for report in reports:
        calls, ok = sum(report["calls"].values()), sum(report["ok"].values())
        conv = report["convergence"]
        row = {
            "calls": calls,
            "ok": ok,
            "hung": report["hung"],
            "unexpected": report["unexpected"],
            "stale": report["stale_served"],
            "fetches": report["fetches"],
            "disagreeing": conv["disagreeing"],
            "first_pass": conv["first_pass_disagreeing"],
        }
        totals.update(row)
        errors_total.update(report["errors"])
        lines.append(
            f"{report['worker']:>6} {report['protocol']:>4} {calls:>7} {ok:>7} "
            f"{report['hung']:>4} {report['unexpected']:>5} {report['stale_served']:>5} "
            f"{report['fetches']:>5} {conv['disagreeing']:>8} {conv['first_pass_disagreeing']:>8}"
            f"  {dict(sorted(report['errors'].items()))}"
        )
    lines.append(
        f"{'all':>6} {'':>4} {totals['calls']:>7} {totals['ok']:>7} {totals['hung']:>4} "
        f"{totals['unexpected']:>5} {totals['stale']:>5} {totals['fetches']:>5} "
        f"{totals['disagreeing']:>8} {totals['first_pass']:>8}  "
        f"{dict(sorted(errors_total.items()))}"
    )
    lines.append(f"{'op':>22} {'calls':>8} {'ok':>8} {'p99 ms':>8} {'max ms':>8}  errors")
    for op in ops:
        calls = sum(r["calls"].get(op, 0) for r in reports)
        ok = sum(r["ok"].get(op, 0) for r in reports)
        p99 = max(r["latency"][op]["p99"] for r in reports) * 1000
        worst = max(r["latency"][op]["max"] for r in reports) * 1000
        errors: Counter[str] = Counter()
        for r in reports:
            errors.update(r["errors_by_op"].get(op, {}))
        lines.append(
            f"{op:>22} {calls:>8} {ok:>8} {p99:>8.1f} {worst:>8.1f}  {dict(sorted(errors.items()))}"
        )
    stats: Counter[str] = Counter()
    for r in reports:
        stats.update({k: v for k, v in r["stats"].items() if v})
    lines.append(f"stats (all processes): {dict(sorted(stats.items()))}")
    warnings: Counter[str] = Counter()
    for r in reports:
        warnings.update(r["log_counts"])
    lines.append("log records (all processes):")
    lines += [f"  {n:>6}  {message}" for message, n in warnings.most_common(12)]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return "\n".join(lines)


async def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.kill()
        await worker.process.wait()


@pytest.mark.timeout(max(180.0, 2 * SOAK_SECONDS + 90.0))
async def test_soak_under_restarts_freezes_and_killed_connections(
    namespace: str, record_property: Callable[[str, object], None]
) -> None:
    server = RedisServer()
    await asyncio.to_thread(server.start)
    admin = aioredis.Redis.from_url(
        server.url,
        single_connection_client=True,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), 5),  # reconnects after a restart
    )
    workers: list[Worker] = []
    try:
        admin_id = 0
        workers = list(
            await asyncio.gather(*(spawn(i, server, namespace) for i in range(PROCESSES)))
        )
        loop = asyncio.get_running_loop()
        load_started = loop.time()
        for worker in workers:
            await worker.send("go")
        chaos = Chaos(server, admin)
        await chaos.play(load_started)
        remaining = load_started + SOAK_SECONDS - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)  # the rest of the load's length
        for worker in workers:
            await worker.send("stop")
        stop_timeout = max(BOUNDS.values()) + 15.0
        stopped = [await w.line(timeout=stop_timeout) for w in workers]
        assert all(s["stopped"] for s in stopped)
        load_stopped = max(s["at"] for s in stopped)

        # Locks: every call has ended, so each lock was released or expires within lock_ttl.
        left_locks: list[bytes] = []

        async def no_locks() -> bool:
            nonlocal left_locks
            left_locks = await lock_keys(admin, namespace)
            return not left_locks

        lock_deadline = OPTIONS["lock_ttl"] + 2.0 - (time.time() - load_stopped)
        locks_cleared = True
        try:
            await wait_until(no_locks, timeout=max(lock_deadline, 0.1), what="locks to go")
        except AssertionError:
            locks_cleared = False

        # Every listener is subscribed again before the comparison starts.
        async def all_subscribed() -> bool:
            counts = await admin.pubsub_numsub(f"{namespace}:events")
            return bool(counts) and int(counts[0][1]) == PROCESSES

        await wait_until(all_subscribed, timeout=10.0, what="every listener to resubscribe")
        for worker in workers:
            await worker.send("converge")
        reports = [(await w.line(timeout=CONVERGE_SECONDS + 20.0))["report"] for w in workers]
        codes = [await asyncio.wait_for(w.process.wait(), 10.0) for w in workers]

        connections: list[dict[str, Any]] = []

        async def only_admin_connected() -> bool:
            nonlocal connections, admin_id
            admin_id = int(await admin.client_id())  # a new id once it reconnected
            connections = await admin.client_list()
            return [int(c["id"]) for c in connections] == [admin_id]

        with contextlib.suppress(AssertionError):  # reported below, with the rest
            await wait_until(only_admin_connected, timeout=5.0, what="workers' connections")
        others = [c for c in connections if int(c["id"]) != admin_id]
    finally:
        await stop_all(workers)
        await admin.aclose()
        await asyncio.to_thread(server.stop)

    restarts = [e for e in chaos.log if e["action"] in RESTARTS]
    ends = [*(e["start"] for e in restarts[1:]), load_stopped]
    after_restarts = [
        [successes_between(r, "set", e["end"], end) for e, end in zip(restarts, ends, strict=True)]
        for r in reports
    ]
    summary = summarize(
        reports,
        chaos.log,
        {
            "server": server.version(),
            "successful sets after each restart, per worker": after_restarts,
            "lock keys left after lock_ttl + 2 s": len(left_locks),
            "connections left (besides the admin's)": len(others),
            "worker exit codes": codes,
        },
    )
    print("\n" + summary)
    record_property("soak_summary", summary)

    problems: list[str] = []
    for report in reports:
        name = f"worker {report['worker']}"
        if report["hung"]:
            problems.append(
                f"{name}: {report['hung']} hung call(s):\n" + "\n".join(report["hung_details"])
            )
        if report["unexpected"]:
            problems.append(
                f"{name}: {report['unexpected']} unexpected exception(s):\n"
                + "\n".join(report["unexpected_details"])
            )
        if report["stuck"]:
            problems.append(f"{name}: coroutines that did not stop:\n" + "\n".join(report["stuck"]))
        conv = report["convergence"]
        if conv["disagreeing"]:
            problems.append(
                f"{name}: {conv['disagreeing']} key(s) never agreed with Redis within "
                f"{CONVERGE_SECONDS:g} s (subscribed={conv['subscribed']}):\n"
                + "\n".join(
                    describe_disagreement(key, detail, chaos.log)
                    for key, detail in conv["disagreeing_details"].items()
                )
            )
        leaks = report["leaks"]
        if (
            leaks["tasks_left"]
            or leaks["connections_in_use_after_close"]
            or leaks["connections_open_after_aclose"]
        ):
            problems.append(f"{name}: leaked after aclose(): {leaks}")
        if report["logged_errors"]:
            problems.append(f"{name}: errors logged:\n" + "\n".join(report["logged_errors"]))
        calls = sum(report["calls"].values())
        if calls < MIN_CALLS:
            problems.append(f"{name}: only {calls} calls (< {MIN_CALLS}): the load was not real")
    for index, counts in enumerate(after_restarts):
        if not all(counts):
            problems.append(f"worker {index}: no successful set after some restart: {counts}")
    if len(restarts) != len(RESTARTS):
        problems.append(f"expected {len(RESTARTS)} restarts, ran {len(restarts)}")
    if not locks_cleared:
        problems.append(
            f"lock keys left {OPTIONS['lock_ttl'] + 2:g} s after the load: {left_locks}"
        )
    if others:
        problems.append(f"connections left on the server: {others}")
    if any(codes):
        problems.append(f"worker exit codes: {codes}")
    assert not problems, "\n\n".join(problems)
