"""The batch loader, ``get_or_init_many``: the values of many keys, those that no process has
fetched with one call of the caller's ``fetch_many``, each key still fetched once across all
processes.

The keys held locally answer without I/O. Each other key joins the load of it running in this
process (a ``get_or_init`` of the same key, or another batch), or becomes a member of this
call's batch: one load per key in ``_loads``, as ``get_or_init``'s are, so that later callers
of either kind join it. The batch reads or claims its keys in one script call per cluster slot
(READ_OR_LOCK_MANY; a node's slots share a pipeline), then calls ``fetch_many`` once with the
keys whose locks it took, and writes each value it returned exactly as ``get_or_init``'s fetch
writes its value (fenced, ``_write_fetched``). The locks of the keys it did not return are
released (announced, so waiters elsewhere look again). A key whose lock another process holds
is waited for as ``get_or_init`` waits (``_resolve``: its event, polling as a fallback), and
fetched alone, with ``fetch_many([key])``, only if that holder leaves no value. While Redis is
unreachable the batch answers as ``get_or_init`` does: a stale local copy, else one
``fetch_many`` in this process.

Every lock the batch took ends on every path: written, released, or (its fate unknown, Redis
gone or the call cancelled with the command on the wire) left to the orphans, released once
Redis answers. A caller that stops waiting leaves the loads to the other callers that joined
them, as ``get_or_init``'s callers do; ``aclose()`` cancels them, and they release their locks.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from time import monotonic
from typing import Any, Final

from redicache_async.entry import unwrap, with_tags
from redicache_async.errors import InvalidResultError, RedisUnavailableError
from redicache_async.leases import Lease, new_token
from redicache_async.tags import check_tags
from redicache_async.validation import check_callable, ttl_to_ms

from .many import ManyKeys, check_keys, run_all
from .state import MISSING, UNDECODABLE, UNREACHABLE, Guard

__all__ = ["BatchLoads", "FetchMany"]

#: ``fetch_many(missing_keys)``: ``{key: value}`` (or :class:`~redicache_async.Entry`) for the
#: keys it found.
FetchMany = Callable[[list[str]], Any]

#: A member's outcome other than a value: its key must be read or waited for alone, as
#: ``get_or_init`` does (its lock is held elsewhere, or its value was not usable).
_ALONE: Final = object()
_ALONE_IGNORING_VALUE: Final = object()


class _Batch:
    """The keys one call loads together (its members), and the task that loads them."""

    __slots__ = ("keys", "task")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.task: asyncio.Task[dict[str, Any]] | None = None


class BatchLoads(ManyKeys):
    """``get_or_init_many``."""

    async def get_or_init_many(
        self,
        keys: Iterable[str],
        fetch_many: FetchMany,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The values of ``keys`` as ``{key: value}`` in the order of ``keys``, the missing
        ones fetched with one call ``fetch_many(missing_keys)``, which returns a mapping of
        the keys it found to their values (or :class:`~redicache_async.Entry`); the keys it
        leaves out are absent from the answer and not cached.

        Each key is answered as :meth:`get_or_init` answers it, and fetched once across all
        processes: keys held locally answer without I/O, the others are read or their locks
        claimed in one round trip (one per node of a cluster), the keys whose locks another
        process holds are waited for, not fetched again. ``ttl`` as :meth:`get_or_init`'s. A
        ``fetch_many`` that raises fails the call (no lock is left behind); one that returns
        anything but a mapping, or keys it was not asked for, raises
        :class:`~redicache_async.InvalidResultError`. The values fetched are stored with
        ``tags`` (an Entry's own replace them), as :meth:`get_or_init` stores its fetch's.
        """
        wanted = check_keys(keys)
        check_callable("fetch_many", fetch_many)
        ttl_ms = ttl_to_ms(ttl)
        call_tags = check_tags(tags)
        found, missed = self._local_hits(wanted)
        if not missed:
            return found
        self._check_open()
        batch = _Batch()
        joined = {
            key: self._loads.run(
                key, functools.partial(self._enlist, batch, key, fetch_many, ttl_ms, call_tags)
            )
            for key in missed
        }
        if batch.keys:
            batch.task = self._tasks.spawn(
                self._load_batch(batch.keys, fetch_many, ttl_ms, call_tags),
                name="redicache-batch-load",
            )
        values = await run_all([self._await_joined(key, load) for key, load in joined.items()])
        for key, value in zip(joined, values, strict=True):
            if value is not None:
                found[key] = value
        return {key: found[key] for key in wanted if key in found}

    def _enlist(
        self, batch: _Batch, key: str, fetch_many: FetchMany, ttl_ms: int, tags: tuple[str, ...]
    ) -> Coroutine[Any, Any, Any]:
        """``key``'s load, as a member of ``batch`` (no load of it ran in this process)."""
        batch.keys.append(key)
        return self._member(batch, key, fetch_many, ttl_ms, tags)

    async def _member(
        self, batch: _Batch, key: str, fetch_many: FetchMany, ttl_ms: int, tags: tuple[str, ...]
    ) -> Any:
        """``key``'s value (None: not found) as its batch loaded it, or as ``get_or_init``
        loads it where the batch could not."""
        assert batch.task is not None  # set before any member runs
        # Shielded: a member ended alone (aclose ends them all) must not end its batch.
        outcome = (await asyncio.shield(batch.task))[key]
        if outcome is _ALONE or outcome is _ALONE_IGNORING_VALUE:
            fetch = with_tags(functools.partial(self._fetch_one, key, fetch_many), tags)
            return await self._resolve(
                key, fetch, ttl_ms, ignore_value=outcome is _ALONE_IGNORING_VALUE
            )
        return outcome

    async def _fetch_one(self, key: str, fetch_many: FetchMany) -> Any:
        """``fetch_many([key])``'s value of ``key`` (None when it was not found): the fetch
        of a key that the batch leaves to ``get_or_init``'s path."""
        found = _checked(await self._fetcher.run(key, fetch_many, ([key],)), [key])
        return found.get(key)

    async def _load_batch(
        self, keys: list[str], fetch_many: FetchMany, ttl_ms: int, call_tags: tuple[str, ...]
    ) -> dict[str, Any]:
        """Each of ``keys``'s outcome: its value, None (not found) or ``_ALONE...``."""
        guards = {key: self._watch(key) for key in keys}
        held: dict[str, tuple[Lease, Any]] = {}
        try:
            replies = await self._read_or_claim(keys, held)
            tags = self._tags_of(
                [
                    reply[1]
                    for reply in replies.values()
                    if reply is not UNREACHABLE and reply[0] == 1
                ]
            )
            if tags:  # their times known before the values are taken
                await self._learn_tag_times(tags, fresh=False)
            outcomes: dict[str, Any] = {}
            unreachable = []
            for key, reply in replies.items():
                if reply is UNREACHABLE:
                    unreachable.append(key)
                elif reply[0] == 1:
                    value = self._stored_value(key, guards[key], reply[1])
                    if value is UNDECODABLE:
                        outcomes[key] = _ALONE_IGNORING_VALUE
                    else:  # a layout skipped, a clear or its tags' invalidation: read again alone
                        outcomes[key] = _ALONE if value is MISSING else value
                elif reply[0] == 2:
                    self._stats.misses += 1
                else:
                    outcomes[key] = _ALONE
            if held:
                outcomes |= await self._fetch_and_write_many(
                    held, guards, fetch_many, ttl_ms, call_tags
                )
            if unreachable:
                outcomes |= await self._fetch_many_without_redis(
                    unreachable, guards, fetch_many, ttl_ms, call_tags
                )
            return outcomes
        finally:
            try:
                if held:  # not handed to a write or a release: the fetch failed, or a claim
                    await run_all(
                        [
                            self._locks.release(key, lease.key, lease.token)
                            for key, (lease, _) in held.items()
                        ]
                    )
            finally:
                for key, guard in guards.items():
                    self._unwatch(key, guard)

    async def _read_or_claim(
        self, keys: list[str], held: dict[str, tuple[Lease, Any]]
    ) -> dict[str, Any]:
        """READ_OR_LOCK_MANY's reply for each of ``keys`` (``UNREACHABLE`` where its node did
        not answer); each lock taken goes into ``held`` as soon as its reply arrives."""
        tokens = {key: new_token() for key in keys}
        try:
            if not self._local.trusted:
                await self._learn_clear_time()
        except RedisUnavailableError:
            return dict.fromkeys(keys, UNREACHABLE)
        groups = self._slot_groups(keys)
        answers = await self._per_node(groups, lambda node: self._claim_node(node, tokens, held))
        return {
            key: reply
            for group, replies in zip(groups, answers, strict=True)
            for key, reply in zip(group, replies, strict=True)
        }

    async def _claim_node(
        self,
        groups: list[list[str]],
        tokens: dict[str, str],
        held: dict[str, tuple[Lease, Any]],
    ) -> list[list[Any]]:
        """READ_OR_LOCK_MANY of slot groups served by one node, in one pipeline (a lone group:
        one script call). A group refused there (a script the node lost) is sent again alone."""
        calls = [self._claim_call(group, tokens) for group in groups]
        try:
            if len(calls) == 1:
                names, args = calls[0]
                command = self._scripts.read_or_lock_many(keys=names, args=args)
                replies = [await self._gateway.call(command, names[0])]
            else:
                sha = self._scripts.read_or_lock_many.sha
                replies = await self._pipelined(
                    [("EVALSHA", sha, len(names), *names, *args) for names, args in calls],
                    calls[0][0][0],
                )
        except RedisUnavailableError as exc:
            self._note_replica(exc)
            for group in groups:
                for key in group:
                    self._locks.unanswered(exc, key, self._keys.lock(key), tokens[key])
            return [[UNREACHABLE] * len(group) for group in groups]
        except asyncio.CancelledError:
            for group in groups:  # the claims may have run
                for key in group:
                    self._locks.orphans.add(key, self._keys.lock(key), tokens[key])
            raise
        self._hold_claims(groups, replies, tokens, held)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, Exception)]
        if again:
            retried = await run_all([self._claim_node([groups[i]], tokens, held) for i in again])
            for i, answer in zip(again, retried, strict=True):
                replies[i] = answer[0]
        return replies

    def _claim_call(self, keys: list[str], tokens: dict[str, str]) -> tuple[list[str], list[Any]]:
        """READ_OR_LOCK_MANY's keys and arguments for ``keys`` (one slot)."""
        names: list[str] = []
        for key in keys:
            names += (self._keys.value(key), self._keys.lock(key))
        return names, [self._lock_ms, self._cleared, *(tokens[key] for key in keys)]

    def _hold_claims(
        self,
        groups: list[list[str]],
        replies: list[Any],
        tokens: dict[str, str],
        held: dict[str, tuple[Lease, Any]],
    ) -> None:
        lease = self._locks.lease
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, Exception):
                continue
            for key, (status, claimed) in zip(group, reply, strict=True):
                if status == 2:
                    held[key] = (lease(self._keys.lock(key), tokens[key]), claimed)

    async def _fetch_and_write_many(
        self,
        held: dict[str, tuple[Lease, Any]],
        guards: dict[str, Guard],
        fetch_many: FetchMany,
        ttl_ms: int,
        call_tags: tuple[str, ...],
    ) -> dict[str, Any]:
        """One ``fetch_many`` of the keys whose locks ``held`` has (kept alive meanwhile),
        then each value written as ``get_or_init`` writes its fetch's, the other locks
        released. Each key leaves ``held`` as its write or release takes its lock over."""
        keys = list(held)
        async with AsyncExitStack() as alive:
            for lease, _ in held.values():
                await alive.enter_async_context(lease.kept_alive())
            found = await self._fetch_many(keys, fetch_many)
        outcomes: dict[str, Any] = {}
        ends: list[Coroutine[Any, Any, Any]] = []
        unwrapped = {key: unwrap(found.get(key), ttl_ms, call_tags) for key in keys}
        if self._cluster:
            # The check before writing (see ``_write_fetched``), once for the whole batch.
            await self._read_invalidations(
                {tag: None for _, _, tags in unwrapped.values() for tag in tags}
            )
        for key in keys:
            lease, claimed = held.pop(key)
            value, key_ttl, tags = unwrapped[key]
            if value is None:
                outcomes[key] = None
                ends.append(self._locks.release(key, lease.key, lease.token))
            else:
                ends.append(
                    self._write_fetched(
                        key,
                        value,
                        key_ttl,
                        tags,
                        lease,
                        guards[key],
                        claimed=claimed,
                        checked=self._cluster,
                    )
                )
        results = await run_all(ends)
        for key, result in zip(keys, results, strict=True):
            outcomes.setdefault(key, result)
        return outcomes

    async def _fetch_many_without_redis(
        self,
        keys: list[str],
        guards: dict[str, Guard],
        fetch_many: FetchMany,
        ttl_ms: int,
        call_tags: tuple[str, ...],
    ) -> dict[str, Any]:
        """``keys`` answered as ``get_or_init`` answers without Redis: a stale local copy, else
        one ``fetch_many`` of the others in this process, kept locally for a moment."""
        outcomes = {key: self._stale_or(key, None) for key in keys}
        rest = [key for key, stale in outcomes.items() if stale is None]
        if rest:
            started = monotonic()
            found = await self._fetch_many(rest, fetch_many)
            for key in rest:
                value, key_ttl, tags = unwrap(found.get(key), ttl_ms, call_tags)
                if value is not None:
                    outcomes[key] = self._keep_unshared(
                        key, value, key_ttl, tags, guards[key], started
                    )
        return outcomes

    async def _fetch_many(self, keys: list[str], fetch_many: FetchMany) -> dict[str, Any]:
        """``fetch_many(keys)``, bounded by ``fetch_timeout`` and counted as one fetch."""
        name = keys[0] if len(keys) == 1 else f"{keys[0]} and {len(keys) - 1} more"
        return _checked(await self._call_fetch(name, fetch_many, (list(keys),)), keys)


def _checked(result: Any, asked: list[str]) -> dict[str, Any]:
    """``fetch_many``'s ``result`` for the keys ``asked``, as a dict; refused when it is not a
    mapping, or gives keys it was not asked for (they would be cached under a name no caller
    chose, or a caller's key mistyped would read as "not found")."""
    if not isinstance(result, Mapping):
        raise InvalidResultError(
            f"fetch_many must return a mapping of key to value, not {type(result).__name__}"
        )
    wanted = set(asked)
    extra = [key for key in result if key not in wanted]
    if extra:
        raise InvalidResultError(
            f"fetch_many returned keys it was not asked for: {extra[:5]!r}"
            + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        )
    return dict(result)
