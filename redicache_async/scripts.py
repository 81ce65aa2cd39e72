"""The Lua scripts, registered on one Redis client (:class:`Scripts`). Their sources are in
``value_scripts.py`` (cached values) and ``lease_scripts.py`` (leases and builder targets),
from shared pieces in ``lua.py``."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import direct
from . import lease_scripts as leases
from . import value_scripts as values

__all__ = ["Scripts"]

_ALL = tuple(getattr(module, name) for module in (values, leases) for name in module.__all__)


class Scripts:
    """The scripts registered on one Redis client (EVALSHA, loaded again on NOSCRIPT)."""

    __slots__ = (
        "_pool",
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
        self._pool = direct.direct_pool(redis)
        self._read_many_sha = hashlib.sha1(values.READ_MANY.encode()).hexdigest()
        self._write_sha = hashlib.sha1(values.WRITE.encode()).hexdigest()
        self.read_or_lock: AsyncScript = redis.register_script(values.READ_OR_LOCK)
        self.read_or_lock_many: AsyncScript = redis.register_script(values.READ_OR_LOCK_MANY)
        self.write: AsyncScript = redis.register_script(values.WRITE)
        self.delete: AsyncScript = redis.register_script(values.DELETE)
        self.claim: AsyncScript = redis.register_script(values.CLAIM)
        self.clear: AsyncScript = redis.register_script(values.CLEAR)
        self.disown: AsyncScript = redis.register_script(values.DISOWN)
        self.invalidate_tags: AsyncScript = redis.register_script(values.INVALIDATE_TAGS)
        self.read_invalidations: AsyncScript = redis.register_script(values.READ_INVALIDATIONS)
        self.write_many: AsyncScript = redis.register_script(values.WRITE_MANY)
        self.delete_many: AsyncScript = redis.register_script(values.DELETE_MANY)
        self.renew: AsyncScript = redis.register_script(leases.RENEW)
        self.release: AsyncScript = redis.register_script(leases.RELEASE)
        self.acquire_leader: AsyncScript = redis.register_script(leases.ACQUIRE_LEADER)
        self.record_build: AsyncScript = redis.register_script(leases.RECORD_BUILD)
        self.swap_targets: AsyncScript = redis.register_script(leases.SWAP_TARGETS)
        self.read_target: AsyncScript = redis.register_script(leases.READ_TARGET)

    async def read_value(self, key: str) -> Any:
        """A plain GET of value ``key``, answered as READ_MANY answers for each key: the stored
        string, None, or 0 when the key holds another type (an older release's hash)."""
        try:
            return await self._command("GET", key)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                return 0
            raise

    async def read_values(self, keys: list[str]) -> list[Any]:
        """READ_MANY of value ``keys``."""
        return await self._evalsha(values.READ_MANY, self._read_many_sha, keys)  # type: ignore[no-any-return]

    async def write_value(self, keys: list[str], args: list[Any]) -> Any:
        """WRITE (``keys`` and ``args`` as it documents them): a hot call, see ``_evalsha``."""
        return await self._evalsha(values.WRITE, self._write_sha, keys, *args)

    async def _evalsha(self, source: str, sha: str, keys: list[str], *args: Any) -> Any:
        """``EVALSHA`` of a hot script, sent directly rather than through redis-py's script
        wrapper (an import, tuple copies and a type check per call), loading the script on
        ``NOSCRIPT`` as the wrapper does."""
        try:
            return await self._command("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(source)
            return await self._command("EVALSHA", sha, len(keys), *keys, *args)

    async def _command(self, *args: Any) -> Any:
        """A hot command: sent directly where it can be (see ``direct.py``), else, and after
        a connection the server dropped, through redis-py's ``execute_command``."""
        pool = self._pool
        if pool is not None:
            try:
                return await direct.call(pool, args)
            except (RedisConnectionError, RedisTimeoutError):
                pass  # redis-py's retry policy decides, as for any command
        return await self._redis.execute_command(*args)

    async def load(self) -> None:
        """Load every script now, so that first calls do not pay a NOSCRIPT round trip."""
        for source in _ALL:
            await self._redis.script_load(source)
