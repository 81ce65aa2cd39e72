"""OwnedTasks: the tasks of one object, none of which outlives its close."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from redicache_async import ClientClosedError
from redicache_async.tasks import OwnedTasks


async def test_a_task_is_refused_once_the_group_is_closed_and_its_coroutine_never_runs() -> None:
    tasks = OwnedTasks("Thing")
    await tasks.aclose()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    coro = work()
    with pytest.raises(ClientClosedError, match="this Thing is closed"):
        tasks.spawn(coro, name="late")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # not left pending
    assert not ran


async def test_aclose_cancels_every_task_and_waits_for_their_clean_up() -> None:
    tasks = OwnedTasks("Thing")
    cleaned: list[int] = []

    async def work(n: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a clean-up that needs the loop
            cleaned.append(n)

    running = [tasks.spawn(work(n), name=f"w{n}") for n in range(3)]
    await asyncio.sleep(0)
    await tasks.aclose()
    assert sorted(cleaned) == [0, 1, 2]
    assert all(task.cancelled() for task in running)
    assert len(tasks) == 0


async def test_one_task_failing_does_not_end_the_others() -> None:
    tasks = OwnedTasks("Thing")
    release = asyncio.Event()

    async def fail() -> None:
        raise ValueError("boom")

    async def wait() -> str:
        await release.wait()
        return "done"

    failing = tasks.spawn(fail(), name="fail")
    waiting = tasks.spawn(wait(), name="wait")
    with pytest.raises(ValueError, match="boom"):
        await failing
    release.set()
    assert await waiting == "done"
    await tasks.aclose()
