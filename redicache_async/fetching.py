"""Calling users' fetch functions: coroutine functions are awaited, plain functions run in a
worker thread so that a slow query does not block the event loop, and ``fetch_timeout`` bounds
either kind."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import FetchTimeout, InvalidArgumentTypeError
from .validation import is_async_callable

__all__ = ["call_fetch", "fetch_within"]


async def call_fetch(
    fetch: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """The result of ``fetch(*args, **kwargs)``. A cancelled caller stops waiting for a plain
    function at once; its thread, which nothing can stop, finishes on its own."""
    if is_async_callable(fetch):
        result = await fetch(*args, **(kwargs or {}))
    elif args or kwargs:
        call = functools.partial(fetch, *args, **(kwargs or {}))
        result = await asyncio.to_thread(call)
    else:
        result = await asyncio.to_thread(fetch)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise InvalidArgumentTypeError(
            "fetch is a plain function that returned an awaitable: pass the async function "
            "itself (or functools.partial(fn, ...)), not a lambda that calls it"
        )
    return result


async def fetch_within(
    timeout: float | None,
    name: str,
    fetch: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """:func:`call_fetch`, raising :class:`FetchTimeout` (for ``name``, a key or a
    registration) once it has run ``timeout`` seconds (None: no bound)."""
    if timeout is None:
        return await call_fetch(fetch, args, kwargs)
    try:
        async with asyncio.timeout(timeout) as deadline:
            return await call_fetch(fetch, args, kwargs)
    except TimeoutError as exc:
        if deadline.expired():
            raise FetchTimeout(name, timeout) from exc
        raise
