"""CacheBuilder across real processes sharing one Redis (DESIGN.md behaviours 6, 7 and 9): one
leader builds on schedule, a crashed leader is replaced within its lease, a closed one at once, a
deposed leader cannot overwrite its successor, readers never see a partial build, and the data
is written exactly as smart-redis writes it. The processes are ``builder_worker.py``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheBuilder, Target
from redicache_async.keys import KeySpace
from redicache_async.lease_scripts import SWAP_TARGETS

from .conftest import MakeRedis
from .helpers import wait_until

WORKER = Path(__file__).with_name("builder_worker.py")
NAME = "report"
LEASE_TTL = 1.0
#: The lease is renewed every third of its ttl (``Lease.kept_alive``).
RENEWAL_INTERVAL = LEASE_TTL / 3
INTERVAL = 0.3
ITEMS = 3

pytestmark = pytest.mark.slow


class BuilderProcess:
    """One ``builder_worker.py`` process and the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.instance = ""
        self._unread: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"<builder process {self.pid}>"

    async def expect(
        self, event: str, *, containing: str = "", timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first line of ``event`` not returned yet (whose message holds ``containing``);
        lines of other events are kept for later calls."""

        def wanted(line: dict[str, Any]) -> bool:
            return line["event"] == event and containing in line.get("message", "")

        for line in self._unread:
            if wanted(line):
                self._unread.remove(line)
                return line
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.process.stdout.readline()
                    assert raw, f"{self} exited with {await self.process.wait()} before {event!r}"
                    received: dict[str, Any] = json.loads(raw)
                    if wanted(received):
                        return received
                    self._unread.append(received)
        except TimeoutError:
            raise AssertionError(
                f"{self} printed no {event!r} line {containing!r} in {timeout} s; "
                f"it printed {self._unread}"
            ) from None

    async def status(self) -> dict[str, Any]:
        """Its ``CacheBuilder.status`` (asked with SIGUSR1), plus ``fetches`` it ran."""
        self.process.send_signal(signal.SIGUSR1)
        return await self.expect("status")

    async def close(self) -> dict[str, Any]:
        """SIGTERM: the worker closes its builder and exits 0. Returns its last status."""
        self.process.send_signal(signal.SIGTERM)
        closing = await self.expect("closing")
        await self.expect("closed")
        assert await self.process.wait() == 0
        return closing


Spawn = Callable[..., Coroutine[Any, Any, list[BuilderProcess]]]


@dataclass(frozen=True)
class Fetch:
    """One line of the fetch log that the workers' fetch function writes."""

    pid: int
    n: int
    #: Server clock (seconds) when the fetch logged itself, just after it started.
    at: float
    #: The worker's ``time.monotonic()`` when the fetch started.
    monotonic: float


class Registration:
    """The Redis side of the registration the workers share: its keys, state and targets."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        keys = KeySpace(namespace)
        self.redis = redis
        self.namespace = namespace
        self.state_key = keys.state(NAME)
        self.list_key = f"{namespace}-list"
        self.hash_key = f"{namespace}-hash"
        self.list_meta = keys.target_meta(self.list_key)
        self.hash_meta = keys.target_meta(self.hash_key)
        self.counter = f"{namespace}:test:fetches"
        self.log = f"{namespace}:test:log"

    def worker_args(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": NAME,
            "list_key": self.list_key,
            "hash_key": self.hash_key,
            "counter": self.counter,
            "log": self.log,
        }

    async def state(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.state_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def builds(self) -> int:
        return int(await self.redis.hget(self.state_key, "builds") or 0)

    async def leader(self) -> str:
        return _text(await self.redis.hget(self.state_key, "leader") or b"")

    async def fetches(self) -> list[Fetch]:
        fetches = []
        for raw in await self.redis.lrange(self.log, 0, -1):
            pid, n, seconds, micros, monotonic = _text(raw).split()
            at = int(seconds) + int(micros) / 1e6
            fetches.append(Fetch(int(pid), int(n), at, float(monotonic)))
        return fetches

    async def server_time(self) -> float:
        seconds, micros = await self.redis.time()
        return float(seconds + micros / 1e6)

    async def snapshot(self) -> dict[str, Any]:
        """Both targets, their meta hashes and the state, read in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(self.list_key, 0, -1)
        pipe.hgetall(self.hash_key)
        pipe.hgetall(self.list_meta)
        pipe.hgetall(self.hash_meta)
        pipe.hgetall(self.state_key)
        replies = await pipe.execute()
        return dict(zip(["list", "hash", "list_meta", "hash_meta", "state"], replies, strict=True))


def complete_build(snapshot: dict[str, Any], items: int) -> tuple[int, int]:
    """Check that the targets hold all ``items`` items of one single build, the same in the list
    and the hash; returns that build's (fetch number, pid)."""
    listed, hashed = snapshot["list"], snapshot["hash"]
    assert len(listed) == items, f"the list holds {len(listed)} items, not {items}"
    assert len(hashed) == items, f"the hash holds {len(hashed)} items, not {items}"
    decoded = [json.loads(raw) for raw in listed]
    builds = {(item["build"], item["pid"]) for item in decoded}
    assert len(builds) == 1, f"the list mixes builds {sorted(builds)}"
    assert [item["id"] for item in decoded] == [f"id{i}" for i in range(1, items + 1)]
    assert hashed == {f"id{i}".encode(): raw for i, raw in enumerate(listed, 1)}
    (build,) = builds
    return build


@pytest.fixture
def registration(redis: aioredis.Redis, namespace: str) -> Registration:
    return Registration(redis, namespace)


@pytest.fixture
async def spawn(redis_url: str, registration: Registration) -> AsyncIterator[Spawn]:
    """``await spawn(count, **worker_args)``: that many builder processes, once all are ready;
    killed (if still running) and reaped after the test."""
    processes: list[BuilderProcess] = []

    async def start(count: int = 1, **options: Any) -> list[BuilderProcess]:
        args = {"url": redis_url, **registration.worker_args()}
        args |= {"items": ITEMS, "interval": INTERVAL, "lease_ttl": LEASE_TTL, **options}
        started = []
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(WORKER), json.dumps(args), stdout=asyncio.subprocess.PIPE
            )
            started.append(BuilderProcess(process))
            processes.append(started[-1])
        async with asyncio.TaskGroup() as group:
            readies = [group.create_task(p.expect("ready", timeout=20)) for p in started]
        for process_, ready in zip(started, readies, strict=True):
            process_.instance = ready.result()["instance"]
        return started

    try:
        yield start
    finally:
        for builder in processes:
            if builder.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it may have just exited
                    builder.process.kill()  # a stopped (SIGSTOP) process dies too
            await builder.process.wait()


