"""CacheBuilder: caches that build themselves at once and then every interval.

Each registration runs as one task owned by the builder (``refresh.py``). Among every instance
that registers the same name, one leads (see ``election.py``) and builds; the others wait to
take over. A build fetches, writes the result beside its targets and swaps it in atomically
(see ``target_swap.py``). This module keeps the registrations and routes the builders' channel to
them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from redicache_async.errors import (
    REDIS_FAILURES,
    BuildError,
    InvalidArgumentError,
    UnknownRegistrationError,
    describe_error,
)
from redicache_async.fetching import FetchRunner
from redicache_async.gateway import RedisGateway
from redicache_async.invalidation import OP_BUILT, OP_REFRESH, OP_RESIGN, Event, plain_event
from redicache_async.keys import KeySpace
from redicache_async.lifecycle import Lifecycle
from redicache_async.listener import InvalidationListener
from redicache_async.scripts import Scripts
from redicache_async.serializers import Serializer, check_serializer
from redicache_async.stats import BuilderStats
from redicache_async.targets import Target, check_targets, describe
from redicache_async.tasks import OwnedTasks
from redicache_async.validation import (
    check_args,
    check_callable,
    check_count,
    check_flag,
    check_kwargs,
    check_name,
    check_optional_seconds,
    check_seconds,
)

from .refresh import Registration
from .spec import BuildStatus, Shared, Spec

__all__ = ["CacheBuilder"]

logger = logging.getLogger("redicache_async")

_UNSET: Final[Any] = object()


class CacheBuilder(Lifecycle):
    """Registers caches that build themselves, over ``redis`` (``redis.asyncio.Redis``).

    Use it as ``async with CacheBuilder(r, namespace="app") as builder:`` (or ``await
    builder.start()`` / ``await builder.aclose()``). Closing it stops every refresh loop and
    releases this instance's leases, so that another instance takes over at once.
    """

    def __init__(
        self,
        redis: Any,
        *,
        namespace: str = "redicache",
        lease_ttl: float = 10.0,
        serializer: Serializer | None = None,
        redis_timeout: float = 1.0,
        fetch_timeout: float | None = 300.0,
        fetch_threads: int = 32,
    ) -> None:
        keys = KeySpace(namespace)
        lease_ttl = check_seconds("lease_ttl", lease_ttl, minimum=0.1)
        serializer = check_serializer(serializer)
        redis_timeout = check_seconds("redis_timeout", redis_timeout)
        origin = uuid.uuid4().hex[:16]
        self._shared = Shared(
            gateway=RedisGateway(redis, timeout=redis_timeout),
            scripts=Scripts(redis),
            keys=keys,
            serializer=serializer,
            origin=origin,
            leader_id=f"{socket.gethostname()}:{os.getpid()}:{origin[:8]}",
            lease_ttl=lease_ttl,
            fetcher=FetchRunner(
                timeout=check_optional_seconds("fetch_timeout", fetch_timeout),
                threads=check_count("fetch_threads", fetch_threads, minimum=1),
            ),
        )
        self._registrations: dict[str, Registration] = {}
        #: The refresh loops: none outlives aclose().
        self._tasks = OwnedTasks("CacheBuilder")
        self._ignored_messages = 0
        self._listener = InvalidationListener(
            redis,
            keys.builder_channel,
            on_event=self._on_event,
            on_subscribed=self._on_subscribed,
            on_ignored=self._on_ignored,
            timeout=self._shared.redis_timeout,
        )

    def __repr__(self) -> str:
        return f"<CacheBuilder namespace={self.namespace!r} id={self._shared.leader_id}>"

    @property
    def namespace(self) -> str:
        """The prefix of the keys and channels this builder writes (not of its targets)."""
        return self._shared.keys.namespace

    @property
    def ignored_messages(self) -> int:
        """Messages on the builders' channel that were malformed or foreign, and so ignored."""
        return self._ignored_messages

    @property
    def instance_id(self) -> str:
        """How this instance names itself as a leader in Redis: ``host:pid:random``."""
        return self._shared.leader_id

    async def start(self) -> None:
        """Subscribe to the builders' channel; returns once subscribed (or after
        ``redis_timeout`` when Redis is unreachable: the builder then keeps trying)."""
        await super().start()

    async def _startup(self) -> None:
        subscribed = await self._listener.start(wait=self._shared.redis_timeout)
        if not subscribed:
            logger.warning("Redis is not reachable yet; registrations will build once it is")

    async def aclose(self) -> None:
        """Stop every refresh loop and release this instance's leases (announced, so that a
        follower takes over at once). Idempotent; shielded from cancellation."""
        await super().aclose()

    async def _shutdown(self) -> None:
        registrations = list(self._registrations.values())
        self._registrations.clear()
        await asyncio.gather(*(registration.stop(closing=True) for registration in registrations))
        await self._tasks.aclose()
        await self._listener.aclose()

    async def register(
        self,
        fetch: Callable[..., Any],
        *,
        targets: Sequence[Target],
        refresh_interval: float,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        allow_empty: bool = True,
    ) -> str:
        """Build ``targets`` from ``fetch(*args, **kwargs)`` now and every ``refresh_interval``
        seconds, on whichever instance leads ``name``. Returns the name.

        Without a ``name``, one is derived from the targets, so every instance that registers
        the same targets agrees on it. An empty result empties the targets unless
        ``allow_empty`` is False, which treats it as a failed build and keeps the old data.
        """
        spec = Spec(
            fetch=check_callable("fetch", fetch),
            targets=check_targets(targets),
            refresh_interval=check_seconds("refresh_interval", refresh_interval),
            args=check_args(args),
            kwargs=check_kwargs(kwargs),
            allow_empty=check_flag("allow_empty", allow_empty),
        )
        if name is None:
            digest = hashlib.sha1(describe(spec.targets).encode(), usedforsecurity=False)
            name = f"targets-{digest.hexdigest()[:16]}"
        else:
            check_name(name)
        self._check_open()
        if name in self._registrations:
            raise InvalidArgumentError(f"a registration named {name!r} already exists")
        self._check_targets_free(spec.targets, name)
        registration = Registration(name, spec, self._shared)
        registration.start(self._tasks)
        self._registrations[name] = registration
        return name

    async def update(
        self,
        name: str,
        *,
        fetch: Callable[..., Any] = _UNSET,
        targets: Sequence[Target] = _UNSET,
        refresh_interval: float = _UNSET,
        args: Sequence[Any] = _UNSET,
        kwargs: Mapping[str, Any] | None = _UNSET,
        allow_empty: bool = _UNSET,
    ) -> None:
        """Change a registration live. A new fetch, arguments or targets are built at once (on
        the leader); a new interval reschedules the next build from the previous one's start.
        Targets left out keep their last data."""
        registration = self._get(name)
        changes: dict[str, Any] = {}
        if fetch is not _UNSET:
            changes["fetch"] = check_callable("fetch", fetch)
        if targets is not _UNSET:
            changes["targets"] = check_targets(targets)
            self._check_targets_free(changes["targets"], name)
        if refresh_interval is not _UNSET:
            changes["refresh_interval"] = check_seconds("refresh_interval", refresh_interval)
        if args is not _UNSET:
            changes["args"] = check_args(args)
        if kwargs is not _UNSET:
            changes["kwargs"] = check_kwargs(kwargs)
        if allow_empty is not _UNSET:
            changes["allow_empty"] = check_flag("allow_empty", allow_empty)
        self._check_open()
        registration.update(dataclasses.replace(registration.spec, **changes))

    async def unregister(self, name: str) -> None:
        """Stop building ``name`` and release its lease; its targets keep their last data."""
        registration = self._get(name)
        del self._registrations[name]
        await registration.stop()

    async def refresh(self, name: str) -> None:
        """Rebuild ``name`` now.

        On the leader, returns once that build is swapped in and raises :class:`BuildError`
        if it failed (the previous data stays). On a follower, asks the leader over pub/sub and
        returns at once.
        """
        registration = self._get(name)
        self._check_open()
        if registration.is_leader:
            await registration.refresh()
            return
        channel = self._shared.keys.builder_channel
        event = plain_event(OP_REFRESH, name, self._shared.origin)
        try:
            await self._shared.gateway.bounded(self._shared.redis.publish(channel, event))
        except REDIS_FAILURES as exc:
            raise BuildError(name, f"could not ask the leader: {describe_error(exc)}") from exc

    def status(self, name: str) -> BuildStatus:
        """How ``name`` stands on this instance."""
        return self._get(name).status()

    def stats(self) -> BuilderStats:
        """This instance's counters, summed over its registrations. Plain reads, safe from
        any thread."""
        registrations = list(self._registrations.values())
        return BuilderStats(
            registrations=len(registrations),
            leading=sum(r.is_leader for r in registrations),
            terms=sum(r.terms for r in registrations),
            builds=sum(r.builds for r in registrations),
            failures=sum(r.failures for r in registrations),
            ignored_messages=self._ignored_messages,
        )

    async def wait_built(self, name: str, timeout: float | None = None) -> None:
        """Return once ``name`` has been built, by any instance (at once if it already was);
        raises TimeoutError after ``timeout`` seconds."""
        registration = self._get(name)
        self._check_open()
        async with asyncio.timeout(check_optional_seconds("timeout", timeout)):
            await registration.wait_built()

    def names(self) -> list[str]:
        """The names registered on this builder."""
        return list(self._registrations)

    def _get(self, name: str) -> Registration:
        registration = self._registrations.get(name) if isinstance(name, str) else None
        if registration is None:
            raise UnknownRegistrationError(name)
        return registration

    def _check_targets_free(self, targets: tuple[Target, ...], name: str) -> None:
        for other in self._registrations.values():
            if other.name == name:
                continue
            taken = {t.key for t in other.spec.targets}.intersection(t.key for t in targets)
            if taken:
                raise InvalidArgumentError(
                    f"target {sorted(taken)[0]!r} is already built by registration {other.name!r}"
                )

    def _on_event(self, event: Event) -> None:
        registration = self._registrations.get(event.key)
        if registration is None:
            return
        if event.op == OP_RESIGN and not registration.is_leader:
            registration.wake.set()  # the lease is free: try to take it now
        elif event.op == OP_REFRESH and registration.is_leader:
            registration.request_build()
        elif event.op == OP_BUILT:
            registration.note_built(event.version)

    def _on_ignored(self) -> None:
        self._ignored_messages += 1

    def _on_subscribed(self, caught_up: bool) -> None:
        # A release may have been announced while the listener was away.
        for registration in self._registrations.values():
            if not registration.is_leader:
                registration.wake.set()
