"""The Lua scripts. Each one touches keys of a single cluster slot (see ``keys.py``), except
the namespace's event stream, which is passed only where it shares the node (not on a cluster).

Versions are microseconds of the server's clock, bumped past the key's previous version so they
only grow, even when a key is deleted and written again or the clock steps back."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["STREAM_MAXLEN", "Scripts"]

#: Entries the namespace's event stream keeps (approximately: ``XADD MAXLEN ~``). A listener
#: that was away for fewer events than this replays them; beyond it, it flushes its local layer.
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

# The layout of a value (``stored.py``): one string, a header then the payload.
# ``stored_version(key)``: the version in the header of the value at ``key``, or nil when it has
# none (no key, or a key of another type or layout: an older release's hash, a hand-written
# string; the write replaces it). Only the header is read, not the payload.
# ``header(version, t, ttl, flags)``: the header of a value written at server time ``t`` (a TIME
# reply) for ``ttl`` ms (0: none), with ``flags`` ('00', or '01': a tag section follows). Its
# expiry is taken 1 ms early: the key's own expiry counts from the script's start, which TIME
# may be a little past, and a reader's deadline must never outlast the key.
_HEADER = """
local function stored_version(key)
  local h = redis.pcall('GETRANGE', key, 0, 16)
  if type(h) == 'string' and #h == 17 and string.byte(h, 1) == 1 then
    return tonumber(string.sub(h, 2), 16)
  end
  return nil
end
local function header(version, t, ttl, flags)
  local expires = 0
  if ttl > 0 then
    expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1 + ttl
  end
  return string.format('\\1%016x%012x%s', tonumber(version), expires, flags)
end
"""

# Read scripts start with this line. A script declared with a shebang (and without the
# ``no-writes`` flag) is refused by a replica (READONLY), as a write would be. Without it, a
# client still connected to a master that a failover demoted would read the replica it became,
# which answers "no value" while it resyncs. ``allow-oom``: a read may run when memory is full.
# A lone read is a plain GET (see ``client/loads.py`` for how it keeps this guarantee).
_READ_FROM_MASTER = "#!lua flags=allow-oom\n"

# KEYS: values. Returns, for each, its stored string (header and payload), nil when there is
# none, or 0 when the key holds another type (an older release's hash: read as no value, and
# counted). Any other error is the server's (a cluster slot between two masters...) and is
# returned as such: it must not read as "no value". One call reads the values that concurrent
# callers asked for (``batching.py``).
READ_MANY = (
    _READ_FROM_MASTER
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local r = redis.pcall('GET', key)
  if type(r) == 'table' then
    if not string.find(r.err, 'WRONGTYPE', 1, true) then return r end
    out[i] = 0
  else
    out[i] = r
  end
end
return out
"""
)

# The claim of a write lock: ``SET NX PX``, and when it is taken, the server's clock at that
# moment in µs, as text (``claimed``): the earliest version the fetch it guards may write (see
# WRITE), so that a value is never newer than what its fetch could have read.
_CLAIM = """
local function claim(lock, token, ttl)
  if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then return nil end
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
"""

# One key's read or claim, shared by READ_OR_LOCK and READ_OR_LOCK_MANY so that
# ``get_or_init`` and ``get_or_init_many`` cannot drift apart. ``value``, ``lock``: its keys;
# ``token``, ``ttl``: the claim's; ``ignore``: '1' to ignore the value (it cannot be decoded,
# or is in a layout the client skips); ``cleared``: the namespace's clear time as the client
# knows it: a value not newer is no value.
# Returns {1, stored value} for a value in this layout, {2, claimed} when the lock was taken
# for the caller, {3, lock pttl} when another holder has it.
_READ_OR_CLAIM = (
    _CLAIM
    + """
local function read_or_claim(value, lock, token, ttl, ignore, cleared)
  if ignore ~= '1' then
    local r = redis.pcall('GET', value)
    if type(r) == 'string' and string.byte(r, 1) == 1
       and tonumber(string.sub(r, 2, 17), 16) > tonumber(cleared) then
      return {1, r}
    end
  end
  local claimed = claim(lock, token, ttl)
  if claimed then return {2, claimed} end
  return {3, redis.call('PTTL', lock)}
end
"""
)

