"""What one namespace holds in Redis, read for operators: cached keys with their TTLs, held
write locks, builder registrations (leader, last build, last error) and their targets.

Everything here comes from Redis alone (``SCAN`` over the namespace's patterns, then pipelined
reads), so it sees every process and host that shares the namespace. It reads and never
writes. On a cluster, ``SCAN`` visits every master. ``python -m redicache_async status``
prints it; :func:`read_status` hands it to programs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import ResponseError

from .keys import KeySpace
from .replies import text
from .stored import HEADER_SIZE, unpack
from .validation import check_count

__all__ = [
    "CachedKey",
    "HeldLock",
    "NamespaceStatus",
    "RegistrationRecord",
    "TargetRecord",
    "read_status",
]

_SCAN_COUNT: Final = 500
_PIPELINE_SIZE: Final = 500
#: ``PTTL``'s answer for a key that does not exist (it expired after the scan found it).
_GONE: Final = -2
#: What is read of each cached value: its TTL, its header, its size (``stored.py``).
_VALUE_QUERIES: Final = (("PTTL",), ("GETRANGE", 0, HEADER_SIZE - 1), ("STRLEN",))


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A value cached in the namespace (by any client of it)."""

    key: str
    #: Seconds left; None when the value never expires.
    ttl: float | None
    #: When the value was written (its version is the server's clock in microseconds).
    written_at: float | None
    #: Bytes of the serialized value.
    size: int
    #: Stored in a layout this release does not read (an older release's): clients read it
    #: as a miss, and their next fetch of it replaces it.
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class HeldLock:
    """A key's write lock: a fetch of it is running in some process."""

    key: str
    #: Seconds left before the lock expires unless its holder renews it.
    ttl: float | None


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """A builder registration as its leaders recorded it in Redis."""

    name: str
    #: The instance holding the lease now (``host:pid:random``); None when nobody leads.
    leader: str | None
    #: Seconds left on the current leader's lease.
    lease_ttl: float | None
    #: The fencing epoch of the newest term.
    epoch: int | None
    #: When the newest term began (seconds since the epoch, server clock).
    elected_at: float | None
    refresh_interval: float | None
    #: The targets of the last successful build.
    targets: tuple[str, ...]
    #: When the last successful build started, and how long it took (seconds).
    last_built_at: float | None
    last_duration: float | None
    #: Builds and failures over every leader's terms.
    builds: int
    failures: int
    #: The newest failure (``Type: message``), cleared by the next success.
    last_error: str | None
    last_error_at: float | None


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """A key that a builder maintains (it lives at exactly the key the user named)."""

    key: str
    registration: str | None
    type: str | None
    #: Elements written by the last swap.
    size: int | None
    #: When the last swap happened (seconds since the epoch, server clock).
    swapped_at: float | None


@dataclass(frozen=True, slots=True)
class NamespaceStatus:
    """What a namespace holds in Redis, across every process and host (``read_status``)."""

    namespace: str
    keys: tuple[CachedKey, ...]
    locks: tuple[HeldLock, ...]
    registrations: tuple[RegistrationRecord, ...]
    targets: tuple[TargetRecord, ...]
    #: Entries in the namespace's event stream (None when it does not exist).
    events: int | None
    #: True when a section held more than ``limit`` entries and was cut short.
    truncated: bool


async def read_status(redis: Any, namespace: str, *, limit: int = 1000) -> NamespaceStatus:
    """Read namespace ``namespace`` (a ``Redis``, a ``RedisCluster`` or a Sentinel master
    client; any ``decode_responses``). Each section lists at most ``limit`` entries, sorted."""
    keys = KeySpace(namespace)
    check_count("limit", limit, minimum=1)
    truncated = False

    async def scan(kind: str, parse: Callable[[str], str | None]) -> list[tuple[str, str]]:
        """The ``(redis key, parsed)`` pairs of one kind, sorted by what they parse to and
        cut to ``limit``; keys that do not parse (not the library's) are left out."""
        nonlocal truncated
        found: dict[str, str] = {}
        async for name in _scan(redis, keys.pattern(kind)):
            parsed = parse(name)
            if parsed is not None:
                found[parsed] = name
        if len(found) > limit:
            truncated = True
        return [(found[parsed], parsed) for parsed in sorted(found)[:limit]]

    cached = await _cached_keys(redis, await scan("v", keys.cached_key))
    locks = await _locks(redis, await scan("lock", keys.locked_key))
    registered = await scan("builder", keys.registration_name)
    registrations = await _registrations(redis, keys, [name for _, name in registered])
    targets = await _targets(redis, await scan("target", keys.target_of_meta))
    return NamespaceStatus(
        namespace=namespace,
        keys=tuple(cached),
        locks=tuple(locks),
        registrations=tuple(registrations),
        targets=tuple(targets),
        events=await _stream_length(redis, keys.stream),
        truncated=truncated,
    )


# -- sections --------------------------------------------------------------------------------


