"""The FastAPI integration, end to end: real uvicorn servers on loopback ports, a real HTTP
client (httpx), the session's Redis; and the lifespan alone through asgi-lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.requests import Request

from redicache_async import CacheBuilder, Target
from redicache_async.integrations.fastapi import (
    BuilderDep,
    CacheDep,
    cache_lifespan,
    get_builder,
    get_cache,
)
from redicache_async.integrations.opentelemetry import CacheMetrics
from redicache_async.keys import KeySpace
from redicache_async.status import read_status
from redicache_async.testing import free_port

from .helpers import Fetch, figures, key, wait_until

REPORT = "report"


def make_app(
    redis: Any,
    namespace: str,
    fetch: Fetch,
    *,
    builder: bool = True,
    metrics: CacheMetrics | None = None,
) -> FastAPI:
    """An app whose ``/pages/{key}`` is cached with get_or_init and whose ``/report`` is a
    builder's target (when ``builder``); its cache and builder reported to ``metrics``."""

    async def setup(builder: CacheBuilder) -> None:
        await builder.register(
            lambda: [{"id": 1, "title": "first"}],
            targets=[Target(f"{namespace}-report", "list")],
            refresh_interval=60,
            name=REPORT,
        )

    cache_state = cache_lifespan(
        redis, namespace=namespace, setup_builder=setup if builder else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The README's way to reach the cache at start-up: wrap cache_lifespan.
        async with cache_state(app) as state:
            if metrics is not None:
                metrics.observe(state["redicache_cache"])
                if builder:
                    metrics.observe(state["redicache_builder"])
            yield state

    app = FastAPI(lifespan=lifespan)

    @app.get("/pages/{key}")
    async def page(key: str, cache: CacheDep) -> Any:
        return await cache.get_or_init(key, fetch, ttl=60)

    @app.get("/report")
    async def report(cache: CacheDep, builder: BuilderDep) -> Any:
        await builder.refresh(REPORT)  # built by now, whichever instance leads
        return await cache.get_target(f"{namespace}-report")

    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` under a real uvicorn server on a free loopback port; its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10, what="uvicorn")
        if task.done():
            task.result()  # it failed to start: say why
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task


async def test_a_cold_key_is_fetched_once_across_two_servers_under_concurrent_requests(
    redis_url: str, namespace: str
) -> None:
    fetch = Fetch({"title": "home"}, delay=0.2)
    lease = KeySpace(namespace).lease(REPORT)
    async with (
        serving(make_app(redis_url, namespace, fetch)) as one,
        serving(make_app(redis_url, namespace, fetch)) as two,
        httpx.AsyncClient(timeout=10) as http,
    ):
        replies = await asyncio.gather(
            *(http.get(f"{base}/pages/home") for base in (one, two) for _ in range(20))
        )
        assert [r.status_code for r in replies] == [200] * 40
        assert {r.text for r in replies} == {'{"title":"home"}'}
        assert fetch.calls == 1  # 2 apps (2 clients) x 20 concurrent requests
        report = await http.get(f"{one}/report")
        assert report.json() == [{"id": 1, "title": "first"}]
        async with aioredis.Redis.from_url(redis_url) as r:
            assert await r.exists(lease) == 1
    # Both servers have shut down: their builders released the lease (no one leads now).
    async with aioredis.Redis.from_url(redis_url) as r:
        assert await r.exists(lease) == 0


async def test_metrics_and_the_operator_view_follow_real_traffic(
    redis_url: str, namespace: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fetch = Fetch({"title": "home"}, delay=0.2)
    try:
        with CacheMetrics(provider) as metrics:
            async with (
                serving(make_app(redis_url, namespace, fetch, metrics=metrics)) as one,
                serving(make_app(redis_url, namespace, fetch, metrics=metrics)) as two,
                httpx.AsyncClient(timeout=10) as http,
            ):
                replies = await asyncio.gather(
                    *(http.get(f"{base}/pages/home") for base in (one, two) for _ in range(20))
                )
                assert [r.status_code for r in replies] == [200] * 40
                assert (await http.get(f"{two}/report")).status_code == 200
                again = await asyncio.gather(
                    *(http.get(f"{base}/pages/home") for base in (one, two))
                )
                assert [r.json() for r in again] == [{"title": "home"}] * 2

                found = figures(reader)
                assert found[key("redicache.client.fetches", namespace)] == fetch.calls == 1
                local_hits = key("redicache.client.hits", namespace, {"redicache.layer": "local"})
                assert found[local_hits] >= 2  # the last two requests, one per app
                builds = key(
                    "redicache.builder.builds", namespace, {"redicache.outcome": "success"}
                )
                assert found[builds] >= 1
                leading = key("redicache.builder.registration.leading", namespace)
                assert found[leading] == 1  # two apps, one leader

                async with aioredis.Redis.from_url(redis_url) as r:
                    status = await read_status(r, namespace)
                assert [k.key for k in status.keys] == ["home"]
                assert status.keys[0].ttl is not None
                assert 0 < status.keys[0].ttl <= 60
                [registration] = status.registrations
                assert registration.leader is not None
                assert registration.builds >= 1
                assert registration.last_error is None
        assert figures(reader) == {}  # both apps closed their clients, then metrics closed
    finally:
        provider.shutdown()


async def test_the_lifespan_opens_and_closes_the_cache(redis_url: str, namespace: str) -> None:
    channel = KeySpace(namespace).channel
    async with aioredis.Redis.from_url(redis_url) as r:

        async def listeners() -> int:
            return int(dict(await r.pubsub_numsub(channel))[channel.encode()])

        fetch = Fetch({"title": "home"})
        # A client of our own: the lifespan leaves it open.
        app = make_app(r, namespace, fetch, builder=False)
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://app"
            ) as http,
        ):
            assert await listeners() == 1  # subscribed before the first request
            assert (await http.get("/pages/home")).json() == {"title": "home"}
            with pytest.raises(RuntimeError, match="no CacheBuilder"):  # none was set up
                await http.get("/report")
        assert await listeners() == 0
        assert await r.ping()  # still the caller's, still open
        assert fetch.calls == 1


async def test_an_app_starts_and_answers_while_redis_is_unreachable(namespace: str) -> None:
    # An unreachable Redis is an outage, not a configuration error: the app starts and
    # answers without Redis (fetching in the process); the autouse fixture checks that the
    # shutdown leaves no task behind.
    fetch = Fetch({"title": "home"})
    app = make_app("redis://127.0.0.1:1/0", namespace, fetch, builder=False)
    async with (
        LifespanManager(app, startup_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://app"
        ) as http,
    ):
        assert (await http.get("/pages/home")).json() == {"title": "home"}
        assert fetch.calls == 1


async def test_the_dependencies_say_what_is_missing() -> None:
    request = Request({"type": "http", "state": {}})
    with pytest.raises(RuntimeError, match="lifespan=cache_lifespan"):
        await get_cache(request)
    with pytest.raises(RuntimeError, match="setup_builder="):
        await get_builder(request)
