"""The client's many-key reads (``get_many``), and what its many-key calls share (the writes
are in ``many_writes.py``, the batch loader in ``batch_loader.py``).

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
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from redis.crc import key_slot

from redicache_async.cancellation import cancel_and_wait
from redicache_async.errors import (
    InvalidArgumentTypeError,
    RedisUnavailableError,
)
from redicache_async.keys import validate_key
from redicache_async.topology import slot_owner
from redicache_async.value_scripts import READ_MANY

from .loads import Loads
from .state import MISSING, UNDECODABLE, UNREACHABLE

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
