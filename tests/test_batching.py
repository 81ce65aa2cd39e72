"""Auto-batching of reads (``batching.py``): what is sent together, in which order, and what
each caller gets when a send fails or a caller is cancelled; then the client's reads batched
on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from redicache_async.batching import ReadBatcher

from .conftest import MakeCache
from .helpers import GatedRedis, script_calls, wait_until
from .values import reads_value


class Sender:
    """Records each batch; its replies wait at ``gate`` while that is closed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.sent = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: BaseException | None = None
        self.short = False

    async def __call__(self, keys: list[str]) -> list[str]:
        self.batches.append(list(keys))
        self.sent.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        if self.short:
            return ["only one"]
        return [f"value of {key}" for key in keys]


async def _busy(
    sender: Sender, max_batch: int = 256
) -> tuple[ReadBatcher[str, str], asyncio.Task[str]]:
    """A batcher whose read of "k0" is in flight (held at the sender's gate)."""
    batcher: ReadBatcher[str, str] = ReadBatcher(sender, max_batch=max_batch)
    sender.gate.clear()
    first = asyncio.create_task(batcher.read("k0"))
    await _in_flight(sender, 1)
    return batcher, first


async def _in_flight(sender: Sender, batches: int) -> None:
    """Wait until ``batches`` sends have started."""
    while len(sender.batches) < batches:
        sender.sent.clear()
        await sender.sent.wait()


async def test_a_lone_read_is_sent_at_once_in_the_callers_task() -> None:
    turns: list[str] = []
    seen: list[tuple[list[str], int]] = []

    async def send(keys: list[str]) -> list[str]:
        seen.append((list(turns), len(asyncio.all_tasks())))
        return [f"value of {key}" for key in keys]

    batcher: ReadBatcher[str, str] = ReadBatcher(send)
    tasks = len(asyncio.all_tasks())
    asyncio.get_running_loop().call_soon(turns.append, "the loop turned")
    assert await batcher.read("a") == "value of a"
    # sent before the loop turned once, from the caller's own task
    assert seen == [([], tasks)]
    assert batcher.in_flight == 0


async def test_reads_issued_while_one_is_in_flight_go_together_in_order() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    keys = [f"k{i}" for i in range(1, 64)]
    rest = asyncio.gather(*(batcher.read(key) for key in keys))
    await _in_flight(sender, 2)
    sender.gate.set()
    assert await first == "value of k0"
    assert await rest == [f"value of {key}" for key in keys]
    assert sender.batches == [["k0"], keys]
    assert batcher.in_flight == 0


async def test_the_callers_of_a_batch_that_read_again_go_together_with_its_sender() -> None:
    """Callers that read in a loop: when a batch answers, its sender's task runs first and
    reads again before the others have woken. Its read waits for them, so that they all go in
    one send, not its read alone and then theirs."""
    sender = Sender()
    batcher, first = await _busy(sender)
    answered: list[str] = []

    async def reads_twice(key: str) -> None:
        answered.append(await batcher.read(key))
        answered.append(await batcher.read(f"{key}+"))

    keys = [f"k{i}" for i in range(1, 8)]
    callers = asyncio.gather(*(reads_twice(key) for key in keys))
    await _in_flight(sender, 2)
    sender.gate.set()
    await first
    await callers
    again = [f"{key}+" for key in keys]
    assert sender.batches == [["k0"], keys, again]
    assert sorted(answered) == sorted(f"value of {key}" for key in keys + again)
    assert batcher.in_flight == 0


async def test_callers_of_one_key_share_its_read() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    others = asyncio.gather(*(batcher.read(key) for key in ["k0", "b", "k0", "b"]))
    await _in_flight(sender, 2)
    sender.gate.set()
    assert await first == "value of k0"
    assert await others == ["value of k0", "value of b", "value of k0", "value of b"]
    assert sender.batches == [["k0"], ["b"]]


async def test_max_batch_caps_a_send() -> None:
    sender = Sender()
    batcher, first = await _busy(sender, max_batch=3)
    keys = [f"k{i}" for i in range(1, 8)]
    rest = asyncio.gather(*(batcher.read(key) for key in keys))
    await _in_flight(sender, 4)
    sender.gate.set()
    await first
    assert await rest == [f"value of {key}" for key in keys]
    assert sender.batches == [["k0"], ["k1", "k2", "k3"], ["k4", "k5", "k6"], ["k7"]]
    with pytest.raises(ValueError, match="max_batch"):
        ReadBatcher(sender, max_batch=0)


