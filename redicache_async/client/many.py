"""The client's many-key calls: ``get_many``, ``set_many`` and ``delete_many``.

Each key is read, written or deleted exactly as its one-key call does it (``get``, ``set``,
``delete``), with the same local-layer coherence, but the keys that share a cluster slot go to
Redis in one script call: on a single node or a Sentinel master, one command in all, through
the gateway like any other (deadline, circuit breaker, error classification), which ran or did
not. On a cluster, where distinct keys rarely share a slot (a value's key is hashed whole),
the calls for one node's slots share a pipeline: one round trip, and one connection, per node,
the nodes at once. A slot's call refused in a pipeline (a script the node lost, a busy or full
server: refusals that come before any write) is sent again alone, as the one-key calls send
it; a pipeline that failed whole (its node unreachable) leaves its keys as a failed ``set``
leaves its key. The scripts share their per-key Lua with the one-key scripts (``scripts.py``),
so that ``set`` and ``set_many`` cannot drift apart.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from time import monotonic
from typing import Any, TypeVar

from redis.crc import key_slot

from redicache_async.cancellation import cancel_and_wait
from redicache_async.entry import check_stored
from redicache_async.errors import (
    InvalidArgumentTypeError,
    RedisUnavailableError,
)
from redicache_async.invalidation import OP_DELETE, OP_SET
from redicache_async.keys import validate_key
from redicache_async.scripts import READ_MANY
from redicache_async.stored import header_flags, tag_section
from redicache_async.tags import check_tags
from redicache_async.topology import slot_owner
from redicache_async.validation import ttl_to_ms

from .coherence import deadline
from .loads import Loads
from .state import MISSING, UNDECODABLE, UNREACHABLE, Guard

__all__ = ["ManyKeys", "check_keys", "run_all"]

T = TypeVar("T")
R = TypeVar("R")

_READ_MANY_SHA = hashlib.sha1(READ_MANY.encode()).hexdigest()


def check_keys(keys: object) -> list[str]:
    """``keys``, an iterable of keys (a str is one key, not an iterable of them), each valid,
    without repeats, in their first order."""
    if isinstance(keys, str | bytes | bytearray | memoryview) or not isinstance(keys, Iterable):
        raise InvalidArgumentTypeError(
            f"keys must be an iterable of str keys (a list, a set...), not {type(keys).__name__}"
        )
    return list(dict.fromkeys(validate_key(key) for key in keys))


class ManyKeys(Loads):
    """``get_many``, ``set_many`` and ``delete_many``."""

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of ``keys`` that some process stored, as ``{key: value}`` in the order
        of ``keys`` (keys without a value are absent). Never fetches.

        Each key is answered as :meth:`get` answers it: from the local layer without I/O when
        it holds the key, else from Redis (and then kept locally): one round trip on a single
        node or behind Sentinel, one per node of a cluster. While Redis is unreachable a key
        has its stale local copy within ``stale_ttl``, if any, else is absent.
        """
        wanted = check_keys(keys)
        found, missed = self._local_hits(wanted)
        if not missed:
            return found
        self._check_open()
        groups = self._slot_groups(missed)
        for group, values in zip(
            groups, await self._per_node(groups, self._read_node), strict=True
        ):
            for key, value in zip(group, values, strict=True):
                if value is MISSING:
                    self._stats.misses += 1
                elif value is UNREACHABLE:
                    stale = self._stale_or(key, None)
                    if stale is not None:
                        found[key] = stale
                elif value is not UNDECODABLE:
                    found[key] = value
        return {key: found[key] for key in wanted if key in found}

    def _local_hits(self, keys: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The fresh local values of ``keys`` (counted as local hits), and the keys without."""
        found: dict[str, Any] = {}
        missed = []
        fresh = self._local.fresh
        for key in keys:
            entry = fresh(key)
            if entry is None:
                missed.append(key)
            else:
                found[key] = entry.value
        return found, missed

    async def _per_node(
        self,
        groups: list[list[str]],
        run: Callable[[list[list[str]]], Coroutine[Any, Any, list[R]]],
    ) -> list[R]:
        """``run`` each node's slot groups (one call per cluster node, the nodes at once), and
        each group's result, in the order of ``groups``. On a cluster distinct keys rarely
        share a slot (a value's key is hashed whole): a node's groups share one pipeline, one
        round trip per node rather than per slot, and one connection."""
        if len(groups) == 1:
            return await run(groups)
        by_node: dict[str | None, list[int]] = {}
        for i, group in enumerate(groups):
            by_node.setdefault(slot_owner(self._redis, self._keys.value(group[0])), []).append(i)
        nodes = list(by_node.values())
        answers = await run_all([run([groups[i] for i in node]) for node in nodes])
        results: dict[int, R] = {}
        for node, node_results in zip(nodes, answers, strict=True):
            results.update(zip(node, node_results, strict=True))
        return [results[i] for i in range(len(groups))]

    async def _pipelined(self, commands: list[tuple[Any, ...]], key: str) -> list[Any]:
        """``commands`` for one cluster node (``key``'s) in one pipeline, through the gateway:
        each one's reply, or the error it met."""
        pipe = self._redis.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return await self._gateway.call(pipe.execute(raise_on_error=False), key)

    async def _read_node(self, groups: list[list[str]]) -> list[list[Any]]:
        """Read slot groups served by one cluster node in one pipeline, each group as
        :meth:`_read_group` reads it; a group whose command failed there (a script the node
        lacks, a key of another type, a slot that moved) is read again alone, as ``get``
        would read it, so that its error is handled or raised as there."""
        if len(groups) == 1:
            return [await self._read_group(groups[0])]
        guards = [[self._watch(key) for key in group] for group in groups]
        try:
            value_key = self._keys.value
            commands: list[tuple[Any, ...]] = []
            for group in groups:
                names = [value_key(key) for key in group]
                if len(names) == 1:
                    commands.append(("GET", names[0]))
                else:
                    commands.append(("EVALSHA", _READ_MANY_SHA, len(names), *names))
            try:
                replies = await self._pipelined(commands, value_key(groups[0][0]))
            except RedisUnavailableError:
                return [[UNREACHABLE] * len(group) for group in groups]
            tags = self._tags_of(
                [
                    one
                    for group, reply in zip(groups, replies, strict=True)
                    if not isinstance(reply, Exception)
                    for one in ([reply] if len(group) == 1 else reply)
                ]
            )
            if tags:
                await self._learn_tag_times(tags, fresh=False)
            stored_value = self._stored_value
            values = []
            for group, group_guards, reply in zip(groups, guards, replies, strict=True):
                if isinstance(reply, Exception):
                    values.append(await self._read_group(group))
                elif len(group) == 1:
                    values.append([stored_value(group[0], group_guards[0], reply)])
                else:
                    values.append(
                        [
                            stored_value(key, guard, one)
                            for key, guard, one in zip(group, group_guards, reply, strict=True)
                        ]
                    )
            return values
        finally:
            for group, group_guards in zip(groups, guards, strict=True):
                for key, guard in zip(group, group_guards, strict=True):
                    self._unwatch(key, guard)

    async def _read_group(self, keys: list[str]) -> list[Any]:
        """Read ``keys`` (one slot) as ``get`` reads them: a lone key as a lone read (a plain
        GET where that is safe), several in one script call."""
        if len(keys) == 1:
            return [await self._read_value(keys[0])]
        return await self._read_values(keys)

    async def set_many(
        self, mapping: Mapping[str, Any], *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store each value of ``mapping`` under its key for ``ttl`` seconds (None: no expiry),
        with ``tags``, as :meth:`set` does, in one round trip (one per node of a cluster).
        Every key gets its own version and event, and its write revokes the key's lock, so a
        fetch that started before cannot undo it. Everything is checked (and serialized)
        before anything is sent.

        Should a slot's write fail, the other slots' writes still happen, and the first error
        is raised once all have ended (the failed slot's keys count as maybe written: their
        local copies go).
        """
        if not isinstance(mapping, Mapping):
            raise InvalidArgumentTypeError(
                f"mapping must be a mapping of key to value, not {type(mapping).__name__}"
            )
        ttl_ms = ttl_to_ms(ttl)
        checked_tags = check_tags(tags)
        payloads: dict[str, bytes] = {}
        for key, value in mapping.items():
            validate_key(key)
            check_stored(value, f"the value of {key!r}", "set_many")
            payloads[key] = self._serializer.dumps(value)
        if not payloads:
            return
        self._check_open()
        groups = self._slot_groups(list(payloads))
        await self._per_node(
            groups, lambda node: self._write_node(node, payloads, ttl_ms, checked_tags)
        )

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` from Redis and from every process's local layer, as :meth:`delete`
        does, in one round trip (one per node of a cluster)."""
        doomed = check_keys(keys)
        if not doomed:
            return
        self._check_open()
        await self._per_node(self._slot_groups(doomed), self._delete_node)

    def _slot_groups(self, keys: list[str]) -> list[list[str]]:
        """``keys`` grouped by the cluster slot of their values (one group off a cluster): the
        keys one script may touch together."""
        if not self._cluster:
            return [keys]
        groups: dict[int, list[str]] = {}
        value = self._keys.value
        for key in keys:
            groups.setdefault(key_slot(value(key).encode()), []).append(key)
        return list(groups.values())

    def _pairs(self, keys: list[str]) -> list[str]:
        """The script keys of ``keys``: value and lock of each, then the stream if it shares
        the node."""
        names: list[str] = []
        for key in keys:
            names += (self._keys.value(key), self._keys.lock(key))
        return names + self._stream_keys

    def _write_call(
        self, keys: list[str], payloads: dict[str, bytes], ttl_ms: int, tags: tuple[str, ...]
    ) -> tuple[list[str], list[Any]]:
        """WRITE_MANY's keys and arguments for ``keys`` (one slot)."""
        args: list[Any] = [
            ttl_ms,
            self._keys.channel,
            header_flags(tags),
            self._known_invalidation(tags),
        ]
        section = tag_section(tags)
        for key in keys:
            args += (section + payloads[key], self._event_args(OP_SET, key)[1])
        return self._pairs(keys), args

    def _delete_call(self, keys: list[str]) -> tuple[list[str], list[Any]]:
        """DELETE_MANY's keys and arguments for ``keys`` (one slot)."""
        return self._pairs(keys), [self._keys.channel] + [
            self._event_args(OP_DELETE, key)[1] for key in keys
        ]

    async def _write_node(
        self,
        groups: list[list[str]],
        payloads: dict[str, bytes],
        ttl_ms: int,
        tags: tuple[str, ...],
    ) -> list[None]:
        """Write slot groups served by one node, each as :meth:`_write_group` writes it, in
        one pipeline. A group refused there (a script the node lost, a busy or full server:
        refusals that come before its first write) is sent again alone, and then written or
        its error raised as ``set``'s would be."""
        if len(groups) == 1:
            await self._write_group(groups[0], payloads, ttl_ms, tags)
            return [None]
        guards = [[self._watch(key) for key in group] for group in groups]
        again = []
        try:
            calls = [self._write_call(group, payloads, ttl_ms, tags) for group in groups]
            started = monotonic()
            replies = await self._changes(self._scripts.write_many.sha, calls, groups)
            for group, group_guards, reply in zip(groups, guards, replies, strict=True):
                if isinstance(reply, Exception):
                    again.append(group)
                else:
                    self._written(group, group_guards, reply, payloads, ttl_ms, started, tags)
        finally:
            for group, group_guards in zip(groups, guards, strict=True):
                for key, guard in zip(group, group_guards, strict=True):
                    self._unwatch(key, guard)
        if again:
            await run_all([self._write_group(group, payloads, ttl_ms, tags) for group in again])
        return [None] * len(groups)

    async def _write_group(
        self, keys: list[str], payloads: dict[str, bytes], ttl_ms: int, tags: tuple[str, ...]
    ) -> None:
        """Write ``keys`` (one slot) as :meth:`set` writes one."""
        guards = [self._watch(key) for key in keys]
        try:
            call = self._write_call(keys, payloads, ttl_ms, tags)
            started = monotonic()
            versions = await self._change(self._scripts.write_many, call, keys)
            self._written(keys, guards, versions, payloads, ttl_ms, started, tags)
        finally:
            for key, guard in zip(keys, guards, strict=True):
                self._unwatch(key, guard)

    def _written(
        self,
        keys: list[str],
        guards: list[Guard],
        versions: list[Any],
        payloads: dict[str, bytes],
        ttl_ms: int,
        started: float,
        tags: tuple[str, ...],
    ) -> None:
        """``keys`` were written at ``versions`` by a call sent at ``started``: kept locally,
        as ``set`` keeps its value."""
        loads = self._serializer.loads
        expires_at = deadline(started, ttl_ms)
        for key, guard, version in zip(keys, guards, versions, strict=True):
            payload = payloads[key]
            self._count_write()
            self._wrote(key, int(version))
            self._remember(
                key, loads(payload), guard, int(version), len(payload), expires_at, tags=tags
            )

    async def _delete_node(self, groups: list[list[str]]) -> list[None]:
        """Delete slot groups served by one node in one pipeline, as :meth:`_write_node`
        writes them."""
        if len(groups) == 1:
            await self._delete_group(groups[0])
            return [None]
        calls = [self._delete_call(group) for group in groups]
        replies = await self._changes(self._scripts.delete_many.sha, calls, groups)
        again = []
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, Exception):
                again.append(group)
            else:
                self._deleted(group, reply)
        if again:
            await run_all([self._delete_group(group) for group in again])
        return [None] * len(groups)

    async def _delete_group(self, keys: list[str]) -> None:
        """Delete ``keys`` (one slot) as :meth:`delete` deletes one."""
        versions = await self._change(self._scripts.delete_many, self._delete_call(keys), keys)
        self._deleted(keys, versions)

    async def _changes(
        self, sha: str, calls: list[tuple[list[str], list[Any]]], groups: list[list[str]]
    ) -> list[Any]:
        """One node's script calls (``calls``: keys and arguments, one per slot group of
        ``groups``) in one pipeline: each one's reply, or the error it met. Should the
        pipeline fail, each key's change may or may not have happened."""
        try:
            return await self._pipelined(
                [("EVALSHA", sha, len(names), *names, *args) for names, args in calls],
                calls[0][0][0],
            )
        except BaseException:
            for group in groups:
                for key in group:
                    self._write_unknown(key)
            raise

    async def _change(
        self, script: Any, call: tuple[list[str], list[Any]], keys: list[str]
    ) -> list[Any]:
        """``script`` on one slot group (``call``: its keys and arguments), as ``_changes``
        sends several."""
        names, args = call
        try:
            return await self._gateway.call(script(keys=names, args=args), names[0])
        except BaseException:
            for key in keys:
                self._write_unknown(key)
            raise

    def _deleted(self, keys: list[str], versions: list[Any]) -> None:
        for key, version in zip(keys, versions, strict=True):
            self._local.discard(key)
            self._wrote(key, int(version))
            self._stats.deletes += 1
            self._stats.invalidations_sent += 1


async def run_all(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """The results of ``calls``, run at once; when one raises, the others still run to their
    end (a write that was sent is not abandoned half-way) and then the first error is raised.
    A lone call runs in the caller's task. Cancelled, the caller cancels them all and waits
    for their ends."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.wait(tasks)
    finally:
        for task in tasks:
            if not task.done():
                await cancel_and_wait(task)
        # Read every outcome, so that none is reported as never retrieved.
        errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error
    return [task.result() for task in tasks]