async def _cached_keys(redis: Any, pairs: list[tuple[str, str]]) -> list[CachedKey]:
    # The header and the size, not the value: no payload crosses the wire, and a binary one
    # (msgpack) cannot trip a client made with decode_responses=True. A key of another type
    # (an older release's hash) answers WRONGTYPE to both.
    commands = [(op, name, *args) for name, _ in pairs for op, *args in _VALUE_QUERIES]
    replies = iter(await _pipelined(redis, commands, raise_on_error=False))
    found = []
    for _, key in pairs:
        ttl, head, size = (next(replies) for _ in _VALUE_QUERIES)
        if ttl == _GONE:
            continue
        stored = None if isinstance(head, Exception) else unpack(head)
        if stored is None:
            found.append(CachedKey(key, _seconds(ttl), None, 0, outdated=True))
        else:
            version = stored[0]
            found.append(CachedKey(key, _seconds(ttl), version / 1e6, int(size) - HEADER_SIZE))
    return found


async def _locks(redis: Any, pairs: list[tuple[str, str]]) -> list[HeldLock]:
    replies = await _pipelined(redis, [("PTTL", name) for name, _ in pairs])
    return [
        HeldLock(key, _seconds(ttl))
        for (_, key), ttl in zip(pairs, replies, strict=True)
        if ttl != _GONE
    ]


async def _registrations(
    redis: Any, keys: KeySpace, registered: list[str]
) -> list[RegistrationRecord]:
    replies = await _pipelined(
        redis,
        [
            c
            for name in registered
            for c in (("HGETALL", keys.state(name)), ("PTTL", keys.lease(name)))
        ],
    )
    records = []
    for name, state, lease_ttl in zip(registered, replies[::2], replies[1::2], strict=True):
        fields = _fields(state)
        held = lease_ttl != _GONE
        records.append(
            RegistrationRecord(
                name=name,
                leader=(fields.get("leader") or None) if held else None,
                lease_ttl=_seconds(lease_ttl) if held else None,
                epoch=_int(fields.get("epoch")),
                elected_at=_ms_to_s(fields.get("elected_at")),
                refresh_interval=_float(fields.get("interval")),
                targets=_spec_targets(fields.get("spec", "")),
                last_built_at=_ms_to_s(fields.get("built_at")),
                last_duration=_ms_to_s(fields.get("duration_ms")),
                builds=_int(fields.get("builds")) or 0,
                failures=_int(fields.get("failures")) or 0,
                last_error=fields.get("last_error") or None,
                last_error_at=_ms_to_s(fields.get("error_at"))
                if fields.get("last_error")
                else None,
            )
        )
    return records


async def _targets(redis: Any, pairs: list[tuple[str, str]]) -> list[TargetRecord]:
    replies = await _pipelined(redis, [("HGETALL", name) for name, _ in pairs])
    records = []
    for (_, key), meta in zip(pairs, replies, strict=True):
        fields = _fields(meta)
        if fields:
            records.append(
                TargetRecord(
                    key=key,
                    registration=fields.get("name") or None,
                    type=fields.get("type") or None,
                    size=_int(fields.get("n")),
                    swapped_at=_us_to_s(fields.get("v")),
                )
            )
    return records


async def _stream_length(redis: Any, stream: str) -> int | None:
    try:
        length = int(await redis.xlen(stream))
    except ResponseError:  # a key of another type under our name: nothing to count
        return None
    return length or None


# -- reading ---------------------------------------------------------------------------------


async def _scan(redis: Any, pattern: str) -> AsyncIterator[str]:
    # A cluster's scan_iter walks every master; a node may repeat a name, so callers dedupe.
    async for name in redis.scan_iter(match=pattern, count=_SCAN_COUNT):
        yield _text(name)


async def _pipelined(
    redis: Any, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True
) -> list[Any]:
    replies: list[Any] = []
    for start in range(0, len(commands), _PIPELINE_SIZE):
        pipe = redis.pipeline(transaction=False)
        for command in commands[start : start + _PIPELINE_SIZE]:
            pipe.execute_command(*command)
        replies.extend(await pipe.execute(raise_on_error=raise_on_error))
    return replies


def _fields(reply: Any) -> dict[str, str]:
    """A hash read with HGETALL (redis-py hands it over as a dict in RESP2 and RESP3 alike)."""
    return {_text(k): _text(v) for k, v in reply.items()}


def _text(value: Any) -> str:
    return text(value, errors="replace")  # an operator's view: never fails on a stray byte


def _int(value: Any) -> int | None:
    try:
        return int(_text(value)) if value is not None and value != "" else None
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        return float(_text(value)) if value is not None and value != "" else None
    except ValueError:
        return None


def _ms_to_s(value: Any) -> float | None:
    ms = _float(value)
    return None if ms is None else ms / 1000


def _us_to_s(value: Any) -> float | None:
    us = _float(value)
    return None if us is None else us / 1_000_000


def _seconds(pttl: Any) -> float | None:
    ms = int(pttl)
    return None if ms < 0 else ms / 1000


def _spec_targets(spec: str) -> tuple[str, ...]:
    try:
        described = json.loads(spec) if spec else []
        return tuple(str(target[0]) for target in described)
    except (ValueError, TypeError, IndexError, KeyError):
        return ()
