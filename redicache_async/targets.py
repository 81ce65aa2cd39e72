"""Builder targets: the Redis data types a build is written to, and the atomic swap.

A build is first written to temporary keys, each in its target's cluster slot. Then one script
per slot checks that the writer still leads (its lease token where the lease shares the node,
its epoch against the epoch stored beside each target everywhere), checks that every temporary
copy is complete, and renames them over their targets. Readers see the old build or the new
one, never a gap or a mix.

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

from hiredis import pack_command as _pack
from redis.crc import key_slot
from redis.exceptions import ResponseError

from .cancellation import bounded
from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidResultError,
    RedicacheError,
)
from .invalidation import OP_TARGET, event_prefix
from .keys import KeySpace, validate_key
from .replies import text
from .scripts import Scripts
from .topology import is_cluster
from .validation import check_instances

__all__ = [
    "Deposed",
    "Prepared",
    "Target",
    "TargetType",
    "check_targets",
    "decode_target",
    "describe",
    "empty_target",
    "missing",
    "prepare",
    "swap",
    "write",
]

TargetType = Literal["string", "list", "hash", "set", "zset"]
_TYPES: Final = get_args(TargetType)

#: Items per command, and bytes queued before a pipeline is sent: large enough that a 100k-item
#: build is a few dozen round trips, small enough that one round trip stays well under a second.
_ITEMS_PER_COMMAND: Final = 1000
_BYTES_PER_ROUND_TRIP: Final = 1 << 20
#: Serialization hands the loop back this often, so a huge build does not stall other tasks.
_ITEMS_PER_SLICE: Final = 2000
#: A temporary key outlives the last batch written to it by at most this much. Every batch sets
#: it: a batch still on the wire when its build was cancelled may land after the clean-up and
#: create the key again. A copy that expired before its swap fails the swap's count check.
_TEMPORARY_TTL_MS: Final = 60 * 1000

_ADD_COMMAND: Final = {"list": "RPUSH", "hash": "HSET", "set": "SADD", "zset": "ZADD"}


class Deposed(RedicacheError):
    """A swap was refused because this writer no longer leads: its lease is gone, or a newer
    leader (higher epoch) already wrote a target."""


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


# -- writing and swapping ----------------------------------------------------------------------


async def write(redis: Any, writes: Sequence[tuple[str, Prepared]], *, timeout: float) -> None:
    """Fill each temporary key with its target's commands, in pipelined round trips."""
    pool = None if is_cluster(redis) else getattr(redis, "connection_pool", None)
    if pool is not None:
        await _write_packed(pool, writes, timeout=timeout)
        return
    # A cluster: redis-py's pipeline sends each command to its slot's node and follows MOVED.
    pipe = redis.pipeline(transaction=False)
    queued = 0
    for temporary, prepared in writes:
        command = _ADD_COMMAND.get(prepared.target.type, "SET")
        for arguments, size in prepared.commands:
            pipe.execute_command(command, temporary, *arguments)
            pipe.pexpire(temporary, _TEMPORARY_TTL_MS)
            queued += size
            if queued >= _BYTES_PER_ROUND_TRIP:
                await bounded(pipe.execute(), timeout)
                queued = 0
    if len(pipe):
        await bounded(pipe.execute(), timeout)


async def _write_packed(
    pool: Any, writes: Sequence[tuple[str, Prepared]], *, timeout: float
) -> None:
    """:func:`write` on one server's connection, the commands packed here: redis-py's asyncio
    connection packs in Python, argument by argument, which was 45% of a 100k-item build
    (issue 5); hiredis packs a whole command in C. Each round trip ends with one ``PEXPIRE``
    of each temporary key it wrote to."""
    connection = await pool.get_connection()
    try:
        batch: list[bytes] = []
        expiring: dict[str, None] = {}
        queued = 0
        for temporary, prepared in writes:
            command = _ADD_COMMAND.get(prepared.target.type, "SET")
            for arguments, size in prepared.commands:
                batch.append(_pack((command, temporary, *arguments)))
                expiring[temporary] = None
                queued += size
                if queued >= _BYTES_PER_ROUND_TRIP:
                    await bounded(_round_trip(connection, batch, expiring), timeout)
                    batch, expiring, queued = [], {}, 0
        if batch:
            await bounded(_round_trip(connection, batch, expiring), timeout)
    except BaseException:
        # Replies may still be on their way: the connection cannot serve another command.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def _round_trip(connection: Any, batch: list[bytes], expiring: dict[str, None]) -> None:
    # hiredis's stub types the tuple as one element long
    batch += [_pack(("PEXPIRE", key, _TEMPORARY_TTL_MS)) for key in expiring]  # type: ignore[arg-type]
    await connection.send_packed_command(batch)
    failure = None
    for _ in batch:  # every reply is read, so the connection stays in step
        try:
            await connection.read_response()
        except ResponseError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


async def swap(
    redis: Any,
    scripts: Scripts,
    keys: KeySpace,
    writes: Sequence[tuple[str, Prepared]],
    *,
    name: str,
    origin: str,
    token: str,
    lease_key: str,
    epoch: str,
    timeout: float,
) -> None:
    """Rename the temporary keys over their targets, slot by slot, fenced.

    Raises :class:`Deposed` when this writer no longer leads, RedicacheError when a temporary
    copy is incomplete; nothing of a refused slot changes.
    """
    cluster = is_cluster(redis)
    groups: dict[int, list[tuple[str, Prepared]]] = {}
    for write_ in writes:
        slot = key_slot(write_[1].target.key.encode()) if cluster else 0
        groups.setdefault(slot, []).append(write_)
    for group in groups.values():
        script_keys: list[str] = []
        args: list[Any] = ["" if cluster else token, epoch, keys.channel, name]
        for temporary, prepared in group:
            target = prepared.target
            script_keys += [temporary, target.key, keys.target_meta(target.key)]
            args += [target.type, prepared.count, event_prefix(OP_TARGET, target.key, origin)]
        if not cluster:
            script_keys += [lease_key, keys.stream]
        reply = await bounded(scripts.swap_targets(keys=script_keys, args=args), timeout)
        status = int(reply[0])
        if status != 1:
            reason = text(reply[1])
            raise Deposed(reason) if status == 0 else RedicacheError(reason)


async def missing(
    redis: Any, keys: KeySpace, targets: Sequence[Target], *, timeout: float
) -> list[str]:
    """The targets that no longer hold what their last swap left there: deleted, evicted or
    overwritten with another type behind the builder's back. A target that an empty build
    deleted (its meta says it holds nothing) is not missing; nor is one of the right type."""
    pipe = redis.pipeline(transaction=False)
    for target in targets:
        pipe.type(target.key)
        pipe.hget(keys.target_meta(target.key), "n")
    replies = await bounded(pipe.execute(), timeout)
    gone = []
    for target, kind, count in zip(targets, replies[::2], replies[1::2], strict=True):
        kind = text(kind)
        if kind == target.type or (kind == "none" and count is not None and text(count) == "0"):
            continue
        gone.append(target.key)
    return gone


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
