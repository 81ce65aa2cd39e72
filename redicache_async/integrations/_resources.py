"""What an app opens at start-up and closes at shutdown, whatever its framework: a
:class:`CacheClient`, optionally a :class:`CacheBuilder` set up by the app, and the Redis
client itself when the app gave a URL rather than a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.errors import InvalidArgumentTypeError
from redicache_async.handle import CacheHandle

__all__ = ["BuilderSetup", "CacheResources", "check_handle", "open_cache"]

#: Called once the builder has started, to register its caches: ``async def setup(builder)``.
BuilderSetup = Callable[[CacheBuilder], Awaitable[None]]


@dataclass(frozen=True)
class CacheResources:
    cache: CacheClient
    builder: CacheBuilder | None


def check_handle(bind: object) -> None:
    """Refuse a ``bind=`` that is not a handle when the app is declared, not at start-up."""
    if bind is not None and not isinstance(bind, CacheHandle):
        raise InvalidArgumentTypeError(f"bind must be a CacheHandle, not {type(bind).__name__}")


@asynccontextmanager
async def open_cache(
    redis: Any,
    *,
    namespace: str,
    setup_builder: BuilderSetup | None = None,
    client_options: Mapping[str, Any] | None = None,
    builder_options: Mapping[str, Any] | None = None,
    bind: CacheHandle | None = None,
) -> AsyncIterator[CacheResources]:
    """Start a client (and, with ``setup_builder``, a builder it then sets up) over ``redis``:
    a Redis client, which stays the caller's, or a URL, whose client is made here and closed
    on the way out; ``bind``, a handle, answers through the client until it closes. Everything
    started is closed in reverse order, also when start-up fails."""
    check_handle(bind)
    async with AsyncExitStack() as stack:
        if isinstance(redis, str):
            redis = aioredis.Redis.from_url(redis)
            stack.push_async_callback(redis.aclose)
        elif redis is None or isinstance(redis, bytes):
            raise InvalidArgumentTypeError(
                f"redis must be a Redis client or a URL, not {type(redis).__name__}"
            )
        cache = await stack.enter_async_context(
            CacheClient(redis, namespace=namespace, **dict(client_options or {}))
        )
        if bind is not None:
            bind.bind(cache)
            stack.callback(bind.unbind)  # before the client closes: no call finds it closing
        builder = None
        if setup_builder is not None:
            builder = await stack.enter_async_context(
                CacheBuilder(redis, namespace=namespace, **dict(builder_options or {}))
            )
            await setup_builder(builder)
        yield CacheResources(cache, builder)