def by_instance(builders: list[BuilderProcess], instance: str) -> BuilderProcess:
    (builder,) = [b for b in builders if b.instance == instance]
    return builder


async def _statuses(builders: list[BuilderProcess]) -> list[dict[str, Any]]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(b.status()) for b in builders]
    return [task.result() for task in tasks]


# -- one leader ----------------------------------------------------------------------------------


async def test_one_of_three_processes_builds_on_schedule(
    spawn: Spawn, registration: Registration
) -> None:
    builders = await spawn(3)
    await wait_until(lambda: _at_least(registration.builds(), 5), what="five builds")
    fetches = await registration.fetches()
    statuses = await _statuses(builders)

    leaders = [b for b, s in zip(builders, statuses, strict=True) if s["is_leader"]]
    assert len(leaders) == 1, statuses
    (leader,) = leaders
    assert {f.pid for f in fetches} == {leader.pid}  # nobody else ever fetched
    assert [f.n for f in fetches] == list(range(1, len(fetches) + 1))
    assert (await registration.state())["leader"] == leader.instance
    for builder, status in zip(builders, statuses, strict=True):
        assert status["failures"] == 0
        if builder is not leader:
            assert (status["fetches"], status["builds"], status["epoch"]) == (0, 0, None)
    leader_status = statuses[builders.index(leader)]
    assert leader_status["builds"] >= 5
    assert leader_status["fetches"] >= len(fetches)
    # One builder's schedule: each build starts an interval after the previous one (not 3x as
    # often). The fetch notes its start right as the library starts the build, in one process.
    gaps = [b.monotonic - a.monotonic for a, b in itertools.pairwise(fetches)]
    assert min(gaps) > INTERVAL - 0.05, gaps
    complete_build(await registration.snapshot(), ITEMS)


