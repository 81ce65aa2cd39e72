"""A stateful model of the cache: random steps by several clients of one namespace, each answer
checked against a reference model (``model_history.py``), and the invariants after every step.

The clients differ where bugs hide: a full local layer over RESP3, a two-entry layer (three
keys: it evicts) over RESP2, and none at all over RESP3. Steps: ``set``, ``delete``, ``get``,
``get_or_init`` and ``attempt_regeneration``; a fetch that a write or delete overtakes, with
another client waiting on its lock and a later caller that must not join it; a read whose reply
is held while the same or another client writes; calls cancelled, or their client closed, while
a reply of theirs is on the wire or during their fetch; a killed pub/sub connection (``CLIENT
KILL``); a delayed listener; and quiet points, where every listener has caught up. Every race
and cancellation is placed by holding a reply or a fetch, never by timing, so that a failing
example fails again when replayed.

Checked at every answer: read-your-writes in each client, no client going back in time, no
value that a write overtook ever seen but by the overtaken call's own callers (DESIGN 10), and
no local copy answered while the client's listener is known to have lost its connection.
After every step: Redis holds the last completed write, and no lock is left behind (DESIGN 11:
``lock_ttl`` is 30 s, and a lock still there 3 s after every call returned is a claim nobody
holds; a call that takes 5 s fails the same way). A closed client starts no fetch and sends
no command (DESIGN 9). At every quiet point and at the end: every client answers what Redis
holds. Between quiet points a client may answer an older write than another client's last
one: its listener may lag (DESIGN 3).

``test_model`` explores at random: CI runs a small, derandomized set of examples on every
topology (seconds each); ``REDICACHE_MODEL_EXAMPLES`` (and ``REDICACHE_MODEL_STEPS``) ask for a
long random run, which ``nox -s model`` does. ``test_model_scenario`` runs each race,
cancellation, close and fault once, on purpose. To replay a failure hypothesis printed, put its
``@reproduce_failure(...)`` on :class:`CacheModel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from redicache_async import CacheClient, ClientClosedError, Entry, RegenerationInProgress
from redicache_async.keys import KeySpace
from redicache_async.stored import unpack

from .helpers import Fetch, HeldFetch
from .model_clients import MARKER, Connections, Hooks, ReplyHold, Topology
from .model_history import History, ModelViolation, Write

pytestmark = pytest.mark.topologies

T = TypeVar("T")

KEYS = ("k0", "k1", "k2")
#: The tags every value of a key is stored with (``set_many`` gives both its keys' tags to
#: both values): each key's own, and one that two keys share.
TAGS_OF = {"k0": ("tag-k0", "tag-shared"), "k1": ("tag-k1", "tag-shared"), "k2": ("tag-k2",)}
ALL_TAGS = ("tag-k0", "tag-k1", "tag-k2", "tag-shared")
#: ``(local_max_entries, protocol)`` of each client.
CLIENTS = ((10_000, 3), (2, 2), (0, 3))
#: Long, so that a lock left behind shows as a failure here, not as a slow test.
LOCK_TTL = 30.0
#: What a call may take before it counts as waiting on a claim nobody holds.
CALL_BOUND = 5.0
#: What a lock may outlive every call by (background releases) before it counts as leaked.
RELEASE_BOUND = 3.0
#: What the listeners may take to hear a message once every delay is lifted.
QUIET_BOUND = 10.0

WRITES = ("set", "delete")
#: Writes of two keys in one call: the key named and the next one.
MANY_WRITES = ("set_many", "delete_many")
clients = st.integers(0, len(CLIENTS) - 1)
keys = st.sampled_from(KEYS)
#: A call interrupted (cancelled, or its client closed) at the reply of its n-th command that
#: names the key, or while its fetch runs.
_INTERRUPTED_CALLS = st.sampled_from(("get_or_init", "attempt_regeneration"))
_INTERRUPTED_AT = st.sampled_from((1, 2, 3, "fetch"))


class _FetchMany:
    """A ``fetch_many`` that finds every key asked for, each with a fresh value (the same one
    if asked again) and its key's tags, and records each call's keys."""

    def __init__(self, model: CacheModel) -> None:
        self._model = model
        self.values: dict[str, int] = {}
        self.calls: list[list[str]] = []

    async def __call__(self, keys: list[str]) -> dict[str, Entry[int]]:
        self.calls.append(list(keys))
        for k in keys:
            self.values.setdefault(k, self._model.fresh())
        return {k: Entry(self.values[k], tags=TAGS_OF[k]) for k in keys}


def step(method: Callable[..., None]) -> Callable[..., None]:
    """Record a rule's call in the machine's :attr:`CacheModel.steps` (a failure that does not
    happen again on replay, hypothesis cannot print)."""

    @functools.wraps(method)
    def recorded(self: CacheModel, **arguments: Any) -> None:
        shown = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
        self.steps.append(f"{method.__name__}({shown})")
        method(self, **arguments)

    return recorded


class CacheModel(RuleBasedStateMachine):
    """One example: three clients on a fresh namespace, on an event loop of its own (rules are
    synchronous; each runs its coroutine to completion, so nothing runs between steps)."""

    #: Set on the subclass that :func:`test_model` makes for each topology.
    topology: Topology

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.keys = KeySpace("model" + uuid.uuid4().hex[:12])
        self.history = History(KEYS, len(CLIENTS))
        self.connections = Connections(self.topology)
        self.caches: list[CacheClient] = []
        self.hooks: list[Hooks] = []
        self.redis: list[Any] = []
        self.admin: Any = None
        self._values = itertools.count(1)
        #: The tags of each key's last write, and of every value written.
        self.tags_now: dict[str, tuple[str, ...]] = dict(TAGS_OF)
        self.value_tags: dict[int, tuple[str, ...]] = {}
        self.steps: list[str] = []
        try:
            self.run(self._open())
        except BaseException:
            self._shut()
            raise

    # -- plumbing ----------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return self.loop.run_until_complete(coro)
        except Exception as exc:
            exc.add_note("the steps of this example:\n" + "\n".join(f"  {s}" for s in self.steps))
            raise

    def wrote(
        self,
        key: str,
        value: int | None,
        what: str,
        *,
        by: int | None,
        tags: tuple[str, ...] | None = None,
    ) -> Write:
        """A write of ``key`` completed now (see ``History.wrote``), with ``tags`` (the key's
        own unless given)."""
        self.tags_now[key] = TAGS_OF[key] if tags is None else tags
        if value is not None:
            self.value_tags[value] = self.tags_now[key]
        return self.history.wrote(key, value, what, by=by)

    def fresh(self) -> int:
        return next(self._values)

    def name(self, client: int) -> str:
        return f"{self.keys.namespace}-c{client}"

    async def _open(self) -> None:
        self.admin = self.connections.client()
        for i, (_, protocol) in enumerate(CLIENTS):
            redis = self.connections.client(protocol=protocol, name=self.name(i), hooked=True)
            self.redis.append(redis)
            self.hooks.append(redis.hooks)
            self.caches.append(self.cache(i))
            await self.caches[i].start()

    def cache(self, client: int) -> CacheClient:
        """A new client ``client`` (over its Redis client, which outlives it)."""
        return CacheClient(
            self.redis[client],
            namespace=self.keys.namespace,
            local_max_entries=CLIENTS[client][0],
            lock_ttl=LOCK_TTL,
            wait_timeout=2 * LOCK_TTL,
            redis_timeout=CALL_BOUND,
        )

    async def call(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await a call of the cache; one that takes :data:`CALL_BOUND` fails the example."""
        try:
            async with asyncio.timeout(CALL_BOUND) as deadline:
                return await awaitable
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise ModelViolation(
                f"{what} did not return within {CALL_BOUND} s (lock_ttl is {LOCK_TTL} s): "
                "it waits on a claim that nobody holds, or for a wake-up that never comes "
                "(DESIGN 11)"
            ) from exc

    async def until(
        self, condition: Callable[[], bool], what: str, *, bound: float = CALL_BOUND
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while not condition():
            if loop.time() > deadline:
                raise ModelViolation(f"waited {bound} s for {what}")
            await asyncio.sleep(0.001)

    async def redis_value(self, key: str) -> Any:
        """What Redis holds for ``key`` as a reader takes it: no value when it is in another
        layout, or not newer than the namespace's clear time or one of its tags' times."""
        raw = await self.admin.get(self.keys.value(key))
        stored = None if raw is None else unpack(raw)
        if stored is None:
            return None
        cleared = await self.admin.get(self.keys.cleared)
        if cleared is not None and stored[0] <= int(cleared):
            return None
        if stored.tags:
            times = await self.admin.hmget(self.keys.tag_times, list(stored.tags))
            if any(at is not None and stored.version <= int(at) for at in times):
                return None
        return json.loads(stored[2])

    async def _settle(self, *tasks: asyncio.Task[Any] | None) -> None:
        """End tasks a failed step left running, so that none outlives it."""
        pending = [task for task in tasks if task is not None and not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CALL_BOUND)

    # -- what an answer may be ---------------------------------------------------------------

    def loaded(
        self,
        client: int,
        key: str,
        fetch: Fetch | HeldFetch,
        answer: object,
        what: str,
        *,
        floor: int | None = None,
    ) -> None:
        """Check the answer of a load (``get_or_init``) whose fetch was ``fetch``, and record
        its write if it fetched. A fetch runs only for a key that holds no value."""
        if fetch.calls > 1:
            raise ModelViolation(f"c{client} {what} ran its fetch {fetch.calls} times")
        if not fetch.calls:
            self.history.check_read(client, key, answer, what, floor=floor)
            return
        if answer != fetch.value:
            raise ModelViolation(
                f"c{client} {what} fetched {fetch.value} but answered {answer!r}\n"
                f"{self.history.describe(key)}"
            )
        current = self.history.current(key)
        if current.value is not None:
            raise ModelViolation(
                f"c{client} {what} fetched although Redis held {current}\n"
                f"{self.history.describe(key)}"
            )
        self.wrote(key, fetch.value, f"c{client}.{what} fetched", by=client)

    def regenerated(self, client: int, key: str, fetch: Fetch | HeldFetch, answer: object) -> Write:
        if fetch.calls != 1 or answer != fetch.value:
            raise ModelViolation(
                f"c{client}.attempt_regeneration({key!r}) ran its fetch {fetch.calls} times "
                f"and answered {answer!r}, not {fetch.value}"
            )
        return self.wrote(key, fetch.value, f"c{client}.attempt_regeneration", by=client)

    @staticmethod
    def left_behind(client: int, key: str) -> ModelViolation:
        return ModelViolation(
            f"c{client}.attempt_regeneration({key!r}) found the lock held, though no other "
            "call was in flight: a claim was left behind (DESIGN 11)"
        )

    async def write(self, client: int, key: str, kind: str) -> Write | None:
        """``set``, ``delete`` or ``attempt_regeneration`` by ``client``; its write, or None
        when a regeneration was refused (another call holds the lock)."""
        cache = self.caches[client]
        if kind == "set":
            value = self.fresh()
            await self.call(
                f"c{client}.set({key!r}, {value})", cache.set(key, value, tags=TAGS_OF[key])
            )
            return self.wrote(key, value, f"c{client}.set", by=client)
        if kind == "delete":
            await self.call(f"c{client}.delete({key!r})", cache.delete(key))
            return self.wrote(key, None, f"c{client}.delete", by=client)
        if kind == "clear":
            await self.call(f"c{client}.clear()", cache.clear())
            # one call, and every key of the namespace gone: each key's write is a delete
            cleared = {k: self.wrote(k, None, f"c{client}.clear", by=client) for k in KEYS}
            return cleared[key]
        if kind == "invalidate_tags":
            return (await self.invalidate(client, f"tag-{key}"))[key]
        if kind in MANY_WRITES:
            other = KEYS[(KEYS.index(key) + 1) % len(KEYS)]
            tags = tuple(dict.fromkeys(TAGS_OF[key] + TAGS_OF[other]))
            if kind == "set_many":
                values: dict[str, int | None] = {key: self.fresh(), other: self.fresh()}
                call = cache.set_many(values, tags=tags)
            else:
                values = dict.fromkeys((key, other))
                call = cache.delete_many(list(values))
            await self.call(f"c{client}.{kind}({values!r})", call)
            # one call, but each key its own write (its own version and event)
            written = [
                self.wrote(k, v, f"c{client}.{kind}", by=client, tags=tags)
                for k, v in values.items()
            ]
            return written[0]
        fetch = Fetch(self.fresh())
        try:
            answer = await self.call(
                f"c{client}.attempt_regeneration({key!r})",
                cache.attempt_regeneration(key, fetch, tags=TAGS_OF[key]),
            )
        except RegenerationInProgress:
            return None
        return self.regenerated(client, key, fetch, answer)

    async def invalidate(self, client: int, tag: str) -> dict[str, Write]:
        """``invalidate_tags(tag)`` by ``client``: a delete of each key whose value has it,
        and no value with it that ``client`` may answer from now on."""
        what = f"c{client}.invalidate_tags({tag!r})"
        await self.call(what, self.caches[client].invalidate_tags(tag))
        for k in KEYS:
            tagged = [v for v in self.history.values(k) if tag in self.value_tags.get(v, ())]
            self.history.gone_for(client, k, tagged, f"{what} removed it")
        return {k: self.wrote(k, None, what, by=None) for k in KEYS if tag in self.tags_now[k]}

    def floor(self, client: int, key: str) -> int | None:
        """The floor of a read that starts now, when stricter than the client's own: while its
        listener is known to have lost its connection (and until it has caught up), a client
        must not answer from its local copies, so it answers what Redis holds."""
        if self.hooks[client].deaf:
            return max(self.history.current(key).seq, self.history.floor(client, key))
        return None

    async def read(self, client: int, key: str, what: str = "get") -> None:
        floor = self.floor(client, key)
        answer = await self.call(f"c{client}.get({key!r})", self.caches[client].get(key))
        if floor is not None:
            what += " (its listener known to be lost)"
        self.history.check_read(client, key, answer, what, floor=floor)

    # -- plain calls -------------------------------------------------------------------------

    @rule(c=clients, k=keys)
    @step
    def set_key(self, c: int, k: str) -> None:
        self.run(self.write(c, k, "set"))

    @rule(c=clients, k=keys)
    @step
    def delete_key(self, c: int, k: str) -> None:
        self.run(self.write(c, k, "delete"))

    @rule(c=clients)
    @step
    def clear(self, c: int) -> None:
        self.run(self.write(c, KEYS[0], "clear"))

    @rule(c=clients, tag=st.sampled_from(ALL_TAGS))
    @step
    def invalidate_tags(self, c: int, tag: str) -> None:
        self.run(self.invalidate(c, tag))

    @rule(c=clients, k=keys)
    @step
    def get_key(self, c: int, k: str) -> None:
        self.run(self.read(c, k))

    @rule(c=clients, k=keys, kind=st.sampled_from(MANY_WRITES))
    @step
    def write_many(self, c: int, k: str, kind: str) -> None:
        self.run(self.write(c, k, kind))

    @rule(c=clients, wanted=st.lists(keys, min_size=1, max_size=len(KEYS), unique=True))
    @step
    def get_many(self, c: int, wanted: list[str]) -> None:
        floors = {k: self.floor(c, k) for k in wanted}
        answer = self.run(self.call(f"c{c}.get_many({wanted!r})", self.caches[c].get_many(wanted)))
        if not set(answer) <= set(wanted):
            raise ModelViolation(f"c{c}.get_many({wanted!r}) answered keys it was not asked for")
        for k in wanted:
            what = "get_many" if floors[k] is None else "get_many (its listener known to be lost)"
            self.history.check_read(c, k, answer.get(k), what, floor=floors[k])

    @rule(c=clients, wanted=st.lists(keys, min_size=1, max_size=len(KEYS), unique=True))
    @step
    def get_or_init_many(self, c: int, wanted: list[str]) -> None:
        """The batch loader: each key answered as ``get_or_init`` answers it, those that no
        process has fetched once, by one ``fetch_many``, with each key's tags."""
        fetch = _FetchMany(self)
        floors = {k: self.floor(c, k) for k in wanted}
        what = f"c{c}.get_or_init_many({wanted!r})"
        answer = self.run(self.call(what, self.caches[c].get_or_init_many(wanted, fetch)))
        if set(answer) != set(wanted):
            raise ModelViolation(f"{what} answered {sorted(answer)}: every key has a value")
        for k in wanted:
            calls = sum(k in keys for keys in fetch.calls)
            if calls > 1:
                raise ModelViolation(f"{what} fetched {k!r} {calls} times")
            if not calls:
                self.history.check_read(c, k, answer[k], "get_or_init_many", floor=floors[k])
                continue
            if answer[k] != fetch.values[k]:
                raise ModelViolation(
                    f"{what} fetched {fetch.values[k]} for {k!r} but answered {answer[k]!r}"
                )
            current = self.history.current(k)
            if current.value is not None:
                raise ModelViolation(
                    f"{what} fetched {k!r} although Redis held {current}\n"
                    f"{self.history.describe(k)}"
                )
            self.wrote(k, fetch.values[k], f"c{c}.get_or_init_many fetched", by=c)

    @rule(c=clients, k=keys)
    @step
    def get_or_init(self, c: int, k: str) -> None:
        fetch = Fetch(self.fresh())
        floor = self.floor(c, k)
        answer = self.run(
            self.call(
                f"c{c}.get_or_init({k!r})", self.caches[c].get_or_init(k, fetch, tags=TAGS_OF[k])
            )
        )
        what = "get_or_init" if floor is None else "get_or_init (its listener known to be lost)"
        self.loaded(c, k, fetch, answer, what, floor=floor)

    @rule(c=clients, k=keys)
    @step
    def attempt_regeneration(self, c: int, k: str) -> None:
        if self.run(self.write(c, k, "attempt_regeneration")) is None:
            raise self.left_behind(c, k)

    # -- races -------------------------------------------------------------------------------

    @rule(
        a=clients,
        loader=st.sampled_from(("get_or_init", "attempt_regeneration")),
        b=clients,
        k=keys,
        kind=st.sampled_from(
            (*WRITES, *MANY_WRITES, "clear", "invalidate_tags", "attempt_regeneration")
        ),
        waiter=st.sampled_from((None, 1, 2)),
    )
    @step
    def race_fetch(
        self, a: int, loader: str, b: int, k: str, kind: str, waiter: int | None
    ) -> None:
        """c{a}'s fetch of ``k`` (in a ``loader`` call) is overtaken by c{b}'s write, while
        c{a + waiter} waits on the lock. The fetched value must be stored nowhere, and the
        loader's caller gets it all the same (a regeneration, refused while the lock is
        held, overtakes nothing)."""
        self.run(self._race_fetch(a, loader, b, k, kind, waiter))

    async def _race_fetch(
        self, a: int, loader: str, b: int, k: str, kind: str, offset: int | None
    ) -> None:
        await self.write(a, k, "delete")  # so that c{a} must fetch, and a waiter wait
        fetch = HeldFetch(self.fresh())
        cache = self.caches[a]
        loading = asyncio.create_task(
            cache.get_or_init(k, fetch, tags=TAGS_OF[k])
            if loader == "get_or_init"
            else cache.attempt_regeneration(k, fetch, tags=TAGS_OF[k])
        )
        waiting: asyncio.Task[Any] | None = None
        late: asyncio.Task[Any] | None = None
        w = a if offset is None else (a + offset) % len(CLIENTS)
        #: Loads that end with the overtaken one: (client, its fetch, its task, floor, what).
        others: list[tuple[int, Fetch, asyncio.Task[Any], int, str]] = []
        #: The late caller may join the overtaken load while c{a} cannot know of the write.
        late_may_join = False
        try:
            await self.until(lambda: fetch.calls > 0 or loading.done(), f"c{a}'s fetch to start")
            if loading.done():
                try:
                    early = loading.result()
                except RegenerationInProgress:
                    raise self.left_behind(a, k) from None
                raise ModelViolation(
                    f"c{a}.{loader}({k!r}) answered {early!r} without fetching, just after its "
                    "own delete"
                )
            if offset is not None:
                cache_w, waiter_fetch = self.caches[w], Fetch(self.fresh())
                waits = cache_w.stats().lock_waits
                floor_w = self.history.floor(w, k)
                waiting = asyncio.create_task(cache_w.get_or_init(k, waiter_fetch, tags=TAGS_OF[k]))
                await self.until(
                    lambda: waiting.done() or cache_w.stats().lock_waits > waits,
                    f"c{w} to wait on c{a}'s lock",
                )
                others.append((w, waiter_fetch, waiting, floor_w, "get_or_init (waiting)"))
            overtaking = await self.write(b, k, kind)
            late, late_fetch, late_floor, late_may_join = await self._late_caller(
                a, k, overtaking, b
            )
            others.append((a, late_fetch, late, late_floor, "get_or_init (after the write)"))
            fetch.release.set()
            answer = await self.call(f"c{a}.{loader}({k!r}) (overtaken)", loading)
            for client, _, task, _, what in others:
                await self.call(f"c{client}.{what}", task)
        finally:
            fetch.release.set()
            await self._settle(loading, waiting, late)
        if answer != fetch.value:
            raise ModelViolation(
                f"c{a}.{loader}({k!r}) answered {answer!r}, not what its fetch returned "
                f"({fetch.value}): its own callers get what it fetched (DESIGN 10)"
            )
        if overtaking is None:
            self.wrote(k, fetch.value, f"c{a}.{loader} fetched", by=a)
        else:
            self.history.forbid(
                k, fetch.value, f"c{a}.{loader} fetched it before {overtaking} completed"
            )
        # A load that fetched stored a write (the one whose value Redis holds came last); the
        # others answered one of those, or an older one.
        stored = await self.redis_value(k)
        others.sort(key=lambda other: (other[1].calls == 0, other[1].value == stored))
        for client, other_fetch, task, floor, what in others:
            if task is late and late_may_join and task.result() == fetch.value:
                continue  # it joined the overtaken load, as its callers do
            self.loaded(client, k, other_fetch, task.result(), what, floor=floor)
        for client in sorted({a, b, w}):
            await self.read(client, k, "get (after the race)")

    async def _late_caller(
        self, a: int, k: str, overtaking: Write | None, b: int
    ) -> tuple[asyncio.Task[Any], Fetch, int, bool]:
        """A ``get_or_init`` of ``k`` on c{a} that starts after the write that overtook c{a}'s
        running load, once c{a} knows of it (its own write, or its listener caught up): it
        must not join that load (DESIGN 10). Returns it once it has joined a load, sent a
        command of its own, or ended; with its floor, and whether it may join the load (c{a}
        cannot know of the write: its listener is delayed)."""
        floor = self.history.floor(a, k)
        hooks = self.hooks[a]
        knows = overtaking is not None and (b == a or hooks.listening.is_set())
        if overtaking is not None and knows:
            if b != a:
                await self._caught_up([a])
            floor = max(floor, overtaking.seq)
        late_fetch = Fetch(self.fresh())
        value_key = self.keys.value(k)
        answered = hooks.answered[value_key]
        late = asyncio.create_task(self.caches[a].get_or_init(k, late_fetch, tags=TAGS_OF[k]))
        # Its read of Redis comes first; then it joins a load, or starts its own, at once.
        await self.until(
            lambda: late.done() or late_fetch.calls > 0 or hooks.answered[value_key] > answered,
            f"c{a}'s late get_or_init({k!r}) to read Redis",
        )
        for _ in range(3):
            await asyncio.sleep(0)
        return late, late_fetch, floor, not knows

    @rule(
        c=clients,
        b=clients,
        k=keys,
        reader=st.sampled_from(("get", "get_or_init")),
        kind=st.sampled_from((*WRITES, *MANY_WRITES)),
        before=st.sampled_from((None, *WRITES)),
    )
    @step
    def race_read(self, c: int, b: int, k: str, reader: str, kind: str, before: str | None) -> None:
        """c{c}'s listener is delayed, and the reply of its read of ``k`` is held while c{b}
        writes: the older reply must not replace what came after it (DESIGN 10: "``set(k,
        new)`` then ``get(k)`` gives ``new`` even while the listener lags"). With ``before``,
        another client first sets or deletes ``k``, and c{c} takes that in: its read then goes
        to Redis."""
        self.run(self._race_read(c, b, k, reader, kind, before))

    async def _race_read(
        self, c: int, b: int, k: str, reader: str, kind: str, before: str | None
    ) -> None:
        cache, hooks = self.caches[c], self.hooks[c]
        if before is not None:
            await self.write((c + 1) % len(CLIENTS), k, before)
            hooks.listening.set()
            await self._caught_up([c])
        hooks.listening.clear()
        floor = self.history.floor(c, k)
        fetch = Fetch(self.fresh())
        hold = hooks.hold_next_script(self.keys.value(k))
        what = f"{reader} (its reply held)"
        reading = asyncio.create_task(
            cache.get(k) if reader == "get" else cache.get_or_init(k, fetch, tags=TAGS_OF[k])
        )
        late: asyncio.Task[Any] | None = None
        try:
            await self.until(lambda: hold.held.is_set() or reading.done(), f"c{c}'s read")
            hooks.disarm()
            if reading.done():  # a local hit: nothing to hold
                concurrent = False
                answer = reading.result()
            else:
                concurrent = True
                await self.write(b, k, kind)
                if b == c:
                    # A read that starts after c{c}'s own write must not join the held one
                    # (another client's write, c{c} cannot know of: its listener is delayed).
                    value_key = self.keys.value(k)
                    answered = hooks.answered[value_key]
                    late_floor = self.history.floor(c, k)
                    late = asyncio.create_task(cache.get(k))
                    with contextlib.suppress(ModelViolation):  # joined: it waits for the held one
                        await self.until(
                            lambda: late.done() or hooks.answered[value_key] > answered,
                            f"c{c}'s late read of {k!r}",
                            bound=1.0,
                        )
                hold.release()
                answer = await self.call(f"c{c}.{reader}({k!r}) (held)", reading)
                if late is not None:
                    late_answer = await self.call(f"c{c}.get({k!r}) (after the write)", late)
        finally:
            hooks.disarm()
            hold.release()
            await self._settle(reading, late)
        if reader == "get":
            self.history.check_read(c, k, answer, what, floor=floor if concurrent else None)
        else:
            self.loaded(c, k, fetch, answer, what, floor=floor if concurrent else None)
        if late is not None:
            self.history.check_read(
                c, k, late_answer, "get (after its write, an older read held)", floor=late_floor
            )
        if not concurrent:
            await self.write(b, k, kind)
        await self.read(c, k, "get (after the race)")

    @rule(c=clients, k=keys, op=_INTERRUPTED_CALLS, at=_INTERRUPTED_AT)
    @step
    def cancel(self, c: int, k: str, op: str, at: int | str) -> None:
        """The call is cancelled while the reply of its ``at``-th command is on the wire (the
        server ran it: a claim, a read, a write), or while its fetch runs: whatever it claimed
        is released, and what it stored, if anything, is its fetch's value."""
        self.run(self._cancel(c, k, op, at))

    def _start_call(
        self, c: int, k: str, op: str, at: int | str
    ) -> tuple[asyncio.Task[Any], HeldFetch, ReplyHold | None]:
        """Start ``op`` of ``k`` in client ``c``, set to stop at its ``at``-th command's reply
        (held on the wire) or, with ``at="fetch"``, in its fetch."""
        cache, hooks = self.caches[c], self.hooks[c]
        fetch = HeldFetch(self.fresh())
        hold = None
        if isinstance(at, int):
            fetch.release.set()
            hold = hooks.hold_command(at, (self.keys.value(k), self.keys.lock(k)))
        calling = asyncio.create_task(
            cache.get_or_init(k, fetch, tags=TAGS_OF[k])
            if op == "get_or_init"
            else cache.attempt_regeneration(k, fetch, tags=TAGS_OF[k])
        )
        return calling, fetch, hold

    async def _reach(
        self,
        c: int,
        k: str,
        op: str,
        at: int | str,
        calling: asyncio.Task[Any],
        fetch: HeldFetch,
        hold: ReplyHold | None,
    ) -> None:
        """Wait until the call started by :meth:`_start_call` is where it was set to stop (or
        has ended), then stop holding replies."""
        await self.until(
            lambda: calling.done() or (hold.held.is_set() if hold is not None else fetch.calls > 0),
            f"c{c}.{op}({k!r}) to reach {at}",
        )
        self.hooks[c].disarm()

    async def _cancel(self, c: int, k: str, op: str, at: int | str) -> None:
        cache, hooks = self.caches[c], self.hooks[c]
        calling, fetch, hold = self._start_call(c, k, op, at)
        try:
            await self._reach(c, k, op, at, calling, fetch, hold)
            if not calling.done():
                calling.cancel()
                await asyncio.wait([calling], timeout=CALL_BOUND)
        finally:
            hooks.disarm()
            if hold is not None:
                hold.release()
            fetch.release.set()
            await self._settle(calling)
        if not calling.cancelled():
            try:
                answer = calling.result()
            except RegenerationInProgress:
                raise self.left_behind(c, k) from None
            if op == "get_or_init":
                self.loaded(c, k, fetch, answer, op)
            else:
                self.regenerated(c, k, fetch, answer)
            return
        if op == "get_or_init":
            # Its load goes on for other callers: joining it (or reading what it stored) is
            # how to know that it ended.
            settle = Fetch(self.fresh())
            answer = await self.call(
                f"c{c}.get_or_init({k!r}) (after a cancelled one)",
                cache.get_or_init(k, settle, tags=TAGS_OF[k]),
            )
        else:
            await self._released()
        if fetch.calls and await self.redis_value(k) == fetch.value:
            self.wrote(k, fetch.value, f"c{c}.{op} (cancelled) fetched", by=None)
        if op == "get_or_init":
            self.loaded(c, k, settle, answer, "get_or_init (after a cancelled one)")

    @rule(c=clients, k=keys, op=_INTERRUPTED_CALLS, at=_INTERRUPTED_AT)
    @step
    def close_during_call(self, c: int, k: str, op: str, at: int | str) -> None:
        """c{c} is closed while the reply of the ``at``-th command of a call is on the wire, or
        while its fetch runs; then replaced by a new client (a restarted process). The call
        ends (with ``ClientClosedError`` unless it had finished), and whatever it claimed is
        released before ``aclose`` returns (DESIGN 9, 11)."""
        self.run(self._close_during_call(c, k, op, at))

    async def _close_during_call(self, c: int, k: str, op: str, at: int | str) -> None:
        cache, hooks = self.caches[c], self.hooks[c]
        calling, fetch, hold = self._start_call(c, k, op, at)
        try:
            await self._reach(c, k, op, at, calling, fetch, hold)
            await self.call(f"c{c}.aclose() during {op}({k!r})", cache.aclose())
            fetches, sent = fetch.calls, hooks.sent
        finally:
            hooks.disarm()
            if hold is not None:
                hold.release()
            fetch.release.set()
            await asyncio.wait([calling], timeout=CALL_BOUND)
            await self._settle(calling)
        if fetch.calls > fetches or hooks.sent > sent:
            raise ModelViolation(
                f"c{c}.{op}({k!r}) went on after aclose() returned: "
                f"{fetch.calls - fetches} fetch(es) started and "
                f"{hooks.sent - sent} command(s) sent since (DESIGN 9)"
            )
        if calling.cancelled():
            raise ModelViolation(
                f"c{c}.{op}({k!r}) was cancelled by aclose(): its caller must get "
                "ClientClosedError (or its answer)"
            )
        error = calling.exception()
        if isinstance(error, RegenerationInProgress):
            raise self.left_behind(c, k)
        if error is not None and not isinstance(error, ClientClosedError):
            raise error
        if error is None:
            if op == "get_or_init":
                self.loaded(c, k, fetch, calling.result(), op)
            else:
                self.regenerated(c, k, fetch, calling.result())
        else:
            await self._released()
            if fetch.calls and await self.redis_value(k) == fetch.value:
                self.wrote(k, fetch.value, f"c{c}.{op} (closed) fetched", by=None)
        self.caches[c] = self.cache(c)
        hooks.new_listener()
        await self.caches[c].start()

    # -- faults ------------------------------------------------------------------------------

    @rule(c=clients, then=st.none() | st.tuples(clients, keys, st.sampled_from(WRITES)))
    @step
    def kill_listener(self, c: int, then: tuple[int, str, str] | None) -> None:
        """``CLIENT KILL`` c{c}'s pub/sub connection, then (likely before it is back) write."""
        self.run(self._kill_listener(c, then))

    async def _kill_listener(self, c: int, then: tuple[int, str, str] | None) -> None:
        hooks = self.hooks[c]
        seen = hooks.losses, hooks.subscriptions
        if await self.connections.kill_listeners(self.name(c)) and hooks.listening.is_set():
            # A listener that reads learns of the loss at once (redis-py may also reconnect
            # by itself, and the listener then sees a new subscription instead).
            await self.until(
                lambda: (hooks.losses, hooks.subscriptions) != seen, f"c{c}'s listener to notice"
            )
        if then is not None:
            await self.write(*then)

    @rule(c=clients)
    @step
    def delay_listener(self, c: int) -> None:
        """From now on c{c}'s listener hears nothing, until ``resume_listener`` or ``quiet``."""
        self.hooks[c].listening.clear()

    @rule(c=clients)
    @step
    def resume_listener(self, c: int) -> None:
        self.hooks[c].listening.set()

    @rule()
    @step
    def quiet(self) -> None:
        """Every listener catches up; then every client answers what Redis holds."""
        self.run(self._quiet())

    async def _quiet(self) -> None:
        for hooks in self.hooks:
            hooks.listening.set()
        await self._caught_up()
        for k in KEYS:
            current = self.history.current(k)
            for c, cache in enumerate(self.caches):
                answer = await self.call(f"c{c}.get({k!r})", cache.get(k))
                if answer != current.value:
                    raise ModelViolation(
                        f"once every listener had caught up, c{c}.get({k!r}) answered "
                        f"{answer!r}, but the last write is {current} (convergence)\n"
                        f"{self.history.describe(k)}"
                    )
            self.history.converged(k)

    async def _caught_up(self, clients: list[int] | None = None) -> None:
        """Until every listener (of ``clients``, if given) has been handed a message published,
        from every master, after this call began: each one is then subscribed, has replayed
        what it missed (that comes first), and has taken in every event published before."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + QUIET_BOUND
        #: For each master, the markers it published.
        published: list[set[bytes]] = []
        sent_at = -math.inf

        def behind() -> list[int]:
            return [
                c
                for c, hooks in enumerate(self.hooks)
                if (clients is None or c in clients)
                and (not published or any(not hooks.markers & mine for mine in published))
            ]

        while behind():
            if loop.time() > deadline:
                raise ModelViolation(
                    f"the listeners of {behind()} heard nothing for {QUIET_BOUND} s"
                )
            if loop.time() > sent_at + 0.05:
                marker = MARKER + uuid.uuid4().hex.encode()
                sent = await self.connections.publish_everywhere(
                    self.admin, self.keys.channel, marker
                )
                published += [set() for _ in range(len(sent) - len(published))]
                for mine, message in zip(published, sent, strict=False):
                    mine.add(message)
                sent_at = loop.time()
            await asyncio.sleep(0.001)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def redis_holds_the_last_write(self) -> None:
        self.run(self._redis_holds_the_last_write())

    async def _redis_holds_the_last_write(self) -> None:
        await self._released()
        for k in KEYS:
            stored = await self.redis_value(k)
            current = self.history.current(k)
            if stored != current.value:
                why = self.history.forbidden(k, stored)
                raise ModelViolation(
                    f"Redis holds {stored!r} for {k!r}, but the last completed write is "
                    f"{current}" + (f"; {stored!r}: {why} (DESIGN 10)" if why else "") + "\n"
                    f"{self.history.describe(k)}"
                )

    async def _released(self) -> None:
        """Every lock is gone (within :data:`RELEASE_BOUND`: releases may run in the
        background), since no call is in flight between steps."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_BOUND
        while True:
            held = [k for k in KEYS if await self.admin.exists(self.keys.lock(k))]
            if not held:
                return
            if loop.time() > deadline:
                raise ModelViolation(
                    f"the lock of {held} is still held {RELEASE_BOUND} s after every call "
                    f"returned (lock_ttl {LOCK_TTL} s): a claim that nobody holds (DESIGN 11)"
                )
            await asyncio.sleep(0.01)

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # not while a failure propagates: it would hide it
                self.run(self._quiet())
        finally:
            try:
                self.run(self._close())
            finally:
                self._shut()

    async def _close(self) -> None:
        try:
            for cache in self.caches:
                await cache.aclose()
        finally:
            await self.connections.aclose()

    def _shut(self) -> None:
        """Close the loop; a task still alive there was leaked by the library."""
        loop = self.loop
        leaked = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leaked:
            task.cancel()
        if leaked:
            loop.run_until_complete(asyncio.wait(leaked, timeout=CALL_BOUND))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        if leaked and sys.exc_info()[0] is None:
            raise AssertionError(f"tasks left running after every client was closed: {leaked}")


def _topology(kind: str, request: pytest.FixtureRequest) -> Topology:
    if kind == "cluster":
        cluster = request.getfixturevalue("cluster_servers")
        nodes = tuple((node.host, node.port) for node in cluster.nodes)
        return Topology("cluster", url=cluster.url, nodes=nodes)
    if kind == "sentinel":
        servers = request.getfixturevalue("sentinel_servers")
        nodes = tuple((node.host, node.port) for node in servers.nodes)
        return Topology(
            "sentinel",
            sentinels=tuple(servers.sentinel_addresses),
            master_name=servers.master_name,
            nodes=nodes,
        )
    url: str = request.getfixturevalue("redis_url")
    parts = urlsplit(url)
    return Topology("single", url=url, nodes=((parts.hostname or "127.0.0.1", parts.port or 6379),))


def _machine(topology: str, request: pytest.FixtureRequest) -> type[CacheModel]:
    return type(f"CacheModel_{topology}", (CacheModel,), {"topology": _topology(topology, request)})


#: The long run (``nox -s model``) asks for this many examples; CI runs a few, derandomized.
LONG_RUN = os.environ.get("REDICACHE_MODEL_EXAMPLES")


def _settings() -> settings:
    common: dict[str, Any] = {
        "deadline": None,
        "database": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow],
        # The explain phase traces every line (Python 3.11): minutes for one failure.
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    }
    if LONG_RUN is None:  # CI: a small run, the same every time
        return settings(max_examples=20, stateful_step_count=25, derandomize=True, **common)
    steps = int(os.environ.get("REDICACHE_MODEL_STEPS", "50"))
    return settings(max_examples=int(LONG_RUN), stateful_step_count=steps, **common)


