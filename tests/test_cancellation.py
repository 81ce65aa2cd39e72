"""Cancellation is never lost in a Redis call (redis-py's sends under Python 3.11's wait_for can
drop it: see ``redicache_async/cancellation.py``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from redicache_async.cancellation import bounded

_ROUNDS = 20


async def _cancel_during_big_pipelines(
    redis: aioredis.Redis, key: str, run: Callable[[Awaitable[object]], Awaitable[object]]
) -> int:
    """Cancel a task that sends large pipelines through ``run``; how many cancellations were
    lost (the task went on as if not cancelled)."""
    lost = 0
    started = asyncio.Event()

    async def job() -> None:
        while True:
            pipe = redis.pipeline(transaction=False)
            for _ in range(20):
                pipe.rpush(key, *([b"x" * 40] * 1000))
            started.set()
            await run(pipe.execute())
            task = asyncio.current_task()
            assert task is not None
            if task.cancelling():
                return  # carried on past a cancellation

    await redis.ping()
    for _ in range(_ROUNDS):
        started.clear()
        task = asyncio.create_task(job())
        await started.wait()
        await asyncio.sleep(0)  # let the send begin
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            continue
        finally:
            await redis.delete(key)
        lost += 1
    return lost


async def test_bounded_raises_a_cancellation_that_redis_py_swallowed(
    redis: aioredis.Redis, namespace: str
) -> None:
    lost = await _cancel_during_big_pipelines(
        redis, f"{namespace}:big", lambda command: bounded(command, 5.0)
    )
    assert lost == 0


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12 fixed asyncio.wait_for")
async def test_control_redis_py_alone_loses_cancellations_on_python_3_11(
    redis: aioredis.Redis, namespace: str
) -> None:
    async def plain(command: Awaitable[object]) -> object:
        return await command

    assert await _cancel_during_big_pipelines(redis, f"{namespace}:big", plain) > 0


# -- bounded: the deadlines (one timer per loop, see cancellation._Watchdog) -----------------


async def test_bounded_times_out_and_the_caller_carries_on() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await bounded(asyncio.sleep(10), 0.05)
    assert 0.05 <= loop.time() - started < 1.0
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    assert await bounded(asyncio.sleep(0, "done"), 0.05) == "done"


async def test_bounded_calls_of_different_timeouts_each_keep_their_own() -> None:
    loop = asyncio.get_running_loop()

    async def timed(timeout: float) -> float:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await bounded(asyncio.sleep(10), timeout)
        return loop.time() - started

    # the long one first: the timer must be moved forward for the short ones
    elapsed = await asyncio.gather(timed(0.3), timed(0.05), timed(0.15), timed(0.05))
    for took, timeout in zip(elapsed, (0.3, 0.05, 0.15, 0.05), strict=True):
        assert timeout <= took < timeout + 0.1


async def test_bounded_lets_an_outer_cancellation_through() -> None:
    started = asyncio.Event()

    async def call() -> None:
        started.set()
        await bounded(asyncio.sleep(10), 5.0)

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_bounded_does_not_fire_after_the_call_ended() -> None:
    # Each bound is far beyond its call, so that a busy machine's stall cannot make a call time
    # out; then the test waits past every deadline, where a watch left behind would fire.
    for _ in range(20):
        assert await bounded(asyncio.sleep(0.001, 1), 0.2) == 1
    await asyncio.sleep(0.3)  # past every deadline: nothing may be cancelled now
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
