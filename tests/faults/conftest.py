"""Fixtures of the fault suites that put :class:`FaultProxy` between a client and the session's
server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.faults.proxy import FaultProxy


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    """A proxy in front of the session's server."""
    port = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


@pytest.fixture
async def faulted(proxy: FaultProxy) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's server, through :func:`proxy`."""
    client = aioredis.Redis.from_url(proxy.url)
    yield client
    await client.aclose()
