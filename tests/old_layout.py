"""The scripts of the release before the string layout (taken verbatim from commit 249508e,
``redicache_async/scripts.py``): values were hashes (fields ``d``, the payload, and ``v``, the
version), read with HMGET + PTTL. ``tests/test_stored.py`` runs them beside this release's
client, as an old process of a rolling deploy would."""

from __future__ import annotations

__all__ = ["OLD_DELETE", "OLD_READ_MANY", "OLD_READ_OR_LOCK", "OLD_WRITE"]

STREAM_MAXLEN = 10_000

# Publishes an invalidation and, when a stream key is given, appends it to the stream first and
# tells the id in the published event, so listeners know where to resume after a disconnect.
_ANNOUNCE = f"""
local function announce(stream, channel, event)
  if stream then
    local id = redis.call('XADD', stream, 'MAXLEN', '~', {STREAM_MAXLEN}, '*', 'e', event)
    event = string.sub(event, 1, -2) .. ',"id":"' .. id .. '"}}'
  end
  redis.call('PUBLISH', channel, event)
end
"""

# Versions and epochs: the server clock ``t`` (a TIME reply) in microseconds, bumped past
# ``old`` (a stored version, or false/nil) so that they only grow. Returned as text (Lua prints
# large numbers with an exponent otherwise).
_BUMP = """
local function bump(old, t)
  local v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  old = tonumber(old)
  if old and old >= v then v = old + 1 end
  return string.format('%.0f', v)
end
"""

# A version newer than both the server clock and what the hash already holds. A key of another
# type (written by hand, or by an older release) is replaced rather than failing the write.
_NEXT_VERSION = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local old = false
if kind == 'hash' then
  old = redis.call('HGET', KEYS[1], 'v')
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local version = bump(old, redis.call('TIME'))
"""

# Read scripts start with this line. A script declared with a shebang (and without the
# ``no-writes`` flag) is refused by a replica (READONLY), as a write would be. Without it, a
# client still connected to a master that a failover demoted would read the replica it became,
# which answers "no value" while it resyncs. ``allow-oom``: a read may run when memory is full.
_READ_FROM_MASTER = "#!lua flags=allow-oom\n"

# KEYS: value hashes. Returns, for each, {payload, version, pttl}, or false when it has no value
# (a key of another type, or a hash without both fields, written by hand, has none: pcall turns
# a WRONGTYPE into an error table). Any other error is the server's (a cluster slot between two
# masters...) and is returned as such: it must not read as "no value". One call reads the
# values that concurrent callers asked for (``batching.py``).
OLD_READ_MANY = (
    _READ_FROM_MASTER
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local r = redis.pcall('HMGET', key, 'd', 'v')
  if r.err then
    if not string.find(r.err, 'WRONGTYPE', 1, true) then return r end
    out[i] = false
  elseif r[1] and r[2] then
    out[i] = {r[1], r[2], redis.call('PTTL', key)}
  else
    out[i] = false
  end
end
return out
"""
)

# KEYS[1]: value hash, KEYS[2]: its lock. ARGV[1]: token, ARGV[2]: lock ttl in ms,
# ARGV[3]: '1' to ignore a value that cannot be decoded.
# Returns {1, payload, version, pttl} for a value, {2} when the lock was taken for the caller,
# {3, lock pttl} when another holder has it.
OLD_READ_OR_LOCK = """
if ARGV[3] ~= '1' and redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  local r = redis.call('HMGET', KEYS[1], 'd', 'v')
  if r[1] and r[2] then return {1, r[1], r[2], redis.call('PTTL', KEYS[1])} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3, redis.call('PTTL', KEYS[2])}
"""

# Refuses a ttl that is not a whole number of ms in [0, 2^53): checked before anything is
# written, so that a bad argument can never leave a value written without its event, or a lock.
_CHECK_TTL = """
local ttl = tonumber(ARGV[3])
if not ttl or ttl < 0 or ttl >= 9007199254740992 or ttl ~= math.floor(ttl) then
  return redis.error_reply('ERR redicache: invalid ttl ' .. tostring(ARGV[3]))
end
"""

# KEYS[1]: value hash, KEYS[2]: its lock, KEYS[3] (optional): the event stream.
# ARGV[1]: token ('' for a write that holds no lock),
# ARGV[2]: payload, ARGV[3]: ttl in ms ('0': none), ARGV[4]: channel, ARGV[5]: event prefix.
# Fenced: with a token, writes only while the lock still holds it. Every write deletes the lock:
# its holder's release, or a revocation (memcache's lease invalidation) when another holder
# fetches meanwhile, so that its older result is refused here and cannot undo this write.
# Returns the new version, or nil when the lock was lost.
OLD_WRITE = (
    _ANNOUNCE
    + _BUMP
    + _CHECK_TTL
    + """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
"""
    + _NEXT_VERSION
    + """
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'v', version)
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
redis.call('DEL', KEYS[2])
announce(KEYS[3], ARGV[4], ARGV[5] .. version .. '}')
return version
"""
)

# KEYS[1]: value hash, KEYS[2]: its lock, KEYS[3] (optional): the event stream.
# ARGV[1]: channel, ARGV[2]: event prefix. Deletes the value and revokes its lock (see WRITE):
# a fetch that started before the delete can no longer store its result. Returns the delete's
# version.
OLD_DELETE = (
    _ANNOUNCE
    + _BUMP
    + _NEXT_VERSION
    + """
redis.call('DEL', KEYS[1], KEYS[2])
announce(KEYS[3], ARGV[1], ARGV[2] .. version .. '}')
return version
"""
)
