"""What the client and the builder share about their lives: opened once (``async with`` or
``start()``), closed once (``aclose()``, idempotent and shielded from cancellation), and unusable
before and after, with an error that says so."""

from __future__ import annotations

import asyncio
from typing import Self

from .errors import ClientClosedError

__all__ = ["Lifecycle"]


class Lifecycle:
    """Base of an object that owns background work between ``start()`` and ``aclose()``.

    Subclasses implement ``_startup`` (undone by ``aclose`` if it fails) and ``_shutdown``.
    """

    _opened: bool = False
    _closing: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called (even while it is still shutting down): the object
        cannot be used, nor started, again."""
        return self._closing is not None

    async def start(self) -> None:
        name = type(self).__name__
        if self._closing is not None:
            raise ClientClosedError(f"this {name} is closed; create a new one")
        if self._opened:
            return
        self._opened = True
        try:
            await self._startup()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _startup(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closing is None and self._opened:  # every call passes here: nothing else
            return
        name = type(self).__name__
        if self._closing is not None:
            raise ClientClosedError(f"this {name} is closed")
        raise ClientClosedError(
            f"this {name} is not started: use 'async with {name}(...)' or 'await "
            f"{name.removeprefix('Cache').lower()}.start()'"
        )
