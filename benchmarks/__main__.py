"""``python -m benchmarks [--smoke] [--only PART] [--out DIR]``: every part against one server of
its own (or ``--url``), then ``RESULTS.md`` and ``results.png`` (:mod:`benchmarks.report`).

A full run writes them into ``benchmarks/`` (they are committed); a smoke run (CI: every part,
briefly) writes them into a temporary directory unless ``--out`` says where, so that it
exercises the report without replacing the measured one.

A part hands back findings (:mod:`benchmarks.results`): results held to the targets, tables
and curves. ``scale-local`` and ``scale-listener`` are slots for modules that may be absent
from a tree (``benchmarks/scale_local.py``, ``benchmarks/scale_listener.py``): when present,
their ``run(url, *, smoke)`` (``url`` only if it takes one) is called like the others'; when
absent, the part says so and is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import redis.asyncio as aioredis

from . import (
    builder_rebuild,
    cluster_pubsub,
    cold_key,
    concurrency,
    eager_refresh,
    end_to_end,
    hot_path,
    invalidation,
    many_keys,
    memory,
    redis_read,
    report,
    scale_readers,
    tags,
)
from .cli import on_server
from .results import Finding, Result, split

PARTS = (
    "hot-path",
    "concurrency",
    "cold-key",
    "invalidation",
    "rebuild",
    "memory",
    "cluster-pubsub",
    "redis-read",
    "many-keys",
    "readers",
    "scale-local",
    "scale-listener",
    "end-to-end",
    "eager-refresh",
    "tags",
)
#: Parts whose module may be absent from a tree (see the module's docstring).
SLOTS = {"scale-local": "scale_local", "scale-listener": "scale_listener"}
HERE = Path(__file__).parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of redicache_async, side by side with their baselines and peers.",
    )
    parser.add_argument("--smoke", action="store_true", help="every part, briefly (CI)")
    parser.add_argument("--only", choices=PARTS, action="append", help="run these parts only")
    parser.add_argument("--out", type=Path, help="where to write RESULTS.md and results.png")
    parser.add_argument("--url", help="an existing server (default: start one on a free port)")
    return parser.parse_args(argv)


async def _server_name(url: str) -> str:
    r = aioredis.Redis.from_url(url)
    try:
        info = await r.info("server")
    finally:
        await r.aclose()
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


def run_parts(url: str, parts: Sequence[str], smoke: bool) -> tuple[int, list[Finding]]:
    results: list[Finding] = []
    status = 0
    hot = hot_path.Settings(
        rounds=3 if smoke else 25,
        local_batch=100 if smoke else 1000,
        redis_batch=100 if smoke else 1000,
    )
    rebuild = builder_rebuild.Settings(rounds=2 if smoke else 5, items=5_000 if smoke else 100_000)
    steps: dict[str, Callable[[], int]] = {
        "hot-path": lambda: _collected(
            results, lambda collect: asyncio.run(hot_path.run(url, hot, collect=collect))
        ),
        "concurrency": lambda: _extend(results, concurrency.run(url, smoke=smoke)),
        "cold-key": lambda: _extend(results, cold_key.run(url, smoke=smoke)),
        "invalidation": lambda: _extend(results, invalidation.run(url, smoke=smoke)),
        "rebuild": lambda: _collected(
            results, lambda collect: asyncio.run(builder_rebuild.run(url, rebuild, collect=collect))
        ),
        "memory": lambda: _extend(results, memory.run(smoke=smoke)),
        # on clusters of its own: the server at ``url`` is a single node
        "cluster-pubsub": lambda: _extend(results, cluster_pubsub.run(smoke=smoke)),
        "redis-read": lambda: _extend(results, redis_read.run(url, smoke=smoke)),
        "many-keys": lambda: _extend(results, many_keys.run(url, smoke=smoke)),
        "readers": lambda: _extend(results, scale_readers.run(url, smoke=smoke)),
        "end-to-end": lambda: _extend(results, end_to_end.run(url, smoke=smoke)),
        "eager-refresh": lambda: _extend(results, eager_refresh.run(url, smoke=smoke)),
        "tags": lambda: _extend(results, tags.run(url, smoke=smoke)),
    }
    for part, module in SLOTS.items():
        steps[part] = functools.partial(_slot, module, url, smoke, results)
    for number, part in enumerate(parts):
        if number:
            print()
        status = steps[part]() or status
        sys.stdout.flush()
    return status, results


def _extend(results: list[Finding], more: Sequence[Finding]) -> int:
    results += more
    return 0


def _collected(results: list[Finding], measure: Callable[[list[Result]], int]) -> int:
    """``measure(collect)``, for the parts that append their results to a list they are given."""
    collect: list[Result] = []
    try:
        return measure(collect)
    finally:
        results += collect


def _slot(module: str, url: str, smoke: bool, results: list[Finding]) -> int:
    """Run ``benchmarks.<module>`` if this tree has it."""
    name = f"{__package__}.{module}"
    try:
        part = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        print(f"benchmarks/{module}.py is not in this tree: its part is skipped")
        return 0
    takes_url = "url" in inspect.signature(part.run).parameters
    return _extend(results, part.run(url, smoke=smoke) if takes_url else part.run(smoke=smoke))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [part for part in PARTS if args.only is None or part in args.only]
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])

    def measure(url: str) -> tuple[str, int, list[Finding]]:
        return (asyncio.run(_server_name(url)), *run_parts(url, parts, args.smoke))

    server, status, findings = on_server(args.url, measure)
    results, tables, curves = split(findings)
    out = args.out or (Path(tempfile.mkdtemp(prefix="redicache-bench-")) if args.smoke else HERE)
    out.mkdir(parents=True, exist_ok=True)
    env = report.environment({"server": server})
    markdown, chart = report.write_report(
        results, out, env=env, command=command.strip(), tables=tables, curves=curves
    )
    print()
    print(
        f"{sum(r.met is True for r in results)} of {sum(r.met is not None for r in results)} "
        "targets met"
    )
    for result in results:
        if result.met is False:
            print(
                f"  NOT met: {result.part}: {result.name}: {result.figure_text} "
                f"(target {result.target_text})"
            )
    print(f"wrote {markdown} and {chart}")
    return status


if __name__ == "__main__":
    sys.exit(main())
