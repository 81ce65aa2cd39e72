"""More events than a listener keeps up with: the server cuts the subscriber at its
``client-output-buffer-limit`` for pub/sub, and the client flushes its local layer (it cannot
know which invalidations it lost) and subscribes again.

The limit is made tiny with ``CONFIG SET`` on the session's server (and put back), and the
flood is one script that announces thousands of writes at once, as the write script announces
one (stream entry, then publish): the subscriber's output buffer overflows before the server
writes any of it to the socket, so the cut does not depend on the machine's speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from redicache_async.lua import STREAM_MAXLEN
from tests.conftest import MakeCache
from tests.helpers import wait_until

#: A hard limit far below what the flood queues; no soft limit.
TINY_LIMIT = "pubsub 16kb 0 0"
#: More entries than the stream keeps: the missed events cannot be replayed.
FLOOD = 2 * STREAM_MAXLEN + 1_000

# KEYS[1]: stream, KEYS[2]: channel. ARGV[1]: how many, ARGV[2]: the stream's cap, ARGV[3]: origin.
_FLOOD = """
for n = 1, tonumber(ARGV[1]) do
  local event = '{"op":"set","key":"flood' .. n .. '","origin":"' .. ARGV[3] .. '","version":' .. n
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', event .. '}')
  redis.call('PUBLISH', KEYS[2], event .. ',"id":"' .. id .. '"}')
end
return 0
"""


@pytest.fixture
async def tiny_pubsub_buffers(redis: aioredis.Redis) -> AsyncIterator[None]:
    saved = str(
        (await redis.config_get("client-output-buffer-limit"))["client-output-buffer-limit"]
    )
    await redis.config_set("client-output-buffer-limit", TINY_LIMIT)
    try:
        yield
    finally:
        await redis.config_set("client-output-buffer-limit", saved)


async def _cut_subscribers(redis: aioredis.Redis) -> int:
    info = await redis.info("stats")
    return int(info.get("client_output_buffer_limit_disconnections", -1))


async def test_a_flood_past_the_output_buffer_limit_flushes_the_local_layer_and_recovers(
    make_cache: MakeCache, redis: aioredis.Redis, namespace: str, tiny_pubsub_buffers: None
) -> None:
    subject, writer = await make_cache(), await make_cache()
    await writer.set("k", "v1")
    assert await subject.get("k") == "v1"
    assert subject._local.peek("k") is not None
    cut_before = await _cut_subscribers(redis)
    flood = redis.register_script(_FLOOD)
    await flood(
        keys=[f"{namespace}:stream", f"{namespace}:events"],
        args=[FLOOD, STREAM_MAXLEN, "elsewhere"],
    )
    # The server cut the subscriber; the listener came back and, unable to replay, flushed.
    await wait_until(lambda: subject.stats().local_flushes >= 1, what="the flush on resubscribe")
    if cut_before >= 0:  # servers before Redis 7.0 do not count the cuts
        assert await _cut_subscribers(redis) > cut_before
    assert subject._local.peek("k") is None  # not fresh any more: it may have missed a write
    # ... and it listens again: a copy read now is dropped by the next write's event.
    assert await subject.get("k") == "v1"
    assert subject._local.peek("k") is not None
    await writer.set("k", "v2")
    await wait_until(lambda: subject._local.peek("k") is None, what="the next event")
    assert await subject.get("k") == "v2"
