"""Tags: names a value is stored with, so that ``invalidate_tags`` removes every value that
carries one of them in one round trip, whatever their number.

Nothing indexes the values of a tag. ``invalidate_tags`` records, in one hash of the
namespace's own slot, the time (a version, on the values' clock) at which each tag was
invalidated; a value carries its tags in its header (``stored.py``), and a value whose version
is not above one of its tags' times is gone, as after ``clear()``. So a fetch that claimed its
lock before the invalidation cannot store a value that anyone takes (the issue 8 rule).

:class:`TagTimes` is what a client knows of those times: each tag's, once read (or heard of in
an ``invalidate_tags`` event), kept while the listener hears events, in a bounded map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .stored import MAX_TAGS_BYTES, tag_section

__all__ = ["MAX_KNOWN_TAGS", "TagTimes", "check_tags"]

#: Tags whose times a client keeps; beyond, the least recently used are read again when needed.
MAX_KNOWN_TAGS: Final = 10_000


def check_tags(tags: object, what: str = "tags") -> tuple[str, ...]:
    """``tags`` as a tuple of distinct non-empty strings, in their first order."""
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise InvalidArgumentTypeError(
            f"{what} must be an iterable of strings (a tuple or a list), not "
            f"{type(tags).__name__}: {tags!r}"
        )
    given = tuple(tags)
    for tag in given:
        if not isinstance(tag, str):
            raise InvalidArgumentTypeError(f"a tag must be a str, not {type(tag).__name__}")
    checked = tuple(dict.fromkeys(given))
    for tag in checked:
        if not tag:
            raise InvalidArgumentError("a tag must not be empty")
        try:
            tag.encode()
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"a tag must be valid UTF-8 text: {tag!r}") from None
    try:
        tag_section(checked)
    except ValueError:
        raise InvalidArgumentError(
            f"{what} take more than {MAX_TAGS_BYTES} bytes as a JSON array"
        ) from None
    return checked


class TagTimes:
    """The invalidation time of each tag this client knows of (0: never invalidated)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: OrderedDict[str, int] = OrderedDict()

    def unknown(self, tags: Iterable[str]) -> list[str]:
        """Those of ``tags`` whose time is not known."""
        known = self._known
        return [tag for tag in tags if tag not in known]

    def note(self, tag: str, at: int) -> bool:
        """``tag`` was invalidated at ``at`` (or, with 0, never): times only grow. Whether
        this is later than the time known."""
        known = self._known
        later = known.get(tag, 0) < at
        if later or tag not in known:
            known[tag] = at
        known.move_to_end(tag)
        while len(known) > MAX_KNOWN_TAGS:
            known.popitem(last=False)
        return later

    def latest(self, tags: Iterable[str]) -> int:
        """The latest known time of ``tags`` (an unknown tag counts as never invalidated)."""
        known = self._known
        return max((known.get(tag, 0) for tag in tags), default=0)

    def forget(self) -> None:
        """Events may have been missed: every time must be read again."""
        self._known.clear()
