"""``Entry``: what a fetch returns to choose how its value is cached (adaptive caching).

A fetch given to ``get_or_init``, ``attempt_regeneration`` or ``@cache.cached`` returns its
value, or an :class:`Entry` of it whose options replace the call's for this value only: a
report that is still being compiled may be cached for seconds, a final one for a day::

    async def fetch_report() -> Entry:
        report = await build_report()
        return Entry(report, ttl=86_400.0 if report["final"] else 10.0)

Callers receive the plain value, never the Entry. An option left unset is the call's. The
options are checked when the Entry is made, so a bad one raises
:class:`~redicache_async.InvalidArgumentError` inside the fetch, where it was written: the call
then fails as for any fetch that raises, and nothing is cached.

:func:`unwrap` is the one place where the client opens a fetch's result; an option added here
(tags, say) is read there.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Generic, TypeVar

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .validation import ttl_to_ms

__all__ = ["UNSET", "Entry", "Unset", "check_stored", "unwrap"]

T = TypeVar("T")


class Unset(enum.Enum):
    """The type of :data:`UNSET`: an option an :class:`Entry` leaves to the call."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "<unset>"


#: An option left to the call (for ``ttl``, None already means "no expiry").
UNSET: Final = Unset.UNSET


class Entry(Generic[T]):
    """``value`` with the options it is cached with; see :mod:`redicache_async.entry`.

    ``ttl``: seconds (None: no expiry), as the call's ``ttl`` takes them; unset, the call's.
    ``value`` must not be None (None means "no value" to readers; return None itself to cache
    nothing) nor another Entry.
    """

    __slots__ = ("_ttl", "_ttl_ms", "value")

    value: T
    _ttl: float | Unset | None
    #: ``ttl`` as the milliseconds written to Redis (0: no expiry), or None when unset.
    _ttl_ms: int | None

    def __init__(self, value: T, *, ttl: float | Unset | None = UNSET) -> None:
        if value is None:
            raise InvalidArgumentError(
                "Entry(None): None means 'no value' to readers; return None itself to cache nothing"
            )
        if isinstance(value, Entry):
            raise InvalidArgumentTypeError("an Entry's value cannot be another Entry")
        self._ttl_ms = None if ttl is UNSET else ttl_to_ms(ttl)
        self.value = value
        self._ttl = ttl

    @property
    def ttl(self) -> float | Unset | None:
        """The ttl given (read-only: it was checked when the Entry was made)."""
        return self._ttl

    def __repr__(self) -> str:
        return f"Entry({self.value!r}, ttl={self.ttl!r})"


def unwrap(result: Any, ttl_ms: int) -> tuple[Any, int]:
    """A fetch's ``result`` as ``(value, ttl in ms)``: an :class:`Entry`'s value and its own
    ttl (the call's ``ttl_ms`` when unset), or any other result as it is with ``ttl_ms``."""
    if not isinstance(result, Entry):
        return result, ttl_ms
    entry_ttl = result._ttl_ms
    return result.value, ttl_ms if entry_ttl is None else entry_ttl


def check_stored(value: object, what: str, call: str) -> None:
    """A value that a caller stores itself (``set``, ``set_many``): not None, which means "no
    value" to readers, and not an :class:`Entry`, which only a fetch returns (a pickling
    serializer would store the Entry, and readers would get it back)."""
    if value is None:
        raise InvalidArgumentError(f"{what} must not be None (None means 'no value' to readers)")
    if isinstance(value, Entry):
        raise InvalidArgumentTypeError(
            f"{call}() takes the value itself (an Entry is what a fetch returns); pass ttl= to "
            f"{call}"
        )
