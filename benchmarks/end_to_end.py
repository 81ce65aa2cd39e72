"""End to end, as a user would deploy it: a FastAPI app (:mod:`benchmarks.e2e_app`) under
``uvicorn --workers 2``, loaded by separate load-generator processes over keep-alive HTTP/1.1
connections, with a report endpoint whose fetch takes 200 ms and whose TTL is 2 s; ours
(``@cache.cached`` on a ``CacheHandle``) against aiocache (``@cached``, ``@cached_stampede``)
and cashews (``@cache``, ``lock=True``), each backed by the same Redis.

Both workers get connections: a burst of connections from one client tends to land on one
worker, so each generator opens connections until each worker holds its share (it learns a
connection's worker from the ``x-pid`` of its first answer, and closes the extra ones), and
the table shows the requests each worker answered.

Per library, over one window of closed-loop load (every connection sends its next request when
the last is answered):

- fetches: from the workers' fetch logs, grouped by expiry (fetches that start within
  ``TTL / 2`` of an expiry's first are one expiry); "fetches per expiry" is the largest group;
- Redis commands per request: ``INFO commandstats`` calls, before and after, less ``INFO``;
- Redis CPU per request: ``INFO cpu`` ``used_cpu_sys + used_cpu_user``, before and after;
- app CPU per request: both workers' CPU time (``/proc/<pid>/stat``) over the window;
- latency at expiry: p50 and p99 of the requests in flight while a refetch was under way
  (from an expiry's first fetch's start to its last fetch's end), beside the p50 and p99 of
  all. The load is a closed loop, so a refetch that holds requests also holds back the
  requests their connections would have sent: "at expiry" counts what was held, not what an
  open stream of users would have sent meanwhile;
- the load generator's ceiling: the same generators against ``/trivial`` (no cache, no I/O),
  and the generators' own CPU, so that a figure capped by the generator shows as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .cli import part_main
from .cold_key import ROOT, Worker, percentile
from .e2e_loadgen import TRIVIAL, Connection
from .results import Finding, Result, Table

__all__ = ["Settings", "main", "run"]

PART = "end to end"
TTL_SECONDS = 2.0
FETCH_SECONDS = 0.2
WORKERS = 2
LIBRARIES = {
    "ours": "redicache_async @cache.cached",
    "aiocache": "aiocache @cached",
    "aiocache-stampede": "aiocache @cached_stampede",
    "cashews": "cashews @cache",
    "cashews-lock": "cashews @cache(lock=True)",
}
#: Seconds for uvicorn to answer on both workers, and for a generator to connect.
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    seconds: float
    """Load per library (the ceiling's window is shorter)."""
    generators: int
    connections: int
    """Connections per generator, shared evenly between the workers."""


SMOKE = Settings(seconds=2.5, generators=2, connections=4)
FULL = Settings(seconds=15.0, generators=2, connections=8)


@dataclass
class Window:
    """What one library (or the trivial endpoint) did over one window of load."""

    name: str
    at: float
    seconds: float
    sent: list[float] = field(default_factory=list)
    """When each request was sent, ``time.monotonic()``."""
    latencies: list[float] = field(default_factory=list)
    """Its latency, ms."""
    per_worker: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    redis_cpu: float = 0.0
    app_cpu: float = 0.0
    generator_cpu: float = 0.0
    fetches: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, worker pid) of each fetch that started in the window."""

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def expiries(self) -> list[list[tuple[float, float, str]]]:
        """The fetches grouped by expiry: a fetch that starts within ``TTL / 2`` of a group's
        first fetch belongs to it."""
        groups: list[list[tuple[float, float, str]]] = []
        for fetch in sorted(self.fetches):
            if groups and fetch[0] - groups[-1][0][0] < TTL_SECONDS / 2:
                groups[-1].append(fetch)
            else:
                groups.append([fetch])
        return groups

    def at_expiry(self) -> list[float]:
        """Latencies of the requests in flight while a refetch was under way (sent before
        its last fetch ended, answered after its first fetch started)."""
        spans = [(min(f[0] for f in g), max(f[1] for f in g)) for g in self.expiries()]
        return [
            latency
            for sent, latency in zip(self.sent, self.latencies, strict=True)
            if any(sent <= end and sent + latency / 1000 >= start for start, end in spans)
        ]

    def per_request(self, amount: float) -> float:
        return amount / max(self.requests, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time, from ``/proc/<pid>/stat`` (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _redis_counters(r: aioredis.Redis) -> tuple[int, float]:
    """Commands the server ran (less ``INFO``, which this benchmark sends) and its CPU time."""
    stats = await r.info("commandstats")
    calls = sum(int(value["calls"]) for name, value in stats.items() if name != "cmdstat_info")
    cpu = await r.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _wait_for_app(port: int, server: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.returncode is not None:
            raise RuntimeError(f"uvicorn exited (status {server.returncode})")
        try:
            conn = await Connection.open(port)
            try:
                await conn.get(TRIVIAL)
                return
            finally:
                await conn.close()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not answer") from None
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _uvicorn(url: str, namespace: str, logs: Path) -> Any:
    port = _free_port()
    env = {
        **os.environ,
        "E2E_REDIS_URL": url,
        "E2E_NAMESPACE": namespace,
        "E2E_LOG_DIR": str(logs),
        "E2E_TTL_SECONDS": str(TTL_SECONDS),
        "E2E_FETCH_SECONDS": str(FETCH_SECONDS),
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.e2e_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--log-level",
        "warning",
        "--no-access-log",
        cwd=ROOT,
        env=env,
    )
    try:
        await _wait_for_app(port, server)
        yield port
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(15):
                    await server.wait()
            except TimeoutError:
                server.kill()
                await server.wait()


async def measure(url: str, settings: Settings) -> tuple[list[Window], dict[str, int], int]:
    """Every window (the ceiling first), the connections each worker holds, and how many
    connections the generators opened to spread them so."""
    namespace = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    r = aioredis.Redis.from_url(url)
    generators: list[Worker] = []
    windows: list[Window] = []
    connections: Counter[str] = Counter()
    opened = 0
    with tempfile.TemporaryDirectory(prefix="redicache-e2e-") as logs:
        try:
            async with _uvicorn(url, namespace, Path(logs)) as port:
                for _ in range(settings.generators):
                    generators.append(
                        await Worker.start(
                            "benchmarks.e2e_loadgen",
                            "--port",
                            str(port),
                            "--connections",
                            str(settings.connections),
                            "--workers",
                            str(WORKERS),
                        )
                    )
                for generator in generators:
                    ready = await generator.receive(START_TIMEOUT)
                    connections.update(ready["connections"])
                    opened += ready["opened"]
                pids = [int(pid) for pid in connections]
                ceiling = min(settings.seconds, 3.0)
                windows.append(await _window(r, generators, pids, TRIVIAL, "ceiling", ceiling))
                for library in LIBRARIES:
                    windows.append(
                        await _window(
                            r, generators, pids, f"/report/{library}", library, settings.seconds
                        )
                    )
                for generator in generators:
                    await generator.stop()
                generators.clear()
        finally:
            for generator in generators:
                await generator.stop()
            await r.aclose()
        fetches = _fetch_log(Path(logs))
    for window in windows:
        end = window.at + window.seconds
        window.fetches = [f for f in fetches.get(window.name, []) if window.at <= f[0] < end]
    return windows, dict(connections), opened


def _fetch_log(logs: Path) -> dict[str, list[tuple[float, float, str]]]:
    fetches: dict[str, list[tuple[float, float, str]]] = {}
    for log in logs.glob("*.log"):
        for line in log.read_text(encoding="utf-8").splitlines():
            library, start, end, pid = line.split()
            fetches.setdefault(library, []).append((float(start), float(end), pid))
    return fetches


async def _window(
    r: aioredis.Redis,
    generators: list[Worker],
    pids: list[int],
    path: str,
    name: str,
    seconds: float,
) -> Window:
    # Room for each connection's warm-up request, which may wait for a 200 ms fetch.
    at = time.monotonic() + 0.6
    for generator in generators:
        await generator.send({"path": path, "at": at, "seconds": seconds})
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    commands, redis_cpu = await _redis_counters(r)
    app_cpu = sum(_cpu_seconds(pid) for pid in pids)
    replies = [await generator.receive(seconds + 30) for generator in generators]
    commands_after, redis_cpu_after = await _redis_counters(r)
    window = Window(name, at, seconds)
    window.app_cpu = sum(_cpu_seconds(pid) for pid in pids) - app_cpu
    window.commands = commands_after - commands
    window.redis_cpu = redis_cpu_after - redis_cpu
    for reply in replies:
        window.sent += [at + t for t in reply["sent"]]
        window.latencies += reply["latencies"]
        window.per_worker.update(reply["per_worker"])
        window.generator_cpu += reply["cpu"]
    return window


def _server_stack() -> str:
    """What uvicorn serves with here: its version, event loop and HTTP parser ("auto" picks
    uvloop and httptools when they are installed)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn {importlib.metadata.version('uvicorn')} (loop {loop}, HTTP {http})"


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "—"


