"""aiohttp: the cache opens with the application and closes with it.

::

    from aiohttp import web
    from redicache_async.integrations.aiohttp import cache_context, get_cache

    async def home(request: web.Request) -> web.Response:
        page = await get_cache(request).get_or_init("cms::home", fetch_home, ttl=60)
        return web.json_response(page)

    app = web.Application()
    app.cleanup_ctx.append(cache_context("redis://127.0.0.1:6379", namespace="myapp"))
    app.router.add_get("/home", home)

``cache_context`` starts a :class:`CacheClient` (its listener subscribed) when the app starts,
and, with ``setup_builder``, a :class:`CacheBuilder` that it hands to that function to register
its caches. On cleanup it closes them (the builder releases its leases, so another instance
leads at once) and, when it was given a URL, the Redis client it made. ``get_cache`` and
``get_builder`` find them from a request (sub-applications included) or from the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, Unpack

from aiohttp import web

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient

from ._resources import CacheOptions, CacheSetup

__all__ = ["BUILDER_KEY", "CACHE_KEY", "cache_context", "get_builder", "get_cache"]

T = TypeVar("T")

#: Where the app holds its ``CacheClient`` (``app[CACHE_KEY]``, or ``get_cache``).
CACHE_KEY = web.AppKey("redicache_cache", CacheClient)
#: Where the app holds its ``CacheBuilder``, when there is one (``get_builder``).
BUILDER_KEY = web.AppKey("redicache_builder", CacheBuilder)


def cache_context(
    redis: Any, **options: Unpack[CacheOptions]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for ``app.cleanup_ctx.append(...)``.

    ``redis``: a ``redis.asyncio`` client (a ``Redis``, ``RedisCluster`` or Sentinel master,
    left open for you) or a URL (its client is made and closed here). ``options``: see
    :class:`~redicache_async.integrations.CacheOptions` (``namespace`` is required).
    """
    setup = CacheSetup.declared("cache_context", redis, options)

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with setup.open() as resources:
            app[CACHE_KEY] = resources.cache
            if resources.builder is not None:
                app[BUILDER_KEY] = resources.builder
            yield

    return context


def get_cache(where: web.Request | web.Application) -> CacheClient:
    """The :class:`CacheClient` of the request's application (or of ``where``, an app)."""
    return _lookup(
        where,
        CACHE_KEY,
        "no CacheClient on this application: append cache_context(...) to its cleanup_ctx",
    )


def get_builder(where: web.Request | web.Application) -> CacheBuilder:
    """The :class:`CacheBuilder`, there when :func:`cache_context` was given ``setup_builder``."""
    return _lookup(
        where,
        BUILDER_KEY,
        "no CacheBuilder on this application: pass setup_builder= to cache_context()",
    )


def _lookup(where: web.Request | web.Application, key: web.AppKey[T], missing: str) -> T:
    # A request's config_dict also sees the parent applications of a sub-application.
    found = where.config_dict if isinstance(where, web.Request) else where
    try:
        return found[key]
    except KeyError:
        raise RuntimeError(missing) from None
