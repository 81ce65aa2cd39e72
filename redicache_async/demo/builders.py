"""The demo's second part, driven from the parent: builders that survive their leader's death.

Three processes (:mod:`.builder_worker`) each run a :class:`~redicache_async.CacheBuilder` with
the same registration. The parent finds the leader in the registration's state in Redis,
SIGKILLs it and times the takeover, SIGTERMs the next leader and times the handover, then stops
the last one, while a :class:`.TargetReader` checks every read of both targets: one whole
build, never older than the previous read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from redicache_async.client import CacheClient
from redicache_async.replies import text

from .builder_worker import (
    BUILDER_INTERVAL,
    BUILDER_ITEMS,
    BUILDER_LEASE_TTL,
    BUILDER_NAME,
    BuilderKeys,
)
from .formatting import plural, verdict
from .processes import DemoError, Worker, drop_namespace, gather_lines, start_worker
from .target_reader import TargetReader

__all__ = ["run_builder_demo"]

BUILDER_PROCESSES = 3
#: How long the parent lets the builders run between steps (a couple of builds each time).
BUILDER_PAUSE = 1.0
#: A takeover or a handover slower than this (after the lease expired) counts as none.
TAKEOVER_GRACE = 5.0


def _pid_of(leader: bytes | str | None) -> int | None:
    """The pid in a leader id ``host:pid:random``."""
    if leader is None:
        return None
    parts = text(leader).rsplit(":", 2)
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
            procs.append(await start_worker("--builder-worker", index, config))
        await gather_lines(procs, "ready", 30.0)
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
        await drop_namespace(r, keys.namespace)
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
    epoch = text(await r.hget(keys.state, "epoch"))
    sample = text(await r.hget(keys.hash_target, "7"))
    out("")
    own = {by for _, _, by in reader.builds}
    out(
        f"4. {name(first)} leads (epoch {epoch}); the reader has seen "
        f"{plural(len(reader.builds), 'build', 'builds')} so far, "
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
        f"status {code}, after {plural(stopped['builds'], 'build', 'builds')} of its own"
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

    return verdict(
        out,
        problems,
        begun,
        "builder part",
        f"takeover {takeover * 1000:.0f} ms after a SIGKILL (lease {BUILDER_LEASE_TTL:g} s), "
        f"{handover * 1000:.0f} ms after a SIGTERM; {reader.raw_reads + reader.client_reads} "
        "reads, none empty or partial",
    )
