"""Leadership of one builder registration: a lease per registration, so that among all the
instances that register the same name exactly one builds it, and work spreads across them.

Each term has an epoch (the server clock in microseconds, bumped past the previous term's), used
to fence the writes of a leader that was deposed without knowing it. A registration's shared
record (its *state*: epoch, leader, last build, last error) sits in the lease's slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .backoff import Backoff, jittered
from .errors import REDIS_FAILURES, RedisUnavailableError, describe_error
from .gateway import RedisGateway
from .invalidation import OP_BUILT, OP_RESIGN, event_prefix, plain_event
from .keys import KeySpace
from .leases import Lease
from .locks import LockManager, wait_event
from .logs import Throttle
from .replies import text
from .scripts import Scripts

__all__ = ["Elected", "Electorate", "Leadership"]

logger = logging.getLogger("redicache_async")

#: A failed campaign is retried after 0.05 s, backing off (jittered) up to 2 s.
_RETRIES: Final = (0.05, 2.0)
#: A follower's wait past the lease's expiry, so that it asks just after the lease is gone,
#: and the spread added to it, so that the followers of a crashed leader do not all ask at once.
_EXPIRY_MARGIN: Final = 0.002
_EXPIRY_SPREAD: Final = 0.02


@dataclass(frozen=True, slots=True)
class Electorate:
    """What every registration of one builder campaigns with."""

    #: The builder's Redis, and the deadline (``redis_timeout``) of every call to it.
    gateway: RedisGateway
    scripts: Scripts
    keys: KeySpace
    #: How an instance names itself as a leader in Redis (``host:pid:random``).
    leader_id: str
    #: The instance's id in the events it publishes.
    origin: str
    lease_ttl: float

    @property
    def redis(self) -> Any:
        return self.gateway.redis

    @property
    def redis_timeout(self) -> float:
        return self.gateway.timeout


@dataclass(frozen=True, slots=True)
class Elected:
    """What a new leader learns from Redis as it takes the lease."""

    epoch: str
    now_ms: int
    #: When the newest build recorded in Redis started (server clock), if any.
    built_at_ms: int | None
    #: The targets of that build (``targets.describe``).
    spec: str


class Leadership:
    """Elects, resigns and records builds for registration ``name``."""

    def __init__(self, electorate: Electorate, name: str) -> None:
        self._electorate = electorate
        self._name = name
        self._lease_key = electorate.keys.lease(name)
        self._state_key = electorate.keys.state(name)
        # A campaign whose reply was lost may have taken the lease all the same: its orphans
        # release it (announced) once Redis answers, rather than leave the registration
        # leaderless for a whole lease.
        self._locks = LockManager(
            electorate.redis,
            electorate.scripts,
            self._release_claim,
            ttl=electorate.lease_ttl,
            timeout=electorate.redis_timeout,
            noun="lease",
        )
        self._log = Throttle()

    async def aclose(self) -> None:
        """Stop, after a last bounded round of releases of the campaigns whose reply was lost
        (a campaign cancelled on the wire among them)."""
        await self._locks.aclose(last_round=self._electorate.redis_timeout)

    async def elect(
        self, wake: asyncio.Event, on_built: Callable[[int], None]
    ) -> tuple[Lease, Elected]:
        """Wait until this instance holds the lease.

        A follower asks again just after the current lease would expire, or as soon as ``wake``
        is set (a release was announced, the listener reconnected). Each refusal tells it when
        the newest build started (``on_built``, server ms).
        """
        failures = 0
        delays = Backoff(*_RETRIES)
        while True:
            wake.clear()
            # A fresh token per term: nothing of an older term can release this one. A renewal
            # may take up to a third of the lease (two thirds of it are still left by then), so
            # that a busy event loop does not make a healthy leader resign.
            lease = self._locks.lease(self._lease_key, timeout=self._electorate.lease_ttl / 3)
            try:
                reply = await self._electorate.gateway.bounded(
                    self._electorate.scripts.acquire_leader(
                        keys=[self._lease_key, self._state_key],
                        args=[lease.token, lease.ttl_ms, self._electorate.leader_id],
                    )
                )
            except asyncio.CancelledError:
                self._locks.unanswered(None, self._name, lease.key, lease.token)  # it may have run
                raise
            except REDIS_FAILURES as exc:
                self._locks.unanswered(exc, self._name, lease.key, lease.token)
                failures += 1
                if failures == 1:
                    logger.warning(
                        "electing a leader for %r failed: %s", self._name, describe_error(exc)
                    )
                pause = delays.next()
            else:
                failures = 0
                delays.reset()
                if int(reply[0]) == 1:
                    built_at = text(reply[3])
                    return lease, Elected(
                        epoch=text(reply[1]),
                        now_ms=int(reply[2]),
                        built_at_ms=int(built_at) if built_at else None,
                        spec=text(reply[4]),
                    )
                if text(reply[2]):
                    on_built(int(text(reply[2])))
                pttl = int(reply[1])
                # -1: a lease without expiry (set by hand); check again a lease later.
                pause = pttl / 1000 + _EXPIRY_MARGIN if pttl >= 0 else self._electorate.lease_ttl
                pause = jittered(pause, _EXPIRY_SPREAD)
            await wait_event(wake, min(pause, self._electorate.lease_ttl))

    async def _release_claim(self, name: str, lease_key: str, token: str) -> bool:
        event = plain_event(OP_RESIGN, name, self._electorate.origin)
        lease = self._locks.lease(lease_key, token)
        try:
            return await lease.release(channel=self._electorate.keys.builder_channel, event=event)
        except REDIS_FAILURES as exc:
            raise RedisUnavailableError(describe_error(exc)) from exc

    async def resign(self, lease: Lease) -> None:
        """Release the lease if still ours and announce it, so a follower takes over now (or,
        when Redis does not answer, once it does: see :class:`LockManager`)."""
        await self._locks.release(self._name, lease.key, lease.token)

    async def record(
        self,
        lease: Lease,
        *,
        interval: float,
        duration: float = 0.0,
        spec: str = "",
        error: str | None = None,
    ) -> None:
        """Note a build's outcome in the registration's state, for the next leader's schedule
        and for operators, and announce a success to the followers. Best effort: a failure
        only costs an early rebuild after a takeover."""
        outcome, detail = ("error", error) if error is not None else ("ok", spec)
        announce = event_prefix(OP_BUILT, self._name, self._electorate.origin)
        try:
            await self._electorate.gateway.bounded(
                self._electorate.scripts.record_build(
                    keys=[self._lease_key, self._state_key],
                    args=[
                        lease.token,
                        outcome,
                        round(duration * 1000),
                        detail,
                        self._electorate.keys.builder_channel,
                        announce,
                        repr(interval),
                    ],
                )
            )
        except REDIS_FAILURES as exc:
            self._log.log(
                logging.WARNING,
                "record",
                "could not record the build of %r: %s",
                self._name,
                describe_error(exc),
            )
