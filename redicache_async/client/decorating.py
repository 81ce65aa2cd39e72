"""What ``@cache.cached`` needs of the client: the decorator itself, bound to this client, and
a local lookup that answers a hit without building a fetch (``decorator.py`` uses the client's
public surface only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar, cast

from redicache_async.decorator import CachedFunction, CacheSource, cached
from redicache_async.soft_timeout import check_soft_timeout

from .state import ClientState

__all__ = ["Decorating"]

T = TypeVar("T")
P = ParamSpec("P")


class Decorating(ClientState):
    """``cached`` and ``local_value``."""

    def cached(
        self,
        ttl: float | None = None,
        *,
        key: Callable[..., str] | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] = (),
        eager_refresh: float | None = None,
        soft_timeout: float | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], CachedFunction[P, T]]:
        """Decorate a coroutine function so that its results are cached under ``key`` (by
        default its module, qualified name and arguments) for ``ttl`` seconds, each missing
        one computed once across all processes, as :meth:`get_or_init` does::

            @cache.cached(ttl=60)
            async def report(day: str) -> dict: ...

            await report("2026-11-23")
            await report.invalidate("2026-11-23")

        The default key is the call, not its spelling (``report("d1")`` and
        ``report(day="d1")`` are one entry) and takes ``str``, ``int``, ``float``, ``bool`` and
        ``None`` arguments only; for others (a method's ``self``, say) pass ``key=``, a
        function of the same arguments that returns the key. A closure that reads variables of
        its enclosing function needs ``key=`` too. ``eager_refresh`` is
        :meth:`get_or_init`'s. How keys are made:
        https://redicache-async.readthedocs.io/how-to/decorator/

        ``soft_timeout`` is :meth:`get_or_init`'s, for every call of the function. ``tags``
        are the tags of every value it stores, or a function of its arguments that returns
        them (``tags=lambda user_id: [f"user:{user_id}"]``).
        """
        check_soft_timeout(soft_timeout, self._fetcher.timeout)
        # A mixin of CacheClient, which has what a cached function calls.
        return cached(
            cast(CacheSource, self),
            ttl,
            key=key,
            tags=tags,
            eager_refresh=eager_refresh,
            soft_timeout=soft_timeout,
        )

    def local_value(self, key: str) -> Any:
        """The fresh value of ``key`` in this process's local layer (counted as a local hit),
        else None; never does I/O. For wrappers (such as :meth:`cached`) that answer a local
        hit without building a fetch; a miss then goes through :meth:`get_or_init`."""
        if key.__class__ is not str:  # get_or_init says what is wrong with it
            return None
        entry = self._local.fresh(key)
        return None if entry is None else entry.value
