"""The FastAPI app that :mod:`benchmarks.end_to_end` serves under ``uvicorn --workers 2``.

One report endpoint per library, each caching the same slow report (a fetch of
``E2E_FETCH_SECONDS``, 0.2 s, kept ``E2E_TTL_SECONDS``, 2 s) in the same Redis
(``E2E_REDIS_URL``), the way each library's documentation does it:

- ``/report/ours``: ``@cache.cached(ttl=...)`` on a :class:`~redicache_async.CacheHandle`,
  bound by ``cache_lifespan(..., bind=cache)``;
- ``/report/aiocache`` and ``/report/aiocache-stampede``: aiocache ``@cached`` and
  ``@cached_stampede`` with ``cache=Cache.REDIS``;
- ``/report/cashews`` and ``/report/cashews-lock``: cashews ``@cache(ttl=...)`` and
  ``@cache(ttl=..., lock=True)`` on ``redis://``;
- ``/trivial``: no cache, no I/O: the load generator's ceiling.

Every response carries its worker's pid in ``x-pid`` (the load generator counts requests per
worker with it). Every fetch appends ``library start end pid`` (``time.monotonic()``, shared by
the machine's processes) to ``E2E_LOG_DIR/<pid>.log``: the parent counts fetches across both
workers from those files, without a Redis command that would change what it measures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiocache  # type: ignore[import-untyped]
import cashews
from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse

from redicache_async import CacheHandle
from redicache_async.integrations.fastapi import cache_lifespan

from .hot_path import VALUE

REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = os.environ.get("E2E_NAMESPACE", "e2e")
LOG_DIR = Path(os.environ.get("E2E_LOG_DIR", "."))
TTL = float(os.environ.get("E2E_TTL_SECONDS", "2"))
FETCH_SECONDS = float(os.environ.get("E2E_FETCH_SECONDS", "0.2"))
PID = str(os.getpid())

_log: list[TextIO] = []


async def _slow_report(library: str) -> dict[str, Any]:
    """The report every library caches: a slow query, logged."""
    start = time.monotonic()
    await asyncio.sleep(FETCH_SECONDS)
    if _log:
        _log[0].write(f"{library} {start:.6f} {time.monotonic():.6f} {PID}\n")
    return VALUE


# -- ours -------------------------------------------------------------------------------------

cache = CacheHandle()


@cache.cached(ttl=TTL)
async def ours_report() -> dict[str, Any]:
    return await _slow_report("ours")


# -- aiocache ---------------------------------------------------------------------------------

_where = urlsplit(REDIS_URL)
_aiocache = {
    "cache": aiocache.Cache.REDIS,
    "endpoint": _where.hostname or "127.0.0.1",
    "port": _where.port or 6379,
    "db": int(_where.path.lstrip("/") or 0),
    "namespace": f"{NAMESPACE}-aiocache",
}


@aiocache.cached(ttl=TTL, **_aiocache)  # type: ignore[untyped-decorator]
async def aiocache_report() -> dict[str, Any]:
    return await _slow_report("aiocache")


@aiocache.cached_stampede(ttl=TTL, lease=2, **_aiocache)  # type: ignore[untyped-decorator]
async def aiocache_stampede_report() -> dict[str, Any]:
    return await _slow_report("aiocache-stampede")


# -- cashews ----------------------------------------------------------------------------------

cashews_cache = cashews.Cache()
cashews_cache.setup(REDIS_URL)


@cashews_cache(ttl=TTL, prefix=f"{NAMESPACE}-cashews")
async def cashews_report() -> dict[str, Any]:
    return await _slow_report("cashews")


@cashews_cache(ttl=TTL, lock=True, prefix=f"{NAMESPACE}-cashews-lock")
async def cashews_lock_report() -> dict[str, Any]:
    return await _slow_report("cashews-lock")


REPORTS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "ours": ours_report,
    "aiocache": aiocache_report,
    "aiocache-stampede": aiocache_stampede_report,
    "cashews": cashews_report,
    "cashews-lock": cashews_lock_report,
}

# -- the app ----------------------------------------------------------------------------------

_ours_lifespan = cache_lifespan(REDIS_URL, namespace=NAMESPACE, bind=cache)


def _open_log() -> TextIO:
    """This worker's fetch log, line-buffered: each fetch's line is in the file when the
    parent reads it, after the workers stop. Opened once, at start-up, before any request."""
    return open(LOG_DIR / f"{PID}.log", "a", buffering=1, encoding="utf-8")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with _open_log() as log:
        _log.append(log)
        try:
            async with _ours_lifespan(app):
                try:
                    yield
                finally:
                    await cashews_cache.close()
                    await aiocache_report.cache.close()
                    await aiocache_stampede_report.cache.close()
        finally:
            _log.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/trivial")
async def trivial() -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"x-pid": PID})


@app.get("/report/{library}")
async def report(library: str, response: Response) -> dict[str, Any]:
    response.headers["x-pid"] = PID
    return await REPORTS[library]()
