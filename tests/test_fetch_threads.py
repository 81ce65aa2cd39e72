"""Plain (blocking) fetch functions run in threads of the library's own, never in the loop's
default executor: a hung fetch holds no slot once its caller has stopped waiting, cannot keep
the process from exiting, and ``fetch_threads`` bounds how many run at once."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheBuilder, CacheClient, FetchTimeout, InvalidArgumentError, Target
from redicache_async.fetching import THREAD_NAME

from .conftest import MakeCache

#: How long a test lets a thread wait for a peer before calling it alone: long enough that two
#: threads started together always meet, however loaded the machine.
MEETING_SECONDS = 3.0


def _join_fetch_threads() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith(THREAD_NAME):
            thread.join(timeout=30)


async def test_fetch_threads_bounds_the_plain_fetches_that_run_at_once(
    make_cache: MakeCache,
) -> None:
    """Two plain fetches that wait for each other at a barrier meet when two threads are
    allowed, and each goes alone when only one is: the second never starts beside the first."""

    async def two_fetches(threads: int) -> list[str]:
        cache = await make_cache(fetch_threads=threads, fetch_timeout=None)
        barrier = threading.Barrier(2, timeout=MEETING_SECONDS)

        def fetch() -> str:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return "alone"
            return "met"

        return list(
            await asyncio.gather(
                cache.get_or_init(f"a{threads}", fetch), cache.get_or_init(f"b{threads}", fetch)
            )
        )

    assert await two_fetches(2) == ["met", "met"]
    assert await two_fetches(1) == ["alone", "alone"]


async def test_hung_plain_fetches_do_not_starve_the_others(make_cache: MakeCache) -> None:
    """Two hung fetches fill both slots until their callers time out; the slots are then free,
    although their threads still run, and a third key's fetch runs at once."""
    cache = await make_cache(fetch_threads=2, fetch_timeout=1.0)
    release = threading.Event()
    try:

        def hang() -> str:
            release.wait()
            return "late"

        for outcome in await asyncio.gather(
            cache.get_or_init("h1", hang), cache.get_or_init("h2", hang), return_exceptions=True
        ):
            assert isinstance(outcome, FetchTimeout)
        hung = [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]
        assert len(hung) == 2, "the hung fetches' threads are still running"
        assert await cache.get_or_init("fresh", lambda: "on time") == "on time"
    finally:
        release.set()
        await asyncio.to_thread(_join_fetch_threads)


async def test_a_plain_fetch_sees_its_callers_context(make_cache: MakeCache) -> None:
    cache = await make_cache()
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-42")

    def fetch() -> list[str]:
        return [request_id.get("none"), threading.current_thread().name]

    assert await cache.get_or_init("ctx", fetch) == ["r-42", f"{THREAD_NAME}:ctx"]


def test_a_hung_plain_fetch_does_not_keep_the_process_from_exiting(redis_url: str) -> None:
    """``asyncio.run`` joins the loop's default executor on its way out: a fetch hung there
    would keep the process alive for ever. The library's threads are not joined."""
    program = textwrap.dedent(
        f"""
        import asyncio, threading
        import redis.asyncio as aioredis
        from redicache_async import CacheClient, FetchTimeout

        async def main():
            r = aioredis.Redis.from_url({redis_url!r})
            async with CacheClient(r, namespace="exit-test", fetch_timeout=0.2) as cache:
                try:
                    await cache.get_or_init("hung", threading.Event().wait)
                except FetchTimeout:
                    print("timed out", flush=True)
            await r.aclose()

        asyncio.run(main())
        print("exited", flush=True)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit with a fetch still hung: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["timed", "out", "exited"]


async def test_the_builder_runs_plain_fetches_in_its_own_threads(
    redis: aioredis.Redis, namespace: str
) -> None:
    async with CacheBuilder(redis, namespace=namespace, fetch_threads=1) as builder:

        def fetch() -> list[str]:
            return [threading.current_thread().name]

        await builder.register(
            fetch, name="threads", targets=[Target(f"{namespace}:t", "list")], refresh_interval=60
        )
        await builder.wait_built("threads")
    target = await redis.lrange(f"{namespace}:t", 0, -1)
    assert target == [f'"{THREAD_NAME}:threads"'.encode()]


@pytest.mark.parametrize("threads", [0, -1])
def test_fetch_threads_must_be_positive(redis: aioredis.Redis, threads: int) -> None:
    for make in (CacheClient, CacheBuilder):
        with pytest.raises(InvalidArgumentError, match="fetch_threads"):
            make(redis, fetch_threads=threads)
