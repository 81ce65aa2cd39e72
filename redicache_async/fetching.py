"""Calling users' fetch functions: coroutine functions are awaited, plain functions run in a
thread so that a slow query does not block the event loop, and ``fetch_timeout`` bounds either
kind.

A plain function runs in a daemon thread of its own rather than in the loop's default
executor. Nothing can stop a thread, so a fetch that hangs past ``fetch_timeout`` keeps its
thread until it returns: in a shared pool (the default executor has ``min(32, cpus + 4)``
workers) a few hung queries would hold every worker, and every other fetch and every
``asyncio.to_thread`` of the application would queue behind them; and ``asyncio.run`` joins
that pool on the way out, so the process could not even exit. Here a fetch whose caller stopped
waiting leaves its slot at once (its thread finishes on its own, and its result is dropped), and
the process exits without waiting for it. ``fetch_threads`` bounds how many plain fetches of one
client or builder run at once; a caller beyond it waits for a slot, within its ``fetch_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import FetchTimeout, InvalidArgumentTypeError
from .validation import is_async_callable

__all__ = ["THREAD_NAME", "FetchRunner"]

#: The name of every thread that runs a plain fetch (followed by ``:`` and the key or
#: registration it fetches for), so that a thread dump shows which fetch hangs.
THREAD_NAME = "redicache-fetch"


class FetchRunner:
    """Runs the fetch functions of one client or builder: each bounded by ``timeout`` seconds
    (None: no bound), plain ones in threads of their own, at most ``threads`` at once."""

    __slots__ = ("_slots", "timeout")

    def __init__(self, *, timeout: float | None, threads: int) -> None:
        self.timeout = timeout
        self._slots = asyncio.Semaphore(threads)

    async def run(
        self,
        name: str,
        fetch: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """``fetch(*args, **kwargs)``, raising :class:`FetchTimeout` (for ``name``, a key or a
        registration) once it has run ``timeout`` seconds."""
        if self.timeout is None:
            return await self._call(name, fetch, args, kwargs)
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                return await self._call(name, fetch, args, kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                raise FetchTimeout(name, self.timeout) from exc
            raise

    async def _call(
        self,
        name: str,
        fetch: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
    ) -> Any:
        if is_async_callable(fetch):
            return await fetch(*args, **(kwargs or {}))
        call = functools.partial(fetch, *args, **(kwargs or {})) if args or kwargs else fetch
        async with self._slots:
            result = await _in_thread(f"{THREAD_NAME}:{name}", call)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise InvalidArgumentTypeError(
                "fetch is a plain function that returned an awaitable: pass the async function "
                "itself (or functools.partial(fn, ...)), not a lambda that calls it"
            )
        return result


async def _in_thread(name: str, call: Callable[[], Any]) -> Any:
    """``call()`` in a new daemon thread, in a copy of the caller's context (as
    ``asyncio.to_thread``: tracing and logging context carry over). A cancelled caller stops
    waiting at once; the thread finishes on its own and its outcome goes nowhere."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(call), None)
        except BaseException as exc:  # handed to the caller, as to_thread would
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, future, *outcome)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
