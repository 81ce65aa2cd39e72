"""The load generator of :mod:`benchmarks.end_to_end`: a process of its own that holds
keep-alive HTTP/1.1 connections to the app, spread over its uvicorn workers, and runs
closed-loop load on the path each order names (one JSON line on stdin per order, one JSON line
of answers on stdout, as :class:`benchmarks.cold_key.Worker` speaks).

``python -m benchmarks.e2e_loadgen --worker --port P --connections C --workers W``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence

from .cold_key import Message, emit, stdin_reader

__all__ = ["TRIVIAL", "Connection", "main"]

#: The app's endpoint with no cache and no I/O: the first request of every connection (it
#: tells the connection's worker) and the generators' ceiling.
TRIVIAL = "/trivial"
#: Seconds to spread the connections over the workers before giving up.
CONNECT_TIMEOUT = 60.0


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads their answers (a minimal
    client: the generator's own cost is what caps the ceiling)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pid = ""

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str) -> str:
        """GET ``path``; its answer's ``x-pid``."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, _, rest = head.partition(b"\r\n")
        if b" 200 " not in status:
            raise RuntimeError(f"GET {path}: {status.decode(errors='replace')}")
        length, pid = 0, ""
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-pid":
                pid = value.strip().decode()
        await self.reader.readexactly(length)
        return pid

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _balanced(port: int, connections: int, workers: int) -> tuple[list[Connection], int]:
    """``connections`` connections, as evenly spread over the ``workers`` as the server lets
    (a connection that lands on a worker that has its share already is closed), and how many
    were opened to get them."""
    share = -(-connections // workers)
    opened = 0
    kept: list[Connection] = []
    per_worker: Counter[str] = Counter()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while len(kept) < connections and time.monotonic() < deadline:
        conn = await Connection.open(port)
        opened += 1
        conn.pid = await conn.get(TRIVIAL)
        if per_worker[conn.pid] < share and (conn.pid in per_worker or len(per_worker) < workers):
            per_worker[conn.pid] += 1
            kept.append(conn)
        else:
            await conn.close()
            await asyncio.sleep(0.005)  # let the busy worker's sibling reach accept() first
    return kept, opened


async def _generator(port: int, connections: int, workers: int) -> None:
    orders = await stdin_reader()
    conns, opened = await _balanced(port, connections, workers)
    emit({"ready": os.getpid(), "connections": Counter(c.pid for c in conns), "opened": opened})
    try:
        while line := await orders.readline():
            emit(await _load(conns, json.loads(line)))
    finally:
        for conn in conns:
            await conn.close()


async def _load(conns: list[Connection], order: Message) -> Message:
    """Each connection: one request of ``order["path"]`` at once (warm-up, not counted), then
    closed-loop requests from ``order["at"]`` for ``order["seconds"]``."""
    path, at, seconds = order["path"], order["at"], order["seconds"]
    sent: list[float] = []
    latencies: list[float] = []
    per_worker: Counter[str] = Counter()

    async def drive(conn: Connection) -> None:
        await conn.get(path)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        end = at + seconds
        while (started := time.monotonic()) < end:
            pid = await conn.get(path)
            latencies.append(round((time.monotonic() - started) * 1000, 3))
            sent.append(round(started - at, 5))
            per_worker[pid] += 1

    cpu = time.process_time()
    await asyncio.gather(*(drive(conn) for conn in conns))
    return {
        "sent": sent,
        "latencies": latencies,
        "per_worker": per_worker,
        "cpu": time.process_time() - cpu,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_loadgen")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    asyncio.run(_generator(args.port, args.connections, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
