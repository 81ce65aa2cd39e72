"""``Entry``: what a fetch returns to choose how its value is cached (adaptive caching).

A fetch given to ``get_or_init``, ``attempt_regeneration`` or ``@cache.cached`` returns its
value, or an :class:`Entry` of it whose options replace the call's for this value only: a
report that is still being compiled may be cached for seconds, a final one for a day::

    async def fetch_report() -> Entry:
        report = await build_report()
        return Entry(report, ttl=86_400.0 if report["final"] else 10.0)

``tags`` replace the call's tags for that value (see ``invalidate_tags``).

Callers receive the plain value, never the Entry. An option left unset is the call's. The
options are checked when the Entry is made, so a bad one raises
:class:`~redicache_async.InvalidArgumentError` inside the fetch, where it was written: the call
then fails as for any fetch that raises, and nothing is cached.

:func:`unwrap` is the one place where the client opens a fetch's result; an option added here
is read there. :func:`with_tags` gives a fetch the call's tags the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .tags import check_tags
from .validation import is_async_callable, ttl_to_ms

__all__ = ["UNSET", "Entry", "Unset", "check_stored", "unwrap", "with_tags"]

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
    ``tags``: strings (see ``invalidate_tags``); unset, the call's.
    ``value`` must not be None (None means "no value" to readers; return None itself to cache
    nothing) nor another Entry.
    """

    __slots__ = ("_tags", "_ttl", "_ttl_ms", "value")

    value: T
    _ttl: float | Unset | None
    #: ``ttl`` as the milliseconds written to Redis (0: no expiry), or None when unset.
    _ttl_ms: int | None
    _tags: tuple[str, ...] | Unset

    def __init__(
        self,
        value: T,
        *,
        ttl: float | Unset | None = UNSET,
        tags: tuple[str, ...] | list[str] | Unset = UNSET,
    ) -> None:
        if value is None:
            raise InvalidArgumentError(
                "Entry(None): None means 'no value' to readers; return None itself to cache nothing"
            )
        if isinstance(value, Entry):
            raise InvalidArgumentTypeError("an Entry's value cannot be another Entry")
        self._ttl_ms = None if ttl is UNSET else ttl_to_ms(ttl)
        self._tags = UNSET if tags is UNSET else check_tags(tags)
        self.value = value
        self._ttl = ttl

    @property
    def ttl(self) -> float | Unset | None:
        """The ttl given (read-only: it was checked when the Entry was made)."""
        return self._ttl

    @property
    def tags(self) -> tuple[str, ...] | Unset:
        """The tags given, checked (distinct, in their first order)."""
        return self._tags

    def __repr__(self) -> str:
        tags = "" if self._tags is UNSET else f", tags={self._tags!r}"
        return f"Entry({self.value!r}, ttl={self.ttl!r}{tags})"


def unwrap(
    result: Any, ttl_ms: int, tags: tuple[str, ...] = ()
) -> tuple[Any, int, tuple[str, ...]]:
    """A fetch's ``result`` as ``(value, ttl in ms, tags)``: an :class:`Entry`'s value and its
    own options (the call's ``ttl_ms`` and ``tags`` where unset), or any other result as it
    is with the call's."""
    if not isinstance(result, Entry):
        return result, ttl_ms, tags
    entry_ttl = result._ttl_ms
    entry_tags = result._tags
    return (
        result.value,
        ttl_ms if entry_ttl is None else entry_ttl,
        tags if entry_tags is UNSET else entry_tags,
    )


def with_tags(fetch: Callable[[], Any], tags: tuple[str, ...]) -> Callable[[], Any]:
    """``fetch`` giving its values ``tags`` (a call's ``tags=``), unless it returns an
    :class:`Entry` with tags of its own; ``fetch`` itself when there are none. A function of
    the same kind (a coroutine function for a coroutine function), so that it runs where
    ``fetch`` would."""
    if not tags:
        return fetch

    def tagged(result: Any) -> Any:
        if result is None:
            return None
        if not isinstance(result, Entry):
            return Entry(result, tags=tags)
        if result._tags is UNSET:
            return Entry(result.value, ttl=result._ttl, tags=tags)
        return result

    if is_async_callable(fetch):

        async def tagged_async() -> Any:
            return tagged(await fetch())

        return tagged_async
    return lambda: tagged(fetch())


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