# Finding a failure replays and shrinks it, seconds per try (a leaked lock is awaited for
# RELEASE_BOUND): minutes, which must end in hypothesis's report, not in a timeout. The long
# run has no bound.
@pytest.mark.timeout(0 if LONG_RUN else 900)
def test_model(topology: str, request: pytest.FixtureRequest) -> None:
    """Random histories of calls and faults on three clients keep every invariant."""
    run_state_machine_as_test(_machine(topology, request), settings=_settings())


Steps = tuple[tuple[str, dict[str, Any]], ...]


def _scenarios() -> list[Any]:
    """Every variant of each race, cancellation and fault, once: the small random run of CI
    meets only some of them."""
    found: list[Any] = []

    def add(name: str, *steps: tuple[str, dict[str, Any]]) -> None:
        found.append(pytest.param(steps, id=name))

    for loader, kind, waiter, by in itertools.product(
        ("get_or_init", "attempt_regeneration"),
        (*WRITES, "attempt_regeneration"),
        (None, 1),
        (0, 1),
    ):
        add(
            f"race_fetch-{loader}-{kind}-by-{'self' if by == 0 else 'other'}"
            + ("-waiter" if waiter else ""),
            (
                "race_fetch",
                {"a": 0, "loader": loader, "b": by, "k": "k0", "kind": kind, "waiter": waiter},
            ),
        )
    for reader, kind, c, by, before in itertools.product(
        ("get", "get_or_init"), WRITES, (0, 1), (0, 1), WRITES
    ):
        add(
            f"race_read-c{c}-{reader}-{kind}-by-{'self' if by == 0 else 'other'}-after-{before}",
            (
                "race_read",
                {
                    "c": c,
                    "b": (c + by) % len(CLIENTS),
                    "k": "k0",
                    "reader": reader,
                    "kind": kind,
                    "before": before,
                },
            ),
        )
    # The many-key writes overtake a fetch, or a held read, as set and delete do.
    for kind, by in itertools.product(MANY_WRITES, (0, 1)):
        who = "self" if by == 0 else "other"
        add(
            f"race_fetch-get_or_init-{kind}-by-{who}-waiter",
            (
                "race_fetch",
                {"a": 0, "loader": "get_or_init", "b": by, "k": "k0", "kind": kind, "waiter": 1},
            ),
        )
        add(
            f"race_read-c0-get-{kind}-by-{who}-after-set",
            (
                "race_read",
                {"c": 0, "b": by, "k": "k0", "reader": "get", "kind": kind, "before": "set"},
            ),
        )
    add(
        "many-key-calls",
        ("write_many", {"c": 0, "k": "k2", "kind": "set_many"}),
        ("get_many", {"c": 1, "wanted": ["k0", "k1", "k2"]}),
        ("write_many", {"c": 2, "k": "k0", "kind": "delete_many"}),
        ("get_many", {"c": 0, "wanted": ["k2", "k0", "k1"]}),
        ("quiet", {}),
    )
    for op, at, present in itertools.product(
        ("get_or_init", "attempt_regeneration"), (1, 2, 3, "fetch"), (False, True)
    ):
        add(
            f"cancel-{op}-at-{at}-{'present' if present else 'absent'}",
            *((("set_key", {"c": 2, "k": "k0"}),) if present else ()),
            ("cancel", {"c": 0, "k": "k0", "op": op, "at": at}),
        )
    for op, at in itertools.product(("get_or_init", "attempt_regeneration"), (1, 2, 3, "fetch")):
        add(
            f"close_during_call-{op}-at-{at}",
            ("close_during_call", {"c": 0, "k": "k0", "op": op, "at": at}),
        )
    add(
        "kill_listener-then-write",
        ("set_key", {"c": 0, "k": "k0"}),
        ("kill_listener", {"c": 0, "then": (1, "k0", "set")}),
        ("get_key", {"c": 0, "k": "k0"}),
        ("quiet", {}),
    )
    add(
        "kill_listener-then-race_fetch",
        ("kill_listener", {"c": 1, "then": None}),
        (
            "race_fetch",
            {"a": 1, "loader": "get_or_init", "b": 0, "k": "k0", "kind": "delete", "waiter": None},
        ),
    )
    add(
        "delayed_listener",
        ("set_key", {"c": 0, "k": "k0"}),
        ("delay_listener", {"c": 0}),
        ("set_key", {"c": 1, "k": "k0"}),
        ("get_key", {"c": 0, "k": "k0"}),
        ("quiet", {}),
    )
    # A clear or an invalidation of its tags overtakes a fetch, as a write does.
    for kind, by, waiter in itertools.product(("clear", "invalidate_tags"), (0, 1), (None, 1)):
        add(
            f"race_fetch-get_or_init-{kind}-by-{'self' if by == 0 else 'other'}"
            + ("-waiter" if waiter else ""),
            (
                "race_fetch",
                {
                    "a": 0,
                    "loader": "get_or_init",
                    "b": by,
                    "k": "k0",
                    "kind": kind,
                    "waiter": waiter,
                },
            ),
        )
    # Found by the long run: a waiter that answered from its local copy before its own
    # invalidation; and an invalidation's late event that took a newer copy out of the index.
    add(
        "delayed_listener-then-race_fetch-invalidate_tags",
        ("set_key", {"c": 0, "k": "k0"}),
        ("delay_listener", {"c": 0}),
        (
            "race_fetch",
            {
                "a": 2,
                "loader": "get_or_init",
                "b": 0,
                "k": "k0",
                "kind": "invalidate_tags",
                "waiter": 1,
            },
        ),
    )
    add(
        "delayed_listener-then-invalidate_tags-twice",
        ("delay_listener", {"c": 0}),
        ("invalidate_tags", {"c": 0, "tag": "tag-k0"}),
        ("attempt_regeneration", {"c": 0, "k": "k0"}),
        ("quiet", {}),
        ("invalidate_tags", {"c": 0, "tag": "tag-k0"}),
        ("quiet", {}),
    )
    add(
        "get_or_init_many",
        ("set_key", {"c": 0, "k": "k0"}),
        ("get_or_init_many", {"c": 1, "wanted": ["k0", "k1", "k2"]}),
        ("delete_key", {"c": 2, "k": "k1"}),
        ("get_or_init_many", {"c": 0, "wanted": ["k1", "k2"]}),
        ("invalidate_tags", {"c": 1, "tag": "tag-shared"}),
        ("get_or_init_many", {"c": 2, "wanted": ["k2", "k0", "k1"]}),
        ("quiet", {}),
    )
    add(
        "set_many-then-invalidate_tags-of-the-other-key",
        ("write_many", {"c": 1, "k": "k1", "kind": "set_many"}),
        ("invalidate_tags", {"c": 0, "tag": "tag-k2"}),
        ("get_many", {"c": 0, "wanted": ["k0", "k1", "k2"]}),
        ("quiet", {}),
    )
    return found


@pytest.mark.parametrize("steps", _scenarios())
def test_model_scenario(topology: str, request: pytest.FixtureRequest, steps: Steps) -> None:
    """One race, cancellation or fault of the model, on purpose, with the invariants after
    every step and the quiet check at the end."""
    machine = _machine(topology, request)()
    try:
        machine.redis_holds_the_last_write()
        for name, arguments in steps:
            getattr(machine, name)(**arguments)
            machine.redis_holds_the_last_write()
    finally:
        machine.teardown()
