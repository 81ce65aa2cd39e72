"""CacheHandle: functions decorated at import time, answered through the client that an app's
lifespan opens later (FastAPI's ``cache_lifespan``, aiohttp's ``cache_context``)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from redicache_async import (
    CacheClient,
    CacheHandle,
    ClientClosedError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from redicache_async.integrations.aiohttp import cache_context
from redicache_async.integrations.fastapi import cache_lifespan

from .conftest import MakeCache

#: Like a module's global: the handle exists before any client does.
handle = CacheHandle("reports")
calls: list[str] = []


@handle.cached(ttl=60)
async def report(day: str) -> dict[str, Any]:
    calls.append(day)
    return {"day": day, "n": len(calls)}


@pytest.fixture(autouse=True)
def _fresh_module_state() -> Any:
    calls.clear()
    yield
    handle.unbind()


async def test_an_unbound_handle_refuses_calls_and_never_runs_the_function() -> None:
    with pytest.raises(ClientClosedError, match="'reports' is not bound"):
        await report("d1")
    with pytest.raises(ClientClosedError):
        await report.invalidate("d1")
    assert calls == []
    assert report.key("d1") == f"{__name__}.report(day='d1')"  # no client needed for a key


async def test_a_bound_handle_answers_through_its_client(
    make_cache: MakeCache, namespace: str, redis: aioredis.Redis
) -> None:
    cache = await make_cache()
    handle.bind(cache)
    assert handle.client is cache
    first = await report("d1")
    assert await report(day="d1") == first
    assert calls == ["d1"]
    assert await cache.get(report.key("d1")) == first  # the client's own entry
    await report.invalidate("d1")
    assert await cache.get(report.key("d1")) is None
    handle.unbind()
    with pytest.raises(ClientClosedError):
        await report("d1")  # a local copy is the client's, not the handle's, once unbound
    assert calls == ["d1"]


async def test_two_processes_with_their_own_handles_fetch_once(make_cache: MakeCache) -> None:
    """Each process imports the module and binds its own handle: the default key is the same
    in both, so a missing entry is fetched once across them."""
    other = CacheHandle("reports, in another process")
    function = report.__wrapped__  # type: ignore[attr-defined]  # the module's own function
    there = other.cached(ttl=60)(function)
    handle.bind(await make_cache())
    other.bind(await make_cache())
    assert await asyncio.gather(report("d1"), there("d1")) == [{"day": "d1", "n": 1}] * 2
    assert calls == ["d1"]


async def test_binding_is_checked(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    handle.bind(a)
    handle.bind(a)  # the same client again: nothing changes
    with pytest.raises(InvalidArgumentError, match="bound to another client"):
        handle.bind(b)
    assert handle.client is a
    with pytest.raises(InvalidArgumentTypeError):
        handle.bind("redis://127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError):
        CacheHandle(name=1)  # type: ignore[arg-type]
    for factory in (cache_lifespan, cache_context):
        with pytest.raises(InvalidArgumentTypeError, match="bind must be a CacheHandle"):
            factory("redis://127.0.0.1", namespace="n", bind=a)  # type: ignore[arg-type]
        # The options are one TypedDict: a keyword it lacks, or no namespace, is refused in
        # the factory's own name when the app is declared.
        with pytest.raises(TypeError, match=rf"{factory.__name__}\(\) got an unexpected .* 'bnd'"):
            factory("redis://127.0.0.1", namespace="n", bnd=handle)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=rf"{factory.__name__}\(\) missing .* 'namespace'"):
            factory("redis://127.0.0.1")  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match="ttl"):
        handle.cached(ttl=-1)  # checked at decoration, as the client's own
    assert repr(handle) == "<CacheHandle 'reports' bound>"


async def test_fastapi_lifespan_binds_the_handle_while_the_app_runs(
    redis_url: str, namespace: str
) -> None:
    app = FastAPI(lifespan=cache_lifespan(redis_url, namespace=namespace, bind=handle))

    @app.get("/reports/{day}")
    async def get_report(day: str) -> Any:
        return await report(day)

    async with LifespanManager(app) as manager:
        assert handle.is_bound
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answers = [(await http.get("/reports/d1")).json() for _ in range(3)]
        assert answers == [{"day": "d1", "n": 1}] * 3
        bound = handle.client
    assert not handle.is_bound  # unbound before its client closed
    with pytest.raises(ClientClosedError):
        await bound.get("anything")
    with pytest.raises(ClientClosedError):
        await report("d1")
    assert calls == ["d1"]


async def test_aiohttp_cleanup_context_binds_the_handle_while_the_app_runs(
    redis: aioredis.Redis, namespace: str
) -> None:
    async def get_report(request: web.Request) -> web.Response:
        return web.json_response(await report(request.match_info["day"]))

    app = web.Application()
    app.cleanup_ctx.append(cache_context(redis, namespace=namespace, bind=handle))
    app.router.add_get("/reports/{day}", get_report)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        TestClient[web.Request, web.Application](server) as client,
    ):
        assert isinstance(handle.client, CacheClient)
        for _ in range(3):
            assert await (await client.get("/reports/d2")).json() == {"day": "d2", "n": 1}
    assert not handle.is_bound
    assert calls == ["d2"]
    assert await redis.ping()  # the caller's Redis client stays open
