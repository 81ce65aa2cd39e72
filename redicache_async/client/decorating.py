"""What ``@cache.cached`` needs of the client: its ``fetch_timeout``, for ``soft_timeout``'s
check at decoration, and a local lookup that answers a hit without building a fetch
(``decorator.py`` uses the client's public surface only)."""

from __future__ import annotations

from typing import Any

from redicache_async.decorator import Decorates

from .state import ClientState

__all__ = ["Decorating"]


class Decorating(ClientState, Decorates):
    """``cached`` (of :class:`~redicache_async.decorator.Decorates`) and ``local_value``."""

    def _fetch_timeout_now(self) -> float | None:
        return self._fetcher.timeout

    def local_value(self, key: str) -> Any:
        """The fresh value of ``key`` in this process's local layer (counted as a local hit),
        else None; never does I/O. For wrappers (such as :meth:`cached`) that answer a local
        hit without building a fetch; a miss then goes through :meth:`get_or_init`."""
        if key.__class__ is not str:  # get_or_init says what is wrong with it
            return None
        entry = self._local.fresh(key)
        return None if entry is None else entry.value
