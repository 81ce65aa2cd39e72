"""Logging through an outage: one message per kind and interval, with the count of the others."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from redicache_async import CacheClient
from redicache_async.logs import Throttle
from redicache_async.testing import free_port

from .helpers import wait_until


def test_a_repeated_message_goes_out_once_per_interval_with_the_count_of_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    throttle = Throttle(30.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="redicache_async"):
        assert throttle.log(logging.WARNING, "lost", "lost its connection: %s", "refused")
        for _ in range(5):
            now[0] += 1
            assert not throttle.log(logging.WARNING, "lost", "lost its connection: %s", "refused")
        assert throttle.log(logging.WARNING, "other", "another kind")  # keys are apart
        now[0] += 30
        assert throttle.log(logging.WARNING, "lost", "lost its connection: %s", "refused")
        throttle.reset("lost")
        assert throttle.log(logging.WARNING, "lost", "lost its connection: %s", "again")
    assert [r.getMessage() for r in caplog.records] == [
        "lost its connection: refused",
        "another kind",
        "lost its connection: refused (5 more like this in the last 30 s)",
        "lost its connection: again",
    ]


async def test_a_listener_retrying_through_an_outage_logs_once(
    caplog: pytest.LogCaptureFixture, namespace: str
) -> None:
    # Nothing listens on this port: every attempt is refused at once, and the listener retries
    # with back-off (50 ms, 100 ms, ...).
    r = aioredis.Redis(host="127.0.0.1", port=free_port())
    try:
        with caplog.at_level(logging.WARNING, logger="redicache_async"):
            async with CacheClient(r, namespace=namespace, redis_timeout=0.2) as cache:
                await wait_until(
                    lambda: cache._listener.reconnects >= 4, what="4 attempts to reconnect"
                )
        lost = [r for r in caplog.records if "listener lost its connection" in r.getMessage()]
        assert len(lost) == 1
    finally:
        await r.aclose()
