"""A build's writes and its atomic swap (the types and commands are in ``targets``).

A build is first written to temporary keys, each in its target's cluster slot. Then one script
per slot checks that the writer still leads (its lease token where the lease shares the node,
its epoch against the epoch stored beside each target everywhere), checks that every temporary
copy is complete, and renames them over their targets. Readers see the old build or the new
one, never a gap or a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from hiredis import pack_command as _pack
from redis.crc import key_slot
from redis.exceptions import ResponseError

from .cancellation import bounded
from .direct import borrowed
from .errors import RedicacheError
from .invalidation import OP_TARGET, event_prefix
from .keys import KeySpace
from .replies import text
from .scripts import Scripts
from .targets import Prepared, Target
from .topology import is_cluster

__all__ = ["Deposed", "missing", "swap", "write"]

#: Bytes queued before a pipeline is sent: large enough that a 100k-item build is a few dozen
#: round trips, small enough that one round trip stays well under a second.
_BYTES_PER_ROUND_TRIP: Final = 1 << 20
#: A temporary key outlives the last batch written to it by at most this much. Every batch sets
#: it: a batch still on the wire when its build was cancelled may land after the clean-up and
#: create the key again. A copy that expired before its swap fails the swap's count check.
_TEMPORARY_TTL_MS: Final = 60 * 1000

_ADD_COMMAND: Final = {"list": "RPUSH", "hash": "HSET", "set": "SADD", "zset": "ZADD"}


class Deposed(RedicacheError):
    """A swap was refused because this writer no longer leads: its lease is gone, or a newer
    leader (higher epoch) already wrote a target."""


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
    async with borrowed(pool) as connection:
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
