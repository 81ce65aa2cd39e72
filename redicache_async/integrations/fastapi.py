"""FastAPI (and Starlette): the cache opens with the app and closes with it.

::

    from fastapi import FastAPI
    from redicache_async import CacheClient
    from redicache_async.integrations.fastapi import CacheDep, cache_lifespan

    app = FastAPI(lifespan=cache_lifespan("redis://127.0.0.1:6379", namespace="myapp"))

    @app.get("/home")
    async def home(cache: CacheDep) -> dict:
        return await cache.get_or_init("cms::home", fetch_home, ttl=60)

``cache_lifespan`` starts a :class:`CacheClient` (its listener subscribed) before the app
takes requests, and, with ``setup_builder``, a :class:`CacheBuilder` that it hands to that
function to register its caches. At shutdown it closes them (the builder releases its leases,
so another instance leads at once) and, when it was given a URL, the Redis client it made.

Handlers get them with ``Depends(get_cache)`` / ``Depends(get_builder)``, or the ``CacheDep``
and ``BuilderDep`` annotations (in plain Starlette: ``await get_cache(request)``). They travel
in the lifespan state (``request.state``), so one process may serve several apps, each with
its own cache. To run other start-up work too, enter the lifespan inside your own::

    @asynccontextmanager
    async def lifespan(app):
        async with cache_lifespan(url, namespace="myapp")(app) as state:
            ...  # your start-up
            yield state
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Unpack

from fastapi import Depends
from starlette.requests import HTTPConnection

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient

from ._resources import CacheOptions, CacheSetup

__all__ = ["BuilderDep", "CacheDep", "cache_lifespan", "get_builder", "get_cache"]

#: Lifespan state keys (``request.state.<key>``).
CACHE_STATE = "redicache_cache"
BUILDER_STATE = "redicache_builder"


def cache_lifespan(
    redis: Any, **options: Unpack[CacheOptions]
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)``.

    ``redis``: a ``redis.asyncio`` client (a ``Redis``, ``RedisCluster`` or Sentinel master,
    left open for you) or a URL (its client is made and closed here). ``options``: see
    :class:`~redicache_async.integrations.CacheOptions` (``namespace`` is required).
    """
    setup = CacheSetup.declared("cache_lifespan", redis, options)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with setup.open() as resources:
            yield {CACHE_STATE: resources.cache, BUILDER_STATE: resources.builder}

    return lifespan


async def get_cache(connection: HTTPConnection) -> CacheClient:
    """The app's :class:`CacheClient` (a dependency: ``Depends(get_cache)``). A coroutine
    function, so that FastAPI calls it in the event loop, not in its thread pool."""
    cache = getattr(connection.state, CACHE_STATE, None)
    if not isinstance(cache, CacheClient):
        raise RuntimeError(
            "no CacheClient in this app's state: create the app with "
            "lifespan=cache_lifespan(...) (or enter it in your own lifespan)"
        )
    return cache


async def get_builder(connection: HTTPConnection) -> CacheBuilder:
    """The app's :class:`CacheBuilder` (``Depends(get_builder)``); there is one only when
    :func:`cache_lifespan` was given ``setup_builder``."""
    builder = getattr(connection.state, BUILDER_STATE, None)
    if not isinstance(builder, CacheBuilder):
        raise RuntimeError(
            "no CacheBuilder in this app's state: pass setup_builder= to cache_lifespan()"
        )
    return builder


CacheDep = Annotated[CacheClient, Depends(get_cache)]
"""A handler parameter annotated ``cache: CacheDep`` receives the app's ``CacheClient``."""
BuilderDep = Annotated[CacheBuilder, Depends(get_builder)]
"""A handler parameter annotated ``builder: BuilderDep`` receives the app's ``CacheBuilder``."""
