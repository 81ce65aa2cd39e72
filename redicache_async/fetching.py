"""Calling users' fetch functions: coroutine functions are awaited, plain functions run in a
worker thread so that a slow query does not block the event loop."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio.to_thread

from .errors import InvalidArgumentTypeError
from .validation import is_async_callable

__all__ = ["call_fetch"]


async def call_fetch(
    fetch: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    if is_async_callable(fetch):
        result = await fetch(*args, **(kwargs or {}))
    elif args or kwargs:
        call = functools.partial(fetch, *args, **(kwargs or {}))
        result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    else:
        result = await anyio.to_thread.run_sync(fetch, abandon_on_cancel=True)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise InvalidArgumentTypeError(
            "fetch is a plain function that returned an awaitable: pass the async function "
            "itself (or functools.partial(fn, ...)), not a lambda that calls it"
        )
    return result