# KEYS[1]: value, KEYS[2]: its lock. ARGV[1]: token, ARGV[2]: lock ttl in ms, ARGV[3]: '1' to
# ignore the value, ARGV[4]: the clear time. Returns as ``read_or_claim``.
READ_OR_LOCK = (
    _READ_OR_CLAIM
    + """
return read_or_claim(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

# KEYS: the value and the lock of each key (one cluster slot). ARGV[1]: lock ttl in ms,
# ARGV[2]: the clear time, then each key's token. ``get_or_init_many``'s reads and claims of
# one slot, each key as READ_OR_LOCK does it. Returns each key's reply, in order.
READ_OR_LOCK_MANY = (
    _READ_OR_CLAIM
    + """
local out = {}
for i = 1, math.floor(#KEYS / 2) do
  out[i] = read_or_claim(KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 2], ARGV[1], '0', ARGV[2])
end
return out
"""
)

# KEYS[1]: a lock. ARGV[1]: token, ARGV[2]: ttl in ms. Returns when it was claimed (see
# _CLAIM), or nil when another holder has it.
CLAIM = (
    _CLAIM
    + """
return claim(KEYS[1], ARGV[1], ARGV[2])
"""
)

# Refuses a ttl that is not a whole number of ms in [0, 2^53): checked before anything is
# written, so that a bad argument can never leave a value written without its event, or a lock.
# ``ttl_arg`` is the argument that holds it; sets ``ttl``, the number, for ``write_one``.
_CHECK_TTL = """
local ttl = tonumber({ttl_arg})
if not ttl or ttl < 0 or ttl >= 9007199254740992 or ttl ~= math.floor(ttl) then
  return redis.error_reply('ERR redicache: invalid ttl ' .. tostring({ttl_arg}))
end
"""

# One value's write, shared by WRITE and WRITE_MANY so that ``set`` and ``set_many`` cannot
# drift apart. ``value``, ``lock``: its keys; ``stream``: the event stream or nil; ``token``:
# '' for a write that holds no lock; ``ttl``: ms (0: none), ``ttl_arg`` the same as sent;
# ``claimed``: with a token, when its lock was claimed (``_CLAIM``). The version of a fenced
# write is that claim's time (bumped past the stored version), not the write's: its fetch may
# have read the source at any moment since, so a clear() after the claim must find the value
# older than itself. Without a token, a floor ('' or a version) that the version passes: the
# latest clear or invalidation of its tags that the writer knows of, whose time may come from
# another node's clock (a cluster's nodes' clocks may differ), so that a write made after it
# is never taken for older. ``cleared``: the namespace's clear time key, where it shares the
# node (not on a cluster): a fenced write that a clear overtook is refused (0: the lock is
# still held).
# ``flags``: the header's ('01': ``payload`` starts with the value's tag section, see
# ``stored.py``); ``tag_times``: the namespace's tag times (a hash), where it shares the node: a
# fenced write that an ``invalidate_tags`` of one of its tags overtook is refused the same way.
# Fenced: with a token, writes only while the lock still holds it. Every write deletes the lock:
# its holder's release, or a revocation (memcache's lease invalidation) when another holder
# fetches meanwhile, so that its older result is refused here and cannot undo this write.
# SET replaces a key of any type (an older release's hash) and, without PX, its expiry.
# Returns the new version, or false when the lock was lost.
_WRITE_ONE = """
local function write_one(value, lock, stream, token, payload, ttl, ttl_arg, channel, prefix,
                         claimed, cleared, flags, tag_times)
  if token ~= '' and redis.call('GET', lock) ~= token then return false end
  if token ~= '' and claimed and cleared then
    local since = tonumber(claimed)
    if (tonumber(redis.call('GET', cleared)) or 0) >= since then return 0 end
    if tag_times and flags == '01' then
      local size = tonumber(string.sub(payload, 1, 4), 16)
      local tags = cjson.decode(string.sub(payload, 5, 4 + size))
      for _, at in ipairs(redis.call('HMGET', tag_times, unpack(tags))) do
        if (tonumber(at) or 0) >= since then return 0 end
      end
    end
  end
  local t = redis.call('TIME')
  local version
  if token ~= '' and claimed then
    version = bump(stored_version(value), {0, claimed})
  else
    version = bump(math.max(stored_version(value) or 0, tonumber(claimed) or 0), t)
  end
  if ttl > 0 then
    redis.call('SET', value, header(version, t, ttl, flags) .. payload, 'PX', ttl_arg)
  else
    redis.call('SET', value, header(version, t, 0, flags) .. payload)
  end
  redis.call('DEL', lock)
  announce(stream, channel, prefix .. version .. '}')
  return version
end
"""

# One value's delete, shared by DELETE and DELETE_MANY: deletes the value and revokes its lock
# (see ``_WRITE_ONE``), so that a fetch that started before the delete can no longer store its
# result. Returns the delete's version.
_DELETE_ONE = """
local function delete_one(value, lock, stream, channel, prefix)
  local version = bump(stored_version(value), redis.call('TIME'))
  redis.call('DEL', value, lock)
  announce(stream, channel, prefix .. version .. '}')
  return version
end
"""

# KEYS[1]: value, KEYS[2]: its lock, KEYS[3..5] (optional, together: not on a cluster): the
# event stream, the namespace's clear time and its tag times. ARGV[1]: token ('' for a write
# that holds no lock), ARGV[2]: payload (after its tag section, if flagged), ARGV[3]: ttl in ms
# ('0': none), ARGV[4]: channel, ARGV[5]: event prefix, ARGV[6]: when the lock was claimed
# (with a token; else ''), ARGV[7]: the header's flags (see ``_WRITE_ONE``).
# Returns the new version, or nil when the lock was lost (see ``_WRITE_ONE``).
WRITE = (
    _ANNOUNCE
    + _BUMP
    + _HEADER
    + _CHECK_TTL.format(ttl_arg="ARGV[3]")
    + _WRITE_ONE
    + """
return write_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ttl, ARGV[3], ARGV[4], ARGV[5],
                 ARGV[6], KEYS[4], ARGV[7], KEYS[5])
