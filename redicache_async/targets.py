"""Builder targets: the Redis data types a build is written to, how a build's items become
the commands that write them, and how a target's reply reads back. ``target_swap`` writes and
swaps them in.

Items are stored as compact JSON text, as smart-redis writes them, so that any client in any
language can read the targets.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidResultError,
)
from .keys import validate_key
from .validation import check_instances

__all__ = [
    "Prepared",
    "Target",
    "TargetType",
    "check_targets",
    "decode_target",
    "describe",
    "empty_target",
    "prepare",
]

TargetType = Literal["string", "list", "hash", "set", "zset"]
_TYPES: Final = get_args(TargetType)

#: Items per command: large enough that a 100k-item build is a few dozen round trips (see
#: ``target_swap``), small enough that one command stays well under a second.
_ITEMS_PER_COMMAND: Final = 1000
#: Serialization hands the loop back this often, so a huge build does not stall other tasks.
_ITEMS_PER_SLICE: Final = 2000


@dataclass(frozen=True, slots=True)
class Target:
    """A Redis key that a registration's builds are written to, at exactly that key.

    ``type`` is ``"string"`` (the whole result as JSON), ``"list"`` (one item per element, in
    order), ``"hash"`` (field ``str(item[id_field])``), ``"set"`` or ``"zset"`` (score
    ``item[score_field]``).
    """

    key: str
    type: TargetType
    id_field: str | None = None
    score_field: str | None = None

    def __post_init__(self) -> None:
        validate_key(self.key)
        if self.type not in _TYPES:
            raise InvalidArgumentError(
                f"target {self.key!r}: type must be one of {', '.join(_TYPES)}, got {self.type!r}"
            )
        _check_item_field(self, "id_field", self.id_field, needed=self.type == "hash")
        _check_item_field(self, "score_field", self.score_field, needed=self.type == "zset")


def _check_item_field(target: Target, name: str, value: object, *, needed: bool) -> None:
    if value is None:
        if needed:
            raise InvalidArgumentError(f"{target.type} target {target.key!r} needs {name}")
        return
    if not needed:
        raise InvalidArgumentError(f"{name} does not apply to {target.type} target {target.key!r}")
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(f"{name} must not be empty")


def check_targets(targets: object) -> tuple[Target, ...]:
    """A registration's ``targets``: a non-empty list of :class:`Target`, no key twice."""
    checked = check_instances("targets", targets, Target)
    seen: set[str] = set()
    for target in checked:
        if target.key in seen:
            raise InvalidArgumentError(f"target {target.key!r} is listed twice")
        seen.add(target.key)
    return checked


def describe(targets: Sequence[Target]) -> str:
    """The targets as one string: a new leader rebuilds at once when it differs."""
    return json.dumps([[t.key, t.type, t.id_field, t.score_field] for t in targets])


# -- preparing a build -------------------------------------------------------------------------


class Prepared:
    """One target's share of a build: the commands that fill its temporary key."""

    __slots__ = ("commands", "count", "target")

    def __init__(self, target: Target, commands: list[tuple[list[Any], int]], count: int) -> None:
        self.target = target
        #: ``(arguments after the key, payload bytes)`` per command.
        self.commands = commands
        #: Elements the temporary key holds once written (0: the result was empty).
        self.count = count


async def prepare(
    targets: Sequence[Target],
    result: Any,
    dumps: Callable[[Any], bytes],
    *,
    allow_empty: bool = True,
) -> list[Prepared]:
    """Check ``result`` against every target and serialize it; raises InvalidResultError,
    also for an empty result unless ``allow_empty``."""
    if result is None:
        raise InvalidResultError("the fetch function returned None")
    # A generator or an iterator tells its length only once read: read it first, once.
    items = _as_items(result) if any(t.type != "string" for t in targets) else None
    if not allow_empty and (
        not items if items is not None else isinstance(result, Sized) and len(result) == 0
    ):
        raise InvalidResultError("the result is empty and allow_empty is False")
    payloads = [] if items is None else await _dump_all(dumps, items)
    prepared = []
    for target in targets:
        if target.type == "string":
            payload = _dump(dumps, result, "the result")
            prepared.append(Prepared(target, [([payload], len(payload))], 1))
        else:
            assert items is not None
            prepared.append(_collection(target, items, payloads))
    return prepared


