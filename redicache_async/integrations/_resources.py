"""What an app opens at start-up and closes at shutdown, whatever its framework: a
:class:`CacheClient`, optionally a :class:`CacheBuilder` set up by the app, and the Redis
client itself when the app gave a URL rather than a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.errors import InvalidArgumentTypeError
from redicache_async.handle import CacheHandle

__all__ = ["BuilderSetup", "CacheResources", "CacheSetup", "open_cache"]

#: Called once the builder has started, to register its caches: ``async def setup(builder)``.
BuilderSetup = Callable[[CacheBuilder], Awaitable[None]]


@dataclass(frozen=True)
class CacheResources:
    cache: CacheClient
    builder: CacheBuilder | None


@dataclass(frozen=True)
class CacheSetup:
    """What an app asked for (the arguments of ``cache_lifespan`` and ``cache_context``),
    checked when the app is declared; :meth:`open` opens it at start-up."""

    redis: Any
    namespace: str
    setup_builder: BuilderSetup | None
    client_options: Mapping[str, Any] | None
    builder_options: Mapping[str, Any] | None
    bind: CacheHandle | None

    def __post_init__(self) -> None:
        # A bind= that is not a handle is refused when the app is declared, not at start-up.
        if self.bind is not None and not isinstance(self.bind, CacheHandle):
            kind = type(self.bind).__name__
            raise InvalidArgumentTypeError(f"bind must be a CacheHandle, not {kind}")

    def open(self) -> AbstractAsyncContextManager[CacheResources]:
        return open_cache(self)


@asynccontextmanager
async def open_cache(setup: CacheSetup) -> AsyncIterator[CacheResources]:
    """Start a client (and, with ``setup_builder``, a builder it then sets up) over ``redis``:
    a Redis client, which stays the caller's, or a URL, whose client is made here and closed
    on the way out; ``bind``, a handle, answers through the client until it closes. Everything
    started is closed in reverse order, also when start-up fails."""
    redis, namespace, bind = setup.redis, setup.namespace, setup.bind
    async with AsyncExitStack() as stack:
        if isinstance(redis, str):
            redis = aioredis.Redis.from_url(redis)
            stack.push_async_callback(redis.aclose)
        elif redis is None or isinstance(redis, bytes):
            raise InvalidArgumentTypeError(
                f"redis must be a Redis client or a URL, not {type(redis).__name__}"
            )
        cache = await stack.enter_async_context(
            CacheClient(redis, namespace=namespace, **dict(setup.client_options or {}))
        )
        if bind is not None:
            bind.bind(cache)
            stack.callback(bind.unbind)  # before the client closes: no call finds it closing
        builder = None
        if setup.setup_builder is not None:
            builder = await stack.enter_async_context(
                CacheBuilder(redis, namespace=namespace, **dict(setup.builder_options or {}))
            )
            await setup.setup_builder(builder)
        yield CacheResources(cache, builder)
