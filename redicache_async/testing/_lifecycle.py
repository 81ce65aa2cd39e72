"""What every process or set-up here shares: ``start()``, ``stop()``, and a ``with`` block
that is the two."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

__all__ = ["Startable"]


class Startable(ABC):
    """``with thing:`` starts it (``__enter__`` returns what :meth:`start` returns) and stops it
    on the way out, whatever happened inside."""

    @abstractmethod
    def start(self) -> Self:
        """Start, and return once ready."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release everything. Idempotent."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
