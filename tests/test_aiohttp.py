"""The aiohttp integration, end to end: aiohttp's test servers (real servers on loopback
ports) and clients, the session's Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from redicache_async import CacheBuilder, Target
from redicache_async.integrations.aiohttp import cache_context, get_builder, get_cache
from redicache_async.keys import KeySpace

from .helpers import Fetch

REPORT = "report"
Client = TestClient[web.Request, web.Application]


def make_app(redis: Any, namespace: str, fetch: Fetch, *, builder: bool = True) -> web.Application:
    """``/pages/{key}`` cached with get_or_init; ``/report``, a builder's target, served by a
    sub-application (it finds the cache of its parent)."""

    async def setup(builder: CacheBuilder) -> None:
        await builder.register(
            lambda: [{"id": 1, "title": "first"}],
            targets=[Target(f"{namespace}-report", "list")],
            refresh_interval=60,
            name=REPORT,
        )

    async def page(request: web.Request) -> web.Response:
        value = await get_cache(request).get_or_init(request.match_info["key"], fetch, ttl=60)
        return web.json_response(value)

    async def report(request: web.Request) -> web.Response:
        await get_builder(request).refresh(REPORT)
        return web.json_response(await get_cache(request).get_target(f"{namespace}-report"))

    app = web.Application()
    app.cleanup_ctx.append(
        cache_context(redis, namespace=namespace, setup_builder=setup if builder else None)
    )
    app.router.add_get("/pages/{key}", page)
    reports = web.Application()
    reports.router.add_get("/report", report)
    app.add_subapp("/reports", reports)
    return app


async def test_a_cold_key_is_fetched_once_across_two_servers_under_concurrent_requests(
    redis_url: str, namespace: str
) -> None:
    fetch = Fetch({"title": "home"}, delay=0.2)
    lease = KeySpace(namespace).lease(REPORT)
    async with (
        TestServer(make_app(redis_url, namespace, fetch), host="127.0.0.1") as one_server,
        TestServer(make_app(redis_url, namespace, fetch), host="127.0.0.1") as two_server,
        Client(one_server) as one,
        Client(two_server) as two,
    ):
        replies = await asyncio.gather(
            *(client.get("/pages/home") for client in (one, two) for _ in range(20))
        )
        assert [r.status for r in replies] == [200] * 40
        assert [await r.json() for r in replies] == [{"title": "home"}] * 40
        assert fetch.calls == 1  # 2 apps (2 clients) x 20 concurrent requests
        report = await one.get("/reports/report")
        assert await report.json() == [{"id": 1, "title": "first"}]
        async with aioredis.Redis.from_url(redis_url) as r:
            assert await r.exists(lease) == 1
    async with aioredis.Redis.from_url(redis_url) as r:
        assert await r.exists(lease) == 0  # both builders released it on cleanup


async def test_cleanup_closes_the_cache_and_leaves_the_callers_client_open(
    redis_url: str, namespace: str
) -> None:
    channel = KeySpace(namespace).channel
    async with aioredis.Redis.from_url(redis_url) as r:

        async def listeners() -> int:
            return int(dict(await r.pubsub_numsub(channel))[channel.encode()])

        app = make_app(r, namespace, Fetch({"title": "home"}), builder=False)
        async with TestServer(app, host="127.0.0.1") as server, Client(server) as client:
            assert await listeners() == 1
            assert await (await client.get("/pages/home")).json() == {"title": "home"}
            assert (await client.get("/reports/report")).status == 500  # no builder set up
        assert await listeners() == 0
        assert await r.ping()


def test_the_lookups_say_what_is_missing() -> None:
    app = web.Application()
    with pytest.raises(RuntimeError, match="cleanup_ctx"):
        get_cache(app)
    with pytest.raises(RuntimeError, match="setup_builder="):
        get_builder(app)