async def test_a_failed_send_fails_every_caller_of_its_batch_and_no_other() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    sender.error = ConnectionError("lost")
    batch = [asyncio.create_task(batcher.read(key)) for key in ("k1", "k2", "k1")]
    await _in_flight(sender, 2)
    sender.gate.set()
    for task in (first, *batch):
        with pytest.raises(ConnectionError, match="lost"):
            await task
    sender.error = None
    assert await batcher.read("k1") == "value of k1"
    assert batcher.in_flight == 0


async def test_a_key_whose_read_fails_fails_only_its_own_callers() -> None:
    sent: list[list[str]] = []

    async def send(keys: list[str]) -> list[str]:
        sent.append(list(keys))
        await asyncio.sleep(0)  # in flight a while: the next reads gather into one batch
        if "bad" in keys:
            raise ValueError("bad cannot be read")
        return [f"value of {key}" for key in keys]

    batcher: ReadBatcher[str, str] = ReadBatcher(send)
    results = await asyncio.gather(
        *(batcher.read(key) for key in ("k0", "k1", "bad", "k2", "bad")), return_exceptions=True
    )
    assert results[:2] == ["value of k0", "value of k1"]
    assert results[3] == "value of k2"
    for result in (results[2], results[4]):
        assert isinstance(result, ValueError)
    assert sent[:2] == [["k0"], ["k1", "bad", "k2"]]
    assert sorted(sent[2:]) == [["bad"], ["k1"], ["k2"]]  # each read again alone, once
    assert batcher.in_flight == 0


async def test_a_cancelled_caller_leaves_its_batch_to_the_others() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    batch = {key: asyncio.create_task(batcher.read(key)) for key in ("k1", "k2", "k3")}
    await _in_flight(sender, 2)
    batch["k2"].cancel()  # k2 waits on the batch that k1's caller sends
    await asyncio.sleep(0)
    sender.gate.set()
    assert await first == "value of k0"
    assert await batch["k1"] == "value of k1"
    assert await batch["k3"] == "value of k3"
    with pytest.raises(asyncio.CancelledError):
        await batch["k2"]
    assert sender.batches == [["k0"], ["k1", "k2", "k3"]]


async def test_when_the_sender_is_cancelled_the_others_read_again() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    leader, k2, k1_again = (asyncio.create_task(batcher.read(k)) for k in ("k1", "k2", "k1"))
    await _in_flight(sender, 2)
    leader.cancel()  # k1's first caller sends the batch: cancelled mid-send
    with pytest.raises(asyncio.CancelledError):
        await leader
    sender.gate.set()
    assert await first == "value of k0"
    assert await k2 == "value of k2"
    assert await k1_again == "value of k1"
    assert sender.batches[:2] == [["k0"], ["k1", "k2"]]
    assert sorted(sender.batches[2]) == ["k1", "k2"]  # read again, together
    assert len(sender.batches) == 3
    assert batcher.in_flight == 0


async def test_a_sender_cancelled_before_sending_hands_its_batch_back() -> None:
    sender = Sender()
    batcher, first = await _busy(sender)
    leader = asyncio.create_task(batcher.read("k1"))
    await asyncio.sleep(0)  # k1's caller now forms a batch and yields once
    member = asyncio.create_task(batcher.read("k2"))
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    sender.gate.set()
    assert await member == "value of k2"
    await first
    assert ["k1", "k2"] not in sender.batches
    assert batcher.in_flight == 0


async def test_a_wrong_number_of_results_is_an_error_for_everyone() -> None:
    sender = Sender()
    sender.short = True
    batcher, first = await _busy(sender)
    second, third = (asyncio.create_task(batcher.read(k)) for k in ("b", "c"))
    await _in_flight(sender, 2)
    sender.gate.set()
    assert await first == "only one"
    for task in (second, third):
        with pytest.raises(RuntimeError, match="a batch of 2 reads got 1 results"):
            await task


# -- the client's reads, batched, on a real server -------------------------------------------


