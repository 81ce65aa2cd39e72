"""The Lua scripts. Each one touches keys of a single cluster slot (see ``keys.py``).

Versions are microseconds of the server's clock, bumped past the key's previous version so they
only grow, even when a key is deleted and written again or the clock steps back."""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript

__all__ = ["Scripts"]

# A version newer than both the server clock and what the hash already holds. A key of another
# type (written by hand, or by an older release) is replaced rather than failing the write.
_NEXT_VERSION = """
local t = redis.call('TIME')
local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'hash' then
  local old = tonumber(redis.call('HGET', KEYS[1], 'v'))
  if old and old >= v then v = old + 1 end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local version = string.format('%.0f', v)
"""

# KEYS[1]: value hash. Returns {payload, version, pttl}, or nil when there is no value.
READ = """
local r = redis.call('HMGET', KEYS[1], 'd', 'v')
if not r[1] then return false end
return {r[1], r[2], redis.call('PTTL', KEYS[1])}
"""

# KEYS[1]: value hash, KEYS[2]: its lock. ARGV[1]: token, ARGV[2]: lock ttl in ms,
# ARGV[3]: '1' to ignore a value that cannot be decoded.
# Returns {1, payload, version, pttl} for a value, {2} when the lock was taken for the caller,
# {3, lock pttl} when another holder has it.
READ_OR_LOCK = """
if ARGV[3] ~= '1' and redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'd', 'v')
  if r[1] then return {1, r[1], r[2], redis.call('PTTL', KEYS[1])} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3, redis.call('PTTL', KEYS[2])}
"""

# KEYS[1]: value hash, KEYS[2]: its lock. ARGV[1]: token ('' for a write that holds no lock),
# ARGV[2]: payload, ARGV[3]: ttl in ms ('0': none), ARGV[4]: channel, ARGV[5]: event prefix.
# Fenced: with a token, writes only while the lock still holds it, then releases the lock.
# Returns the new version, or nil when the lock was lost.
WRITE = (
    """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
"""
    + _NEXT_VERSION
    + """
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', version)
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
if ARGV[1] ~= '' then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. version .. '}')
return version
"""
)

# KEYS[1]: value hash. ARGV[1]: channel, ARGV[2]: event prefix. Returns the delete's version.
DELETE = (
    _NEXT_VERSION
    + """
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. version .. '}')
return version
"""
)

# KEYS[1]: lease key. ARGV[1]: token, ARGV[2]: ttl in ms. Returns 1 when extended.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1]: lease key. ARGV[1]: token, ARGV[2]: channel ('' to stay silent), ARGV[3]: event.
# Compare-and-delete, and announce the release so that waiters need not poll.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  return 1
end
return 0
"""


class Scripts:
    """The scripts registered on one Redis client (EVALSHA, loaded again on NOSCRIPT)."""

    __slots__ = ("_redis", "delete", "read", "read_or_lock", "release", "renew", "write")

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.read: AsyncScript = redis.register_script(READ)
        self.read_or_lock: AsyncScript = redis.register_script(READ_OR_LOCK)
        self.write: AsyncScript = redis.register_script(WRITE)
        self.delete: AsyncScript = redis.register_script(DELETE)
        self.renew: AsyncScript = redis.register_script(RENEW)
        self.release: AsyncScript = redis.register_script(RELEASE)

    async def load(self) -> None:
        """Load every script now, so that first calls do not pay a NOSCRIPT round trip."""
        for source in (READ, READ_OR_LOCK, WRITE, DELETE, RENEW, RELEASE):
            await self._redis.script_load(source)