# -- takeover ------------------------------------------------------------------------------------


async def test_killed_leader_is_replaced_within_its_lease(
    spawn: Spawn, registration: Registration, record_property: Callable[[str, object], None]
) -> None:
    builders = await spawn(3)
    await wait_until(lambda: _at_least(registration.builds(), 2), what="two builds")
    old = by_instance(builders, await registration.leader())

    killed_at = await registration.server_time()
    old.process.send_signal(signal.SIGKILL)
    await old.process.wait()
    await wait_until(
        lambda: _differs(registration.leader(), old.instance),
        timeout=3 * LEASE_TTL,
        what="another process to take the lease",
    )
    state = await registration.state()
    new = by_instance(builders, state["leader"])
    await wait_until(lambda: _fetched_by(registration, new.pid), what="the new leader's build")

    elected_after = int(state["elected_at"]) / 1000 - killed_at
    first_build_after = min(f.at for f in await registration.fetches() if f.pid == new.pid)
    first_build_after -= killed_at
    print(
        f"\nSIGKILL takeover (lease_ttl {LEASE_TTL} s): elected after {elected_after:.3f} s, "
        f"first build after {first_build_after:.3f} s"
    )
    record_property("sigkill_elected_after_s", round(elected_after, 4))
    record_property("sigkill_first_build_after_s", round(first_build_after, 4))
    assert new is not old
    assert elected_after <= LEASE_TTL + RENEWAL_INTERVAL
    assert (await new.status())["is_leader"]
    assert all(f.pid == new.pid for f in await registration.fetches() if f.at > killed_at)
    complete_build(await registration.snapshot(), ITEMS)


async def test_closed_leader_hands_over_at_once(
    spawn: Spawn, registration: Registration, record_property: Callable[[str, object], None]
) -> None:
    # A lease this long would make a takeover by expiry take seconds: only the announced
    # release can explain a fast one. The leader is closed half-way through a long interval,
    # so that the new leader's first build tells its three possible schedules far apart: one
    # interval after the old leader's last build (the schedule continues), right after the
    # handover (an extra build), or a whole interval after the handover (a gap).
    interval = 2.0
    builders = await spawn(2, lease_ttl=5.0, interval=interval)
    await wait_until(lambda: _at_least(registration.builds(), 1), what="the first build")
    old = by_instance(builders, await registration.leader())
    first = (await registration.fetches())[0]
    await wait_until(
        lambda: _reached(registration, first.at + interval / 2), what="half an interval"
    )

    stopping_at = await registration.server_time()
    closing = await old.close()
    await wait_until(
        lambda: _differs(registration.leader(), old.instance),
        timeout=2.0,
        what="the follower to take the lease",
    )
    state = await registration.state()
    (new,) = [b for b in builders if b is not old]
    assert state["leader"] == new.instance
    await wait_until(
        lambda: _fetched_by(registration, new.pid),
        timeout=3 * interval,
        what="the new leader's build",
    )

    handover = int(state["elected_at"]) / 1000 - stopping_at
    fetches = await registration.fetches()
    last_old = max(f.at for f in fetches if f.pid == old.pid)
    first_new = min(f.at for f in fetches if f.pid == new.pid)
    gap = first_new - last_old
    print(
        f"\ngraceful handover: elected {handover:.3f} s after SIGTERM; first build of the new "
        f"leader {gap:.3f} s after the old leader's last (interval {interval} s)"
    )
    record_property("graceful_handover_s", round(handover, 4))
    record_property("graceful_handover_build_gap_s", round(gap, 4))
    assert closing["is_leader"]
    assert handover < 0.5
    # One interval between the two builds: none extra at the handover, and no gap after it.
    assert interval - 0.25 < gap < interval + 0.5, gap
    assert (await new.status())["is_leader"]
    complete_build(await registration.snapshot(), ITEMS)


