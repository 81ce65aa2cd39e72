"""What an app opens at start-up and closes at shutdown, whatever its framework: a
:class:`CacheClient`, optionally a :class:`CacheBuilder` set up by the app, and the Redis
client itself when the app gave a URL rather than a client."""

# No ``from __future__ import annotations``: TypedDict reads ``Required`` from evaluated
# annotations (Python 3.11 counts a string annotation as not required).

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import KW_ONLY, dataclass
from typing import Any, Required, TypedDict

import redis.asyncio as aioredis

from redicache_async.builder import CacheBuilder
from redicache_async.client import CacheClient
from redicache_async.errors import InvalidArgumentTypeError
from redicache_async.handle import CacheHandle

__all__ = ["BuilderSetup", "CacheOptions", "CacheResources", "CacheSetup", "open_cache"]

#: Called once the builder has started, to register its caches: ``async def setup(builder)``.
BuilderSetup = Callable[[CacheBuilder], Awaitable[None]]


class CacheOptions(TypedDict, total=False):
    """The keyword options of :func:`~redicache_async.integrations.fastapi.cache_lifespan` and
    :func:`~redicache_async.integrations.aiohttp.cache_context`, declared once for both.

    - ``namespace`` (required): the namespace of the client and the builder;
    - ``setup_builder``: ``async def setup(builder)``; when given, a :class:`CacheBuilder` is
      started too and handed to it to register its caches;
    - ``client_options`` / ``builder_options``: the keyword options of :class:`CacheClient` and
      :class:`CacheBuilder`;
    - ``bind``: a :class:`~redicache_async.CacheHandle` that functions decorated at import
      time (``@handle.cached(...)``) answer through while the app runs.
    """

    namespace: Required[str]
    setup_builder: BuilderSetup | None
    client_options: Mapping[str, Any] | None
    builder_options: Mapping[str, Any] | None
    bind: CacheHandle | None


@dataclass(frozen=True)
class CacheResources:
    cache: CacheClient
    builder: CacheBuilder | None


@dataclass(frozen=True)
class CacheSetup:
    """What an app asked for (``redis`` and the :class:`CacheOptions` of ``cache_lifespan`` or
    ``cache_context``), checked when the app is declared; :meth:`open` opens it at start-up."""

    redis: Any
    _: KW_ONLY
    namespace: str
    setup_builder: BuilderSetup | None = None
    client_options: Mapping[str, Any] | None = None
    builder_options: Mapping[str, Any] | None = None
    bind: CacheHandle | None = None

    def __post_init__(self) -> None:
        # A bind= that is not a handle is refused when the app is declared, not at start-up.
        if self.bind is not None and not isinstance(self.bind, CacheHandle):
            kind = type(self.bind).__name__
            raise InvalidArgumentTypeError(f"bind must be a CacheHandle, not {kind}")

    @classmethod
    def declared(cls, by: str, redis: Any, options: Mapping[str, Any]) -> "CacheSetup":
        """The setup that ``by`` (``cache_lifespan`` or ``cache_context``) was called for; a
        keyword it does not take is refused in its name, as Python would for its own."""
        known = CacheOptions.__required_keys__ | CacheOptions.__optional_keys__
        for name in options.keys() - known:
            raise TypeError(f"{by}() got an unexpected keyword argument {name!r}")
        for name in CacheOptions.__required_keys__ - options.keys():
            raise TypeError(f"{by}() missing required keyword argument {name!r}")
        return cls(redis, **options)

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
