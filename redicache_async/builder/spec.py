"""What a builder's registrations are made of: a registration's settings (:class:`Spec`),
what every registration of one builder shares (:class:`Shared`), and how one stands
(:class:`BuildStatus`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redicache_async.election import Electorate
from redicache_async.errors import ClientClosedError
from redicache_async.fetching import FetchRunner
from redicache_async.serializers import Serializer
from redicache_async.targets import Target

__all__ = ["BuildStatus", "Shared", "Spec", "closed_error"]


@dataclass(frozen=True, slots=True)
class BuildStatus:
    """One registration as this instance sees it (``CacheBuilder.status``)."""

    name: str
    #: This instance holds the registration's lease and does its builds.
    is_leader: bool
    refresh_interval: float
    targets: tuple[str, ...]
    #: Successful and failed builds run by this instance.
    builds: int
    failures: int
    #: Wall-clock time (``time.time()``) at which the newest build known here started; it may
    #: have been run by another instance.
    last_built_at: float | None
    #: Seconds that this instance's last successful build took.
    last_duration: float | None
    #: The newest failure of this instance's builds (``"Type: message"``); None after a success.
    last_error: str | None
    #: When the next build is due (wall clock), while leading.
    next_build_at: float | None
    #: The fencing epoch of the current term, while leading.
    epoch: int | None


@dataclass(frozen=True, slots=True)
class Spec:
    fetch: Callable[..., Any]
    targets: tuple[Target, ...]
    refresh_interval: float
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    allow_empty: bool


@dataclass(frozen=True, slots=True)
class Shared(Electorate):
    """What every registration of one builder uses: what it campaigns with, and what its
    builds need besides."""

    serializer: Serializer
    fetcher: FetchRunner


def closed_error(reason: str) -> Exception:
    return ClientClosedError(f"the builder was closed: {reason}")