# -- fencing -------------------------------------------------------------------------------------


async def test_leader_frozen_mid_fetch_cannot_overwrite_its_successor(
    spawn: Spawn, registration: Registration, redis: aioredis.Redis, namespace: str
) -> None:
    gate = f"{namespace}:test:gate"
    # A long interval: after the takeover the targets hold exactly the successor's one build.
    (first,) = await spawn(1, gate=gate, interval=60.0)
    await wait_until(lambda: _fetched_by(registration, first.pid), what="the first fetch")
    first_epoch = int((await registration.state())["epoch"])
    (second,) = await spawn(1, interval=60.0)

    first.process.send_signal(signal.SIGSTOP)  # a long GC pause, a VM freeze
    try:
        await wait_until(
            lambda: _built_by(registration, second),
            timeout=3 * LEASE_TTL,
            what="the second process to take over and build",
        )
        before = await registration.snapshot()
        await redis.rpush(gate, "go")  # the frozen fetch returns as soon as it runs again
    finally:
        first.process.send_signal(signal.SIGCONT)
    stopped = await first.expect("log", containing="stopped building")
    print(f"\nthe leader frozen mid-fetch, resumed: {stopped['message']}")
    await wait_until(lambda: _no_temporary_keys(redis, namespace), what="no temporary copies")

    after = await registration.snapshot()
    assert after == before
    assert complete_build(after, ITEMS) == (2, second.pid)  # fetch 1 was the frozen one's
    second_status, first_status = await _statuses([second, first])
    assert (second_status["is_leader"], second_status["builds"]) == (True, 1)
    assert (first_status["is_leader"], first_status["builds"]) == (False, 0)
    epoch = second_status["epoch"]
    assert epoch > first_epoch
    for meta in (after["list_meta"], after["hash_meta"], after["state"]):
        assert int(meta[b"epoch"]) == epoch


async def test_deposed_leader_swap_is_refused_by_the_server(
    spawn: Spawn,
    registration: Registration,
    redis: aioredis.Redis,
    make_redis: MakeRedis,
    namespace: str,
) -> None:
    """The worker stops itself right before its fenced swap, its copies written: once resumed,
    its swap reaches the server after the successor's build, and is refused there."""
    frozen = f"{namespace}:test:frozen"
    (first,) = await spawn(1, freeze_before_swap=frozen, interval=60.0)
    await wait_until(lambda: _stopped(first.pid), what="the first process to stop at its swap")
    fenced = json.loads(await redis.get(frozen) or b"{}")
    assert len(await _temporary_keys(redis, namespace)) == 2  # its new copies are complete
    (second,) = await spawn(1, interval=60.0)
    await wait_until(
        lambda: _built_by(registration, second),
        timeout=3 * LEASE_TTL,
        what="the second process to take over and build",
    )
    before = await registration.snapshot()
    assert complete_build(before, ITEMS) == (2, second.pid)

    swap_sha = hashlib.sha1(SWAP_TARGETS.encode(), usedforsecurity=False).hexdigest()
    commands: list[str] = []
    async with make_redis(protocol=2).monitor() as monitor:
        watcher = asyncio.create_task(_collect(monitor, commands))
        try:
            first.process.send_signal(signal.SIGCONT)
            stopped = await first.expect("log", containing="stopped building")
            await wait_until(
                lambda: any(
                    c.startswith(f"EVALSHA {swap_sha}") and fenced["token"] in c.split()
                    for c in commands
                ),
                what="the deposed leader's swap to reach the server",
            )
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    print(f"\nthe leader frozen at its swap, resumed: {stopped['message']}")
    await wait_until(lambda: _no_temporary_keys(redis, namespace), what="no temporary copies")

    after = await registration.snapshot()
    assert after == before
    second_status, first_status = await _statuses([second, first])
    assert (second_status["is_leader"], second_status["builds"]) == (True, 1)
    assert (first_status["is_leader"], first_status["builds"]) == (False, 0)
    assert second_status["epoch"] > int(fenced["epoch"])
    for meta in (after["list_meta"], after["hash_meta"], after["state"]):
        assert int(meta[b"epoch"]) == second_status["epoch"]