def _as_items(result: Any) -> list[Any]:
    if isinstance(result, str | bytes | bytearray | Mapping) or not isinstance(result, Iterable):
        raise InvalidResultError(
            f"list, hash, set and zset targets need a list of items, got {type(result).__name__}"
        )
    return list(result)


def _dump(dumps: Callable[[Any], bytes], value: Any, what: str) -> bytes:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidResultError(f"{what} cannot be serialized: {exc}") from exc


async def _dump_all(dumps: Callable[[Any], bytes], items: list[Any]) -> list[bytes]:
    payloads: list[bytes] = []
    for start in range(0, len(items), _ITEMS_PER_SLICE):
        if start:
            await asyncio.sleep(0)
        try:
            payloads.extend(map(dumps, items[start : start + _ITEMS_PER_SLICE]))
        except (TypeError, ValueError) as exc:
            index = len(payloads) + _first_failure(dumps, items[len(payloads) :])
            raise InvalidResultError(f"item {index} cannot be serialized: {exc}") from exc
    return payloads


def _first_failure(dumps: Callable[[Any], bytes], items: list[Any]) -> int:
    for index, item in enumerate(items):
        try:
            dumps(item)
        except (TypeError, ValueError):
            return index
    return 0  # pragma: no cover - only called after a failure


def _collection(target: Target, items: list[Any], payloads: list[bytes]) -> Prepared:
    kind = target.type
    if kind == "list":
        members: list[Any] = payloads
        count = len(payloads)
        per_item = 1
    elif kind == "set":
        members = payloads
        count = len(set(payloads))
        per_item = 1
    elif kind == "hash":
        assert target.id_field is not None
        fields = [_hash_field(item, target.id_field, i) for i, item in enumerate(items)]
        members = [part for pair in zip(fields, payloads, strict=True) for part in pair]
        count = len(set(fields))
        per_item = 2
    else:
        assert target.score_field is not None
        scores = [_score(item, target.score_field, i) for i, item in enumerate(items)]
        members = [part for pair in zip(scores, payloads, strict=True) for part in pair]
        count = len(set(payloads))
        per_item = 2
    step = _ITEMS_PER_COMMAND * per_item
    commands = []
    for start in range(0, len(members), step):
        chunk = members[start : start + step]
        size = sum(len(p) for p in payloads[start // per_item : (start + step) // per_item])
        commands.append((chunk, size))
    return Prepared(target, commands, count)


def _item_value(item: Any, field: str, index: int) -> Any:
    if not isinstance(item, Mapping):
        raise InvalidResultError(f"item {index} is a {type(item).__name__}, not a mapping")
    try:
        return item[field]
    except KeyError:
        raise InvalidResultError(f"item {index} has no {field!r} field") from None


def _hash_field(item: Any, id_field: str, index: int) -> str:
    value = _item_value(item, id_field, index)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidResultError(
            f"item {index}: {id_field!r} must be a str or a number, not {type(value).__name__}"
        )
    field = str(value)
    if not field.isascii():
        try:
            field.encode()
        except UnicodeEncodeError:  # a lone surrogate: it would fail the write half-way
            raise InvalidResultError(
                f"item {index}: {id_field!r} cannot be encoded as UTF-8: {field!r}"
            ) from None
    return field


def _score(item: Any, score_field: str, index: int) -> float:
    value = _item_value(item, score_field, index)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidResultError(f"item {index}: {score_field!r} is not a number: {value!r}")
    return float(value)


# -- reading -----------------------------------------------------------------------------------


def decode_target(kind: str, data: Any, loads: Callable[[bytes], Any]) -> Any:
    """A target's Redis reply (from the READ_TARGET script) as Python values: the string's
    value; a list of items for a list, a set (sorted by their JSON) or a zset (by score); a
    dict of field to item for a hash."""

    def load(raw: bytes | str) -> Any:
        return loads(raw.encode() if isinstance(raw, str) else raw)

    if kind == "string":
        return load(data)
    if kind == "hash":
        it = iter(data)
        return {
            (field.decode() if isinstance(field, bytes) else field): load(raw)
            for field, raw in zip(it, it, strict=True)
        }
    if kind == "set":
        data = sorted(data)
    return [load(raw) for raw in data]


def empty_target(kind: str) -> Any:
    """What an empty build of a ``kind`` target reads as (Redis holds no empty collections)."""
    return {} if kind == "hash" else []