def findings(
    windows: Sequence[Window], settings: Settings, connections: dict[str, int], opened: int
) -> list[Finding]:
    ceiling, libraries = windows[0], {w.name: w for w in windows[1:]}
    rows = [
        (
            "load generator's ceiling (/trivial)",
            f"{ceiling.rate:,.0f}",
            " / ".join(f"{n:,}" for n in ceiling.per_worker.values()),
            "—",
            "—",
            f"{ceiling.per_request(ceiling.commands):.3g}",
            f"{1e6 * ceiling.per_request(ceiling.redis_cpu):.1f}",
            f"{1e6 * ceiling.per_request(ceiling.app_cpu):.0f}",
            f"{100 * ceiling.generator_cpu / ceiling.seconds / settings.generators:.0f}",
            f"{_ms(ceiling.latencies, 50)} / {_ms(ceiling.latencies, 99)}",
            "—",
        )
    ]
    for name, w in libraries.items():
        expiries = w.expiries()
        at_expiry = w.at_expiry()
        rows.append(
            (
                LIBRARIES[name],
                f"{w.rate:,.0f}",
                " / ".join(f"{n:,}" for n in w.per_worker.values()),
                f"{len(w.fetches)} in {len(expiries)}",
                str(max((len(g) for g in expiries), default=0)),
                f"{w.per_request(w.commands):.3g}",
                f"{1e6 * w.per_request(w.redis_cpu):.1f}",
                f"{1e6 * w.per_request(w.app_cpu):.0f}",
                f"{100 * w.generator_cpu / w.seconds / settings.generators:.0f}",
                f"{_ms(w.latencies, 50)} / {_ms(w.latencies, 99)}",
                f"{_ms(at_expiry, 50)} / {_ms(at_expiry, 99)} ({len(at_expiry):,})",
            )
        )
    table = Table(
        PART,
        f"FastAPI under uvicorn --workers {WORKERS}, {FETCH_SECONDS * 1000:.0f} ms fetch, "
        f"{TTL_SECONDS:g} s TTL",
        (
            "library",
            "requests/s",
            "requests per worker",
            "fetches in expiries",
            "fetches per expiry (max)",
            "Redis commands / request",
            "Redis CPU µs / request",
            "app CPU µs / request (both workers)",
            "generator CPU % (each)",
            "latency p50 / p99 ms",
            "at expiry p50 / p99 ms (requests)",
        ),
        tuple(rows),
        note=(
            f"{settings.generators} load-generator processes x {settings.connections} "
            f"keep-alive connections (closed loop), {settings.seconds:g} s per library; "
            f"connections per worker {' / '.join(map(str, connections.values()))} ({opened} "
            "opened to spread them: the extra ones landed on a worker that had its share); "
            "the first row is the same generators against an endpoint with no cache and no "
            "I/O. An expiry: the fetches that start within TTL/2 of its first. At expiry: the "
            "requests in flight between an expiry's first fetch start and its last fetch end. "
            f"{_server_stack()}."
        ),
    )
    results: list[Finding] = []
    ours = libraries.get("ours")
    if ours is not None:
        expiries = ours.expiries()
        worst = max((len(g) for g in expiries), default=0)
        results.append(
            Result(
                PART,
                f"fetches per expiry across {WORKERS} uvicorn workers (worst expiry)",
                worst,
                "fetches",
                1,
                "exactly",
                detail=(
                    f"{len(ours.fetches)} fetches in {len(expiries)} expiries over "
                    f"{ours.seconds:g} s; requests per worker "
                    + " / ".join(f"{n:,}" for n in ours.per_worker.values())
                ),
            )
        )
        peers = [peer for name, peer in libraries.items() if name != "ours"]
        measures: tuple[tuple[str, Callable[[Window], float], str, float], ...] = (
            ("Redis commands", lambda w: w.commands, "commands", 1.0),
            ("Redis CPU", lambda w: w.redis_cpu, "µs", 1e6),
        )
        for what, amount, unit, scale in measures:
            if not peers:
                break
            mine = scale * ours.per_request(amount(ours))
            best = min(peers, key=lambda w: w.per_request(amount(w)))
            theirs = scale * best.per_request(amount(best))
            results.append(
                Result(
                    PART,
                    f"{what} per request: the most frugal peer / ours",
                    theirs / max(mine, 1e-9),
                    "x",
                    1.0,
                    "at_least",
                    detail=(
                        f"ours {mine:.3g} {unit}, {LIBRARIES[best.name]} {theirs:.3g} {unit} "
                        "per request (every library's in the table)"
                    ),
                )
            )
    results.append(table)
    return results


