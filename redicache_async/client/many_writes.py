"""The many-key writes: ``set_many`` and ``delete_many``, each key written or deleted as
``set`` or ``delete`` does it (its own version and event, its lock revoked), the keys of one
cluster slot in one script call and the slots of one node in one pipeline (see ``many.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from time import monotonic
from typing import Any

from redicache_async.entry import check_stored
from redicache_async.errors import InvalidArgumentTypeError
from redicache_async.invalidation import OP_DELETE, OP_SET
from redicache_async.keys import validate_key
from redicache_async.stored import header_flags, tag_section
from redicache_async.tags import check_tags
from redicache_async.validation import ttl_to_ms

from .coherence import deadline
from .many import ManyKeys, check_keys, run_all
from .state import Guard

__all__ = ["ManyWrites"]


class ManyWrites(ManyKeys):
    """``set_many`` and ``delete_many``."""

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
