"""The Lua scripts, registered on one Redis client (:class:`Scripts`). Their sources are in
``value_scripts.py`` (cached values) and ``lease_scripts.py`` (leases and builder targets),
from shared pieces in ``lua.py``; they are named here too, for the code and tests that send
them."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from .lease_scripts import ACQUIRE_LEADER, READ_TARGET, RECORD_BUILD, RELEASE, RENEW, SWAP_TARGETS
from .lua import STREAM_MAXLEN
from .value_scripts import (
    CLAIM,
    CLEAR,
    DELETE,
    DELETE_MANY,
    DISOWN,
    INVALIDATE_TAGS,
    READ_INVALIDATIONS,
    READ_MANY,
    READ_OR_LOCK,
    READ_OR_LOCK_MANY,
    WRITE,
    WRITE_MANY,
)

__all__ = [
    "ACQUIRE_LEADER",
    "CLAIM",
    "CLEAR",
    "DELETE",
    "DELETE_MANY",
    "DISOWN",
    "INVALIDATE_TAGS",
    "READ_INVALIDATIONS",
    "READ_MANY",
    "READ_OR_LOCK",
    "READ_OR_LOCK_MANY",
    "READ_TARGET",
    "RECORD_BUILD",
    "RELEASE",
    "RENEW",
    "STREAM_MAXLEN",
    "SWAP_TARGETS",
    "WRITE",
    "WRITE_MANY",
    "Scripts",
]

_ALL = (
    READ_MANY,
    READ_OR_LOCK,
    READ_OR_LOCK_MANY,
    CLAIM,
    CLEAR,
    INVALIDATE_TAGS,
    READ_INVALIDATIONS,
    DISOWN,
    WRITE,
    WRITE_MANY,
    DELETE,
    DELETE_MANY,
    RENEW,
    RELEASE,
    ACQUIRE_LEADER,
    RECORD_BUILD,
    SWAP_TARGETS,
    READ_TARGET,
)


class Scripts:
    """The scripts registered on one Redis client (EVALSHA, loaded again on NOSCRIPT)."""

    __slots__ = (
        "_read_many_sha",
        "_redis",
        "_write_sha",
        "acquire_leader",
        "claim",
        "clear",
        "delete",
        "delete_many",
        "disown",
        "invalidate_tags",
        "read_invalidations",
        "read_or_lock",
        "read_or_lock_many",
        "read_target",
        "record_build",
        "release",
        "renew",
        "swap_targets",
        "write",
        "write_many",
    )

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._read_many_sha = hashlib.sha1(READ_MANY.encode()).hexdigest()
        self._write_sha = hashlib.sha1(WRITE.encode()).hexdigest()
        self.read_or_lock: AsyncScript = redis.register_script(READ_OR_LOCK)
        self.read_or_lock_many: AsyncScript = redis.register_script(READ_OR_LOCK_MANY)
        self.write: AsyncScript = redis.register_script(WRITE)
        self.delete: AsyncScript = redis.register_script(DELETE)
        self.claim: AsyncScript = redis.register_script(CLAIM)
        self.clear: AsyncScript = redis.register_script(CLEAR)
        self.disown: AsyncScript = redis.register_script(DISOWN)
        self.invalidate_tags: AsyncScript = redis.register_script(INVALIDATE_TAGS)
        self.read_invalidations: AsyncScript = redis.register_script(READ_INVALIDATIONS)
        self.write_many: AsyncScript = redis.register_script(WRITE_MANY)
        self.delete_many: AsyncScript = redis.register_script(DELETE_MANY)
        self.renew: AsyncScript = redis.register_script(RENEW)
        self.release: AsyncScript = redis.register_script(RELEASE)
        self.acquire_leader: AsyncScript = redis.register_script(ACQUIRE_LEADER)
        self.record_build: AsyncScript = redis.register_script(RECORD_BUILD)
        self.swap_targets: AsyncScript = redis.register_script(SWAP_TARGETS)
        self.read_target: AsyncScript = redis.register_script(READ_TARGET)

    async def read_value(self, key: str) -> Any:
        """A plain GET of value ``key``, answered as READ_MANY answers for each key: the stored
        string, None, or 0 when the key holds another type (an older release's hash)."""
        try:
            return await self._redis.execute_command("GET", key)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return 0
            raise

    async def read_values(self, keys: list[str]) -> list[Any]:
        """READ_MANY of value ``keys``."""
        return await self._evalsha(READ_MANY, self._read_many_sha, keys)  # type: ignore[no-any-return]

    async def write_value(self, keys: list[str], args: list[Any]) -> Any:
        """WRITE (``keys`` and ``args`` as it documents them): a hot call, see ``_evalsha``."""
        return await self._evalsha(WRITE, self._write_sha, keys, *args)

    async def _evalsha(self, source: str, sha: str, keys: list[str], *args: Any) -> Any:
        """``EVALSHA`` of a hot script, sent directly rather than through redis-py's script
        wrapper (an import, tuple copies and a type check per call), loading the script on
        ``NOSCRIPT`` as the wrapper does."""
        try:
            return await self._redis.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(source)
            return await self._redis.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """Load every script now, so that first calls do not pay a NOSCRIPT round trip."""
        for source in _ALL:
            await self._redis.script_load(source)
