"""A FastAPI app with a cache that opens and closes with it: ``python examples/fastapi_app.py``.

As a service you would run ``uvicorn examples.fastapi_app:app``, with ``REDIS_URL`` set. Run as
a script, it starts a throw-away Redis (unless ``REDIS_URL`` is set), serves the app with
uvicorn on a free loopback port, sends it a few requests with httpx, prints what came back,
and stops.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI

from redicache_async import CacheBuilder, Target
from redicache_async.integrations.fastapi import BuilderDep, CacheDep, cache_lifespan

NAMESPACE = "example-fastapi"
fetches = 0


async def fetch_homepage() -> dict[str, Any]:
    """Stands for an expensive query: slow, and worth running once across every process."""
    global fetches
    fetches += 1
    await asyncio.sleep(0.3)
    return {"title": "Home", "blocks": ["news", "weather"]}


def fetch_products() -> list[dict[str, Any]]:
    """Stands for a slow report query, rebuilt in the background every minute."""
    return [{"id": 1, "name": "tea", "price": 3.5}, {"id": 2, "name": "coffee", "price": 4.0}]


async def register_caches(builder: CacheBuilder) -> None:
    await builder.register(
        fetch_products,
        targets=[Target("example:products", "hash", id_field="id")],
        refresh_interval=60.0,
        name="products",
    )


def create_app(redis_url: str) -> FastAPI:
    app = FastAPI(
        lifespan=cache_lifespan(redis_url, namespace=NAMESPACE, setup_builder=register_caches)
    )

    @app.get("/")
    async def homepage(cache: CacheDep) -> Any:
        return await cache.get_or_init("cms::homepage", fetch_homepage, ttl=60.0)

    @app.get("/products/{product_id}")
    async def product(product_id: str, cache: CacheDep) -> Any:
        return await cache.get_target("example:products", product_id)

    @app.post("/products/refresh")
    async def refresh(builder: BuilderDep) -> dict[str, str]:
        await builder.refresh("products")
        return {"status": "rebuilt"}

    return app


# For `uvicorn examples.fastapi_app:app`.
app = create_app(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


async def demo(redis_url: str) -> None:
    import httpx
    import uvicorn

    from redicache_async.testing import free_port

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(redis_url), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await http.post("/products/refresh")  # the first build may still be running
            pages = await asyncio.gather(*(http.get("/") for _ in range(10)))
            print(f"10 concurrent GET / -> {pages[0].json()} (fetches: {fetches})")
            print(f"GET /products/2 -> {(await http.get('/products/2')).json()}")
        assert fetches == 1, fetches
        assert all(page.json() == pages[0].json() for page in pages)
    finally:
        server.should_exit = True
        await serving


def main() -> None:
    url = os.environ.get("REDIS_URL")
    if url:
        asyncio.run(demo(url))
        return
    from redicache_async.testing import RedisServer

    with RedisServer() as redis_server:
        print(f"started {redis_server.version()} at {redis_server.url}")
        asyncio.run(demo(redis_server.url))


if __name__ == "__main__":
    main()