"""
)

# KEYS: the value and the lock of each key (one cluster slot), then (optional, when the count
# is odd) the event stream. ARGV[1]: ttl in ms ('0': none), ARGV[2]: channel, ARGV[3]: the
# header's flags (the same tags for every key), ARGV[4]: the versions' floor (see
# ``_WRITE_ONE``), then per key its payload and its event prefix. ``set_many``'s writes of
# one slot: each key as WRITE writes it without a lock (its own version and event; its lock
# revoked), checked once before any is written. Returns the new versions, in order.
WRITE_MANY = (
    _ANNOUNCE
    + _BUMP
    + _HEADER
    + _CHECK_TTL.format(ttl_arg="ARGV[1]")
    + _WRITE_ONE
    + """
local n = math.floor(#KEYS / 2)
local stream = KEYS[2 * n + 1]
local versions = {}
for i = 1, n do
  versions[i] = write_one(KEYS[2 * i - 1], KEYS[2 * i], stream, '', ARGV[2 * i + 3], ttl,
                          ARGV[1], ARGV[2], ARGV[2 * i + 4], ARGV[4], nil, ARGV[3], nil)
end
return versions
"""
)

# KEYS[1]: value, KEYS[2]: its lock, KEYS[3] (optional): the event stream.
# ARGV[1]: channel, ARGV[2]: event prefix. Returns the delete's version (see ``_DELETE_ONE``).
DELETE = (
    _ANNOUNCE
    + _BUMP
    + _HEADER
    + _DELETE_ONE
    + """
return delete_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"""
)

# KEYS[1]: a value. ARGV[1]: a version, ARGV[2]: channel, ARGV[3]: event prefix. Deletes the
# value if it is still that version, and announces it. On a cluster, where a fenced write cannot
# see the namespace's clear time, its writer takes back a value that a clear overtook.
DISOWN = (
    _ANNOUNCE
    + _BUMP
    + _HEADER
    + """
local stored = stored_version(KEYS[1])
if not stored or stored ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
announce(nil, ARGV[2], ARGV[3] .. bump(stored, redis.call('TIME')) .. '}')
return 1
"""
)

# KEYS: the value and the lock of each key (one cluster slot), then (optional, when the count
# is odd) the event stream. ARGV[1]: channel, then each key's event prefix. ``delete_many``'s
# deletes of one slot, each as DELETE does it. Returns the versions, in order.
DELETE_MANY = (
    _ANNOUNCE
    + _BUMP
    + _HEADER
    + _DELETE_ONE
    + """
local n = math.floor(#KEYS / 2)
local stream = KEYS[2 * n + 1]
local versions = {}
for i = 1, n do
  versions[i] = delete_one(KEYS[2 * i - 1], KEYS[2 * i], stream, ARGV[1], ARGV[i + 1])
end
return versions
"""
)

# KEYS[1]: the namespace's clear time, KEYS[2] (optional): the event stream. ARGV[1]: channel,
# ARGV[2]: event prefix. Every value whose version is not above the new clear time is gone
# (readers skip it; the next write replaces it). Returns that time.
CLEAR = (
    _ANNOUNCE
    + _BUMP
    + """
local cleared = bump(redis.call('GET', KEYS[1]), redis.call('TIME'))
redis.call('SET', KEYS[1], cleared)
announce(KEYS[2], ARGV[1], ARGV[2] .. cleared .. '}')
return cleared
"""
)

# KEYS[1]: the namespace's clear time, KEYS[2]: its tag times (one slot: the namespace's).
# ARGV: tags. Returns the clear time (false: never) then each tag's time (false: never), in
# one round trip: what a fenced write on a cluster, whose script cannot read them, checks.
READ_INVALIDATIONS = (
    _READ_FROM_MASTER
    + """
local out = {redis.call('GET', KEYS[1])}
if #ARGV > 0 then
  for _, at in ipairs(redis.call('HMGET', KEYS[2], unpack(ARGV))) do out[#out + 1] = at end
end
return out
"""
)

# KEYS[1]: the namespace's tag times (a hash: tag -> version), KEYS[2] (optional): the event
# stream. ARGV[1]: channel, ARGV[2]: event prefix, ARGV[3...]: tags. Every value with one of
# these tags whose version is not above the new time is gone (readers skip it, as after a
# clear). One time for all of them, bumped past each one's last, and one event. Returns it.
INVALIDATE_TAGS = (
    _ANNOUNCE
    + _BUMP
    + """
local latest = nil
for _, at in ipairs(redis.call('HMGET', KEYS[1], unpack(ARGV, 3))) do
  at = tonumber(at)
  if at and (not latest or at > latest) then latest = at end
end
local at = bump(latest, redis.call('TIME'))
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = at
end
redis.call('HSET', KEYS[1], unpack(fields))
announce(KEYS[2], ARGV[1], ARGV[2] .. at .. '}')
return at
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

# KEYS[1]: a registration's lease, KEYS[2]: its state hash. ARGV[1]: token, ARGV[2]: lease ttl
# in ms, ARGV[3]: who leads (for operators). The epoch is the server clock in microseconds,
# bumped past the previous epoch, so every new term's epoch is higher than every older one.
# Returns {1, epoch, now_ms, built_at_ms or '', spec or ''} when elected, else
# {0, lease pttl, built_at_ms or ''}.
ACQUIRE_LEADER = (
    _BUMP
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[2], 'built_at') or ''}
end
local t = redis.call('TIME')
local epoch = bump(redis.call('HGET', KEYS[2], 'epoch'), t)
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', KEYS[2], 'epoch', epoch, 'leader', ARGV[3], 'elected_at', now)
return {1, epoch, now, redis.call('HGET', KEYS[2], 'built_at') or '',
        redis.call('HGET', KEYS[2], 'spec') or ''}
"""
)

# KEYS[1]: lease, KEYS[2]: state. ARGV[1]: token, ARGV[2]: 'ok' or 'error', ARGV[3]: the build's
# duration in ms, ARGV[4]: the spec (ok) or the error text, ARGV[5]: channel, ARGV[6]: the prefix
# of the event announcing a build (its version is when the build started, in ms), ARGV[7]: the
# refresh interval in seconds (for operators). Recorded only by the lease holder.
RECORD_BUILD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'interval', ARGV[7])
if ARGV[2] == 'ok' then
  local built_at = string.format('%.0f', now - tonumber(ARGV[3]))
  redis.call('HSET', KEYS[2], 'built_at', built_at, 'duration_ms', ARGV[3], 'spec', ARGV[4],
             'last_error', '')
  redis.call('HINCRBY', KEYS[2], 'builds', 1)
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. built_at .. '}')
else
  redis.call('HSET', KEYS[2], 'last_error', ARGV[4], 'error_at', string.format('%.0f', now))
  redis.call('HINCRBY', KEYS[2], 'failures', 1)
end
return 1
"""

# KEYS: (temporary, target, meta) for each target of one slot, then, when they share the
# targets' node, the lease and the event stream ('' token otherwise: fencing then rests on the
# epochs alone). ARGV[1]: token,
# ARGV[2]: epoch, ARGV[3]: channel, ARGV[4]: registration name, then per target: type, element
# count (0: the result was empty, delete the target), event prefix.
# Checks everything before changing anything, so the targets move together or not at all.
# Returns {1, version...}, {0, reason} when fenced off, {2, reason} when a copy is incomplete.
SWAP_TARGETS = (
    _ANNOUNCE
    + _BUMP
    + """
local n = math.floor(#KEYS / 3)
if ARGV[1] ~= '' and redis.call('GET', KEYS[3*n+1]) ~= ARGV[1] then
  return {0, 'the leader lease is no longer ours'}
end
local epoch = tonumber(ARGV[2])
local count = {string='EXISTS', list='LLEN', hash='HLEN', set='SCARD', zset='ZCARD'}
for i = 1, n do
  local temp, target, meta = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local last = tonumber(redis.call('HGET', meta, 'epoch'))
  if last and last > epoch then return {0, 'a newer leader has written ' .. target} end
  local kind, want = ARGV[3*i+2], tonumber(ARGV[3*i+3])
  if want > 0 and (redis.call('TYPE', temp)['ok'] ~= kind
                   or redis.call(count[kind], temp) ~= want) then
    return {2, 'the new copy of ' .. target .. ' is incomplete'}
  end
end
local t = redis.call('TIME')
local reply = {1}
for i = 1, n do
  local temp, target, meta = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  if tonumber(ARGV[3*i+3]) > 0 then
    redis.call('RENAME', temp, target)
    redis.call('PERSIST', target)
  else
    redis.call('DEL', temp, target)
  end
  local version = bump(redis.call('HGET', meta, 'v'), t)
  redis.call('HSET', meta, 'epoch', ARGV[2], 'v', version, 'type', ARGV[3*i+2],
             'n', ARGV[3*i+3], 'name', ARGV[4])
  announce(KEYS[3*n+2], ARGV[3], ARGV[3*i+4] .. version .. '}')
  reply[i + 1] = version
end
return reply
"""
)

# KEYS[1]: a builder target, KEYS[2]: its meta hash. ARGV[1]: a hash field ('' for everything).
# Returns {redis type, data or nil, version ('0': not written by a builder), built type, size}.
READ_TARGET = (
    _READ_FROM_MASTER
    + """
local meta = redis.call('HMGET', KEYS[2], 'v', 'type', 'n')
local kind = redis.call('TYPE', KEYS[1])['ok']
local data = false
if ARGV[1] ~= '' then
  if kind == 'hash' then data = redis.call('HGET', KEYS[1], ARGV[1]) end
elseif kind == 'string' then data = redis.call('GET', KEYS[1])
elseif kind == 'list' then data = redis.call('LRANGE', KEYS[1], 0, -1)
elseif kind == 'hash' then data = redis.call('HGETALL', KEYS[1])
elseif kind == 'set' then data = redis.call('SMEMBERS', KEYS[1])
elseif kind == 'zset' then data = redis.call('ZRANGE', KEYS[1], 0, -1)
end
return {kind, data, meta[1] or '0', meta[2] or '', meta[3] or ''}
"""
)

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