def _problems(windows: Sequence[Window], connections: dict[str, int]) -> list[str]:
    problems = []
    if len(connections) < WORKERS:
        problems.append(f"the connections reached {len(connections)} worker(s), not {WORKERS}")
    for window in windows:
        if len(window.per_worker) < WORKERS:
            problems.append(f"{window.name}: requests reached {len(window.per_worker)} worker(s)")
        if not window.requests:
            problems.append(f"{window.name}: no request was answered")
    return problems


def run(
    url: str,
    *,
    smoke: bool = False,
    settings: Settings | None = None,
    out: Callable[[str], None] = print,
) -> list[Finding]:
    settings = settings or (SMOKE if smoke else FULL)
    windows, connections, opened = asyncio.run(measure(url, settings))
    found = findings(windows, settings, connections, opened)
    table = found[-1]
    assert isinstance(table, Table)
    out(
        f"redicache_async end to end: FastAPI under uvicorn --workers {WORKERS}, "
        f"{settings.generators} generators x {settings.connections} connections, "
        f"{settings.seconds:g} s per library; connections per worker: "
        + ", ".join(f"{pid}: {n}" for pid, n in connections.items())
        + f" ({opened} opened to spread them)"
    )
    for row in table.rows:
        out("  " + row[0])
        for column, cell in zip(table.columns[1:], row[1:], strict=True):
            out(f"    {column}: {cell}")
    for finding in found:
        if isinstance(finding, Result):
            out(finding.verdict)
    problems = _problems(windows, connections)
    for problem in problems:
        out(f"error: {problem}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return found


main = part_main(
    "end_to_end",
    "A FastAPI app under uvicorn --workers 2: ours against aiocache and cashews.",
    smoke="a few seconds per library (CI)",
    run=run,
)


if __name__ == "__main__":
    sys.exit(main())
