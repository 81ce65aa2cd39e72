"""Integrations with the ecosystem around the cache.

- :mod:`redicache_async.integrations.fastapi`: a lifespan for FastAPI (or Starlette), and
  dependencies that hand handlers the client and the builder;
- :mod:`redicache_async.integrations.aiohttp`: a ``cleanup_ctx`` for ``aiohttp.web``, and
  lookups from a request or the app;
- :mod:`redicache_async.integrations.opentelemetry`: the clients' and builders' counters as
  OpenTelemetry metrics.

Each imports its framework only when imported itself (install the extra of the same name).
The options of ``cache_lifespan`` and ``cache_context`` are one :class:`CacheOptions`.
"""

from ._resources import CacheOptions

__all__ = ["CacheOptions"]
