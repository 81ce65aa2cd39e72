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
