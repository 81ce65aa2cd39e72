"""Web framework integrations: open the cache when the app starts, close it when it stops, and
reach it from handlers.

- :mod:`redicache_async.integrations.fastapi`: a lifespan for FastAPI (or Starlette), and
  dependencies that hand handlers the client and the builder;
- :mod:`redicache_async.integrations.aiohttp`: a ``cleanup_ctx`` for ``aiohttp.web``, and
  lookups from a request or the app.

Each imports its framework only when imported itself.
"""
