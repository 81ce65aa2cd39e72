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

from .cancellation import bounded
from .errors import REDIS_FAILURES, RedisUnavailableError, describe_error
from .invalidation import OP_BUILT, OP_RESIGN, event_prefix, plain_event
from .keys import KeySpace
from .leases import Lease
from .locks import wait_event
from .logs import Throttle
from .orphans import OrphanedClaims
from .scripts import Scripts

__all__ = ["Elected", "Leadership"]

logger = logging.getLogger("redicache_async")

_FIRST_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 2.0
#: A follower's wait past the lease's expiry, so that it asks just after the lease is gone.
_EXPIRY_MARGIN: Final = 0.002


@dataclass(frozen=True, slots=True)
class Elected:
    """What a new leader learns from Redis as it takes the lease."""

    epoch: str
    now_ms: int
    #: When the newest build recorded in Redis started (server clock), if any.
    built_at_ms: int | None
    #: The targets of that build (``targets.describe``).
    spec: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Leadership:
    """Elects, resigns and records builds for registration ``name``."""

    def __init__(
        self,
        redis: Any,
        scripts: Scripts,
        keys: KeySpace,
        name: str,
        *,
        ttl: float,
        timeout: float,
        leader_id: str,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._name = name
        self._ttl = ttl
        self._timeout = timeout
        self._leader_id = leader_id
        self._lease_key = keys.lease(name)
        self._state_key = keys.state(name)
        # A campaign whose reply was lost may have taken the lease all the same: release it
        # (announced) once Redis answers, rather than leave the registration leaderless for
        # a whole lease.
        self._orphans = OrphanedClaims(self._release_orphan)
        self._log = Throttle()

    async def aclose(self) -> None:
        """Stop, after a last bounded round of releases of the campaigns whose reply was lost
        (a campaign cancelled on the wire among them)."""
        await self._orphans.aclose(last_round=self._timeout)

    async def elect(
        self, wake: asyncio.Event, on_built: Callable[[int], None]
    ) -> tuple[Lease, Elected]:
        """Wait until this instance holds the lease.

        A follower asks again just after the current lease would expire, or as soon as ``wake``
        is set (a release was announced, the listener reconnected). Each refusal tells it when
        the newest build started (``on_built``, server ms).
        """
        failures = 0
        while True:
            wake.clear()
            # A fresh token per term: nothing of an older term can release this one. A renewal
            # may take up to a third of the lease (two thirds of it are still left by then), so
            # that a busy event loop does not make a healthy leader resign.
            lease = Lease(
                self._redis, self._scripts, self._lease_key, ttl=self._ttl, timeout=self._ttl / 3
            )
            try:
                reply = await bounded(
                    self._scripts.acquire_leader(
                        keys=[self._lease_key, self._state_key],
                        args=[lease.token, lease.ttl_ms, self._leader_id],
                    ),
                    self._timeout,
                )
            except asyncio.CancelledError:
                self._orphans.add(self._name, lease.key, lease.token)  # it may have run
                raise
            except REDIS_FAILURES as exc:
                self._orphans.add(self._name, lease.key, lease.token)
                failures += 1
                if failures == 1:
                    logger.warning(
                        "electing a leader for %r failed: %s", self._name, describe_error(exc)
                    )
                pause = min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** min(failures, 8))
            else:
                failures = 0
                if int(reply[0]) == 1:
                    built_at = _text(reply[3])
                    return lease, Elected(
                        epoch=_text(reply[1]),
                        now_ms=int(reply[2]),
                        built_at_ms=int(built_at) if built_at else None,
                        spec=_text(reply[4]),
                    )
                if _text(reply[2]):
                    on_built(int(_text(reply[2])))
                pttl = int(reply[1])
                # -1: a lease without expiry (set by hand); check again a lease later.
                pause = pttl / 1000 + _EXPIRY_MARGIN if pttl >= 0 else self._ttl
            await wait_event(wake, min(pause, self._ttl))

    async def _release_orphan(self, name: str, lease_key: str, token: str) -> bool:
        lease = Lease(
            self._redis, self._scripts, lease_key, ttl=self._ttl, timeout=self._timeout, token=token
        )
        event = plain_event(OP_RESIGN, name, "orphan")
        try:
            return await lease.release(channel=self._keys.builder_channel, event=event)
        except REDIS_FAILURES as exc:
            raise RedisUnavailableError(describe_error(exc)) from exc

    async def resign(self, lease: Lease, origin: str) -> None:
        """Release the lease if still ours and announce it, so a follower takes over now."""
        event = plain_event(OP_RESIGN, self._name, origin)
        try:
            await bounded(
                lease.release(channel=self._keys.builder_channel, event=event), self._timeout
            )
        except asyncio.CancelledError:
            self._orphans.add(self._name, lease.key, lease.token)  # released by aclose()
            raise
        except REDIS_FAILURES as exc:
            self._orphans.add(self._name, lease.key, lease.token)
            logger.warning("could not release the lease of %r: %s", self._name, describe_error(exc))

    async def record(
        self,
        lease: Lease,
        *,
        origin: str,
        interval: float,
        duration: float = 0.0,
        spec: str = "",
        error: str | None = None,
    ) -> None:
        """Note a build's outcome in the registration's state, for the next leader's schedule
        and for operators, and announce a success to the followers. Best effort: a failure
        only costs an early rebuild after a takeover."""
        outcome, text = ("error", error) if error is not None else ("ok", spec)
        announce = event_prefix(OP_BUILT, self._name, origin)
        try:
            await bounded(
                self._scripts.record_build(
                    keys=[self._lease_key, self._state_key],
                    args=[
                        lease.token,
                        outcome,
                        round(duration * 1000),
                        text,
                        self._keys.builder_channel,
                        announce,
                        repr(interval),
                    ],
                ),
                self._timeout,
            )
        except REDIS_FAILURES as exc:
            self._log.log(
                logging.WARNING,
                "record",
                "could not record the build of %r: %s",
                self._name,
                describe_error(exc),
            )