async def test_concurrent_misses_of_distinct_keys_are_one_command(
    make_cache: MakeCache, redis: aioredis.Redis, redis_url: str
) -> None:
    writer = await make_cache()
    keys = [f"k{i}" for i in range(64)]
    for i, key in enumerate(keys):
        if i % 3:  # every third key has no value
            await writer.set(key, {"n": i})
    gated = GatedRedis.connect(redis_url)
    reader = await make_cache(gated, local_max_entries=0)
    try:
        await reader.get("warm-up")
        before = await script_calls(redis)
        gated.holds = reads_value
        gated.gate.clear()
        first = asyncio.create_task(reader.get(keys[0]))
        await gated.held.wait()
        reads = asyncio.gather(*(reader.get(key) for key in keys[1:]))
        # let the held read go once the others have run on the server (their replies are held)
        await wait_until(
            lambda: _at_least(script_calls(redis), before + 1), what="the batch to be read"
        )
        gated.gate.set()
        rest = await asyncio.wait_for(reads, 5)
        assert await first is None
        assert rest == [{"n": i} if i % 3 else None for i in range(1, 64)]
        # the lone read (a GET), then the other 63 in one script
        assert await script_calls(redis) - before == 1
        stats = reader.stats()
        assert (stats.redis_hits, stats.misses) == (42, 1 + 22)  # with the warm-up's miss
    finally:
        await reader.aclose()
        await gated.aclose(close_connection_pool=True)


async def test_get_or_init_reads_of_warm_keys_are_batched_and_cold_ones_fetched(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    writer = await make_cache()
    for i in range(0, 32, 2):
        await writer.set(f"k{i}", i)
    reader = await make_cache()
    await reader.get("warm-up")
    calls: list[str] = []

    def fetch_for(key: str) -> Callable[[], Awaitable[str]]:
        async def fetch() -> str:
            calls.append(key)
            return f"fetched {key}"

        return fetch

    results = await asyncio.gather(
        *(reader.get_or_init(f"k{i}", fetch_for(f"k{i}")) for i in range(32))
    )
    assert results == [i if i % 2 == 0 else f"fetched k{i}" for i in range(32)]
    assert sorted(calls) == sorted(f"k{i}" for i in range(1, 32, 2))
    assert reader.stats().redis_hits == 16
    # each key is local now: a second round does no I/O
    before = await script_calls(redis)
    again = await asyncio.gather(*(reader.get_or_init(f"k{i}", fetch_for("-")) for i in range(32)))
    assert again == results
    assert await script_calls(redis) == before


async def test_an_invalidation_during_a_batched_read_keeps_the_old_value_out(
    make_cache: MakeCache, redis: aioredis.Redis, redis_url: str
) -> None:
    writer = await make_cache()
    await writer.set("a", "old a")
    await writer.set("b", "old b")
    gated = GatedRedis.connect(redis_url)
    reader = await make_cache(gated)
    try:
        await reader.get("warm-up")
        before = await script_calls(redis)
        gated.holds = reads_value
        gated.gate.clear()
        lone = asyncio.create_task(reader.get("warm-up-2"))
        await gated.held.wait()
        batch = asyncio.gather(reader.get("a"), reader.get("b"))
        # the batch has run on the server (its reply is held back, like the lone read's) ...
        await wait_until(
            lambda: _equals(script_calls(redis), before + 1), what="the batch to be read"
        )
        # ... when the write of "a" is announced
        received = reader.stats().invalidations_received
        await writer.set("a", "new a")
        await wait_until(lambda: reader.stats().invalidations_received > received, what="the event")
        gated.gate.set()
        await lone
        assert list(await batch) == ["old a", "old b"]  # the answers read before the write
        # "a" was not kept (it is older than the event); "b" was
        assert await reader.get("a") == "new a"
        assert reader.stats().local_hits == 0
        assert await reader.get("b") == "old b"
        assert reader.stats().local_hits == 1
    finally:
        await reader.aclose()
        await gated.aclose(close_connection_pool=True)


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _at_least(value: Awaitable[int], expected: int) -> bool:
    return await value >= expected


async def test_reads_reload_their_script_after_a_script_flush(
    make_cache: MakeCache, redis: aioredis.Redis
) -> None:
    writer = await make_cache()
    await writer.set("k", "v")
    reader = await make_cache(local_max_entries=0)
    assert await reader.get("k") == "v"
    await redis.script_flush()  # as a restarted or failed-over server would have it
    assert await reader.get("k") == "v"
    assert await reader.get_or_init("k", _never) == "v"


async def _never() -> str:
    raise AssertionError("the key has a value: nothing may be fetched")
