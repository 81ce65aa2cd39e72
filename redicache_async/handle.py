"""``CacheHandle``: a client known at import time, opened later.

A web app opens its :class:`~redicache_async.CacheClient` in its lifespan, but decorates its
functions when their module is imported, before any client exists. A handle stands in for the
client at import time::

    cache = CacheHandle()

    @cache.cached(ttl=60)
    async def report(day: str) -> dict: ...

    app = FastAPI(lifespan=cache_lifespan(url, namespace="myapp", bind=cache))

The lifespan binds the handle to the client it started and unbinds it before closing that
client. A decorated function called while the handle is unbound (before start-up, after
shutdown) raises :class:`~redicache_async.ClientClosedError`: it never runs uncached by
surprise. A handle is bound to one client at a time, so two apps that share it in one process
are refused rather than made to share a cache without knowing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from .client import CacheClient
from .decorator import Decorates
from .errors import ClientClosedError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["CacheHandle"]


class CacheHandle(Decorates):
    """A stand-in for a :class:`~redicache_async.CacheClient` that is opened later; see
    :mod:`redicache_async.handle`. ``name`` only appears in error messages."""

    __slots__ = ("_client", "name")

    def __init__(self, name: str = "cache") -> None:
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(f"name must be a str, not {type(name).__name__}")
        self.name = name
        self._client: CacheClient | None = None

    @property
    def client(self) -> CacheClient:
        """The bound client; :class:`~redicache_async.ClientClosedError` while unbound."""
        client = self._client
        if client is None:
            raise self._unbound()
        return client

    @property
    def is_bound(self) -> bool:
        return self._client is not None

    def bind(self, client: CacheClient) -> None:
        """Answer through ``client`` from now on (``cache_lifespan(..., bind=handle)`` and
        ``cache_context(..., bind=handle)`` do this once the client has started)."""
        if not isinstance(client, CacheClient):
            raise InvalidArgumentTypeError(
                f"a CacheHandle binds a CacheClient, not {type(client).__name__}"
            )
        if self._client is not None and self._client is not client:
            raise InvalidArgumentError(
                f"the CacheHandle {self.name!r} is bound to another client already: an app "
                "binds it for its lifespan, so two apps in one process need a handle each"
            )
        self._client = client

    def unbind(self) -> None:
        """Stop answering: calls raise :class:`~redicache_async.ClientClosedError` again."""
        self._client = None

    # What a cached function calls (decorator.CacheSource), resolved at each call: the client
    # of the moment.

    def get_or_init(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """The bound client's :meth:`~redicache_async.CacheClient.get_or_init`."""
        return self.client.get_or_init(*args, **kwargs)

    def delete(self, key: str) -> Awaitable[None]:
        """The bound client's :meth:`~redicache_async.CacheClient.delete`."""
        return self.client.delete(key)

    def local_value(self, key: str) -> Any:
        """The bound client's :meth:`~CacheClient.local_value` (None while unbound)."""
        client = self._client
        return None if client is None else client.local_value(key)

    def _unbound(self) -> ClientClosedError:
        return ClientClosedError(
            f"the CacheHandle {self.name!r} is not bound to a client: it is bound while the "
            "app's lifespan runs (cache_lifespan(..., bind=handle) or cache_context(..., "
            "bind=handle)), or by handle.bind(client)"
        )

    def __repr__(self) -> str:
        state = "bound" if self._client is not None else "unbound"
        return f"<CacheHandle {self.name!r} {state}>"