# -- zero downtime -------------------------------------------------------------------------------


async def test_readers_never_see_a_missing_or_partial_target(
    spawn: Spawn, registration: Registration, redis: aioredis.Redis
) -> None:
    items, builds_per_leader = 3000, 6
    builders = await spawn(2, items=items, interval=0.05)
    await wait_until(lambda: _at_least(registration.builds(), 1), what="the first build")
    old = by_instance(builders, await registration.leader())
    seen: dict[int, int] = {}  # fetch number -> pid, of every build a reader saw
    reads = 0
    closed = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while sum(pid != old.pid for pid in seen.values()) < builds_per_leader:
        assert loop.time() < deadline, f"saw only builds {seen} in {reads} reads"
        build, pid = complete_build(await registration.snapshot(), items)
        seen[build] = pid
        for _ in range(5):  # cheap reads in between: the keys never go missing or shrink
            pipe = redis.pipeline(transaction=True)
            pipe.llen(registration.list_key)
            pipe.hlen(registration.hash_key)
            assert await pipe.execute() == [items, items]
            reads += 1
        if not closed and len(seen) >= builds_per_leader:
            old.process.send_signal(signal.SIGTERM)  # and a handover in the middle
            closed = True
    await old.expect("closed")
    assert await old.process.wait() == 0
    print(f"\nreaders: {reads} reads, {len(seen)} builds seen, all complete")
    assert seen == {f.n: f.pid for f in await registration.fetches() if f.n in seen}


# -- data format ---------------------------------------------------------------------------------


async def test_targets_are_byte_compatible_with_smart_redis(
    redis: aioredis.Redis, namespace: str
) -> None:
    """The example of smart-redis's README, at its key names, read with a plain client."""

    def sample_data_fetching_fn() -> list[dict[str, str]]:
        return [{"id": "id1", "value": "value1"}, {"id": "id2", "value": "value2"}]

    try:
        async with CacheBuilder(redis, namespace=namespace) as builder:
            name = await builder.register(
                sample_data_fetching_fn,
                targets=[
                    Target("sample-key-list", "list"),
                    Target("sample-key-hash", "hash", id_field="id"),
                ],
                refresh_interval=100,
                name="sampleCacheName",
            )
            await builder.wait_built(name, timeout=5.0)
            assert builder.status(name).builds == 1
        assert await redis.lrange("sample-key-list", 0, 1) == [
            b'{"id":"id1","value":"value1"}',
            b'{"id":"id2","value":"value2"}',
        ]
        assert await redis.hgetall("sample-key-hash") == {
            b"id1": b'{"id":"id1","value":"value1"}',
            b"id2": b'{"id":"id2","value":"value2"}',
        }
    finally:
        await redis.delete("sample-key-list", "sample-key-hash")


# -- helpers -------------------------------------------------------------------------------------


async def _at_least(value: Coroutine[Any, Any, int], minimum: int) -> bool:
    return await value >= minimum


async def _differs(value: Coroutine[Any, Any, str], old: str) -> bool:
    return await value not in ("", old)


async def _reached(registration: Registration, server_time: float) -> bool:
    return await registration.server_time() >= server_time


async def _fetched_by(registration: Registration, pid: int) -> bool:
    return any(f.pid == pid for f in await registration.fetches())


async def _built_by(registration: Registration, builder: BuilderProcess) -> bool:
    state = await registration.state()
    return state.get("leader") == builder.instance and int(state.get("builds", 0)) >= 1


async def _temporary_keys(redis: aioredis.Redis, namespace: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{namespace}:tmp:*")]


async def _no_temporary_keys(redis: aioredis.Redis, namespace: str) -> bool:
    return not await _temporary_keys(redis, namespace)


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (Linux: state T in /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


async def _collect(monitor: Any, commands: list[str]) -> None:
    async for command in monitor.listen():
        commands.append(command["command"])


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
