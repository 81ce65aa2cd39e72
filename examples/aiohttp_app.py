"""An aiohttp app with a cache that opens and closes with it: ``python examples/aiohttp_app.py``.

As a service you would build the app with ``create_app(os.environ["REDIS_URL"])`` and run it
with ``web.run_app``. Run as a script, it starts a throw-away Redis (unless ``REDIS_URL`` is
set), serves the app on a free loopback port, sends it a few requests, prints what came back,
and stops.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import ClientSession, web

from redicache_async import CacheBuilder, Target
from redicache_async.integrations.aiohttp import cache_context, get_builder, get_cache

NAMESPACE = "example-aiohttp"
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
        targets=[Target("example:products-aiohttp", "hash", id_field="id")],
        refresh_interval=60.0,
        name="products",
    )


async def homepage(request: web.Request) -> web.Response:
    page = await get_cache(request).get_or_init("cms::homepage", fetch_homepage, ttl=60.0)
    return web.json_response(page)


async def product(request: web.Request) -> web.Response:
    item = await get_cache(request).get_target(
        "example:products-aiohttp", request.match_info["product_id"]
    )
    return web.json_response(item)


async def refresh(request: web.Request) -> web.Response:
    await get_builder(request).refresh("products")
    return web.json_response({"status": "rebuilt"})


def create_app(redis_url: str) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(
        cache_context(redis_url, namespace=NAMESPACE, setup_builder=register_caches)
    )
    app.router.add_get("/", homepage)
    app.router.add_get("/products/{product_id}", product)
    app.router.add_post("/products/refresh", refresh)
    return app


async def demo(redis_url: str) -> None:
    runner = web.AppRunner(create_app(redis_url))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with ClientSession(f"http://{host}:{port}") as http:
            await http.post("/products/refresh")  # the first build may still be running
            replies = await asyncio.gather(*(http.get("/") for _ in range(10)))
            pages = [await reply.json() for reply in replies]
            print(f"10 concurrent GET / -> {pages[0]} (fetches: {fetches})")
            print(f"GET /products/2 -> {await (await http.get('/products/2')).json()}")
        assert fetches == 1, fetches
        assert all(page == pages[0] for page in pages)
    finally:
        await runner.cleanup()


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
