"""The scripts of cached values: reads, the read-or-lock of a miss, the claim of a lock,
writes (one value or many, fenced or not), deletes, and the namespace's clear and tag
invalidation. Each touches keys of a single cluster slot (see ``keys.py``), except the
namespace's event stream, which is passed only where it shares the node (not on a cluster)."""

from __future__ import annotations

from .lua import ANNOUNCE, BUMP, HEADER, READ_FROM_MASTER

__all__ = [
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
    "WRITE",
    "WRITE_MANY",
]

# KEYS: values. Returns, for each, its stored string (header and payload), nil when there is
# none, or 0 when the key holds another type (an older release's hash: read as no value, and
# counted). Any error is the server's (a cluster slot between two masters...) and is raised as
# such: it must not read as "no value". One call reads the values that concurrent callers
# asked for (``batching.py``): one MGET (half the server time of a GET per key), which answers
# nil for a key of another type too, so only those keys are looked at again.
READ_MANY = (
    READ_FROM_MASTER
    + """
local out = redis.call('MGET', unpack(KEYS))
for i, r in ipairs(out) do
  if not r and redis.call('TYPE', KEYS[i])['ok'] ~= 'none' then out[i] = 0 end
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
    ANNOUNCE
    + BUMP
    + HEADER
    + _CHECK_TTL.format(ttl_arg="ARGV[3]")
    + _WRITE_ONE
    + """
return write_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ttl, ARGV[3], ARGV[4], ARGV[5],
                 ARGV[6], KEYS[4], ARGV[7], KEYS[5])
"""
)

# The loop of a many-key script: KEYS holds each key's value and lock (one cluster slot), then
# (optional, when the count is odd) the event stream; ``call`` writes or deletes the i-th key
# and returns its version. Returns the versions, in order.
_EACH_KEY = """
local n = math.floor(#KEYS / 2)
local stream = KEYS[2 * n + 1]
local versions = {{}}
for i = 1, n do
  versions[i] = {call}
end
return versions
"""

# KEYS: the value and the lock of each key (one cluster slot), then (optional, when the count
# is odd) the event stream. ARGV[1]: ttl in ms ('0': none), ARGV[2]: channel, ARGV[3]: the
# header's flags (the same tags for every key), ARGV[4]: the versions' floor (see
# ``_WRITE_ONE``), then per key its payload and its event prefix. ``set_many``'s writes of
# one slot: each key as WRITE writes it without a lock (its own version and event; its lock
# revoked), checked once before any is written. Returns the new versions, in order.
WRITE_MANY = (
    ANNOUNCE
    + BUMP
    + HEADER
    + _CHECK_TTL.format(ttl_arg="ARGV[1]")
    + _WRITE_ONE
    + _EACH_KEY.format(
        call="write_one(KEYS[2 * i - 1], KEYS[2 * i], stream, '', ARGV[2 * i + 3], ttl, ARGV[1],"
        " ARGV[2], ARGV[2 * i + 4], ARGV[4], nil, ARGV[3], nil)"
    )
)

# KEYS[1]: value, KEYS[2]: its lock, KEYS[3] (optional): the event stream.
# ARGV[1]: channel, ARGV[2]: event prefix. Returns the delete's version (see ``_DELETE_ONE``).
DELETE = (
    ANNOUNCE
    + BUMP
    + HEADER
    + _DELETE_ONE
    + """
return delete_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"""
)

# KEYS[1]: a value. ARGV[1]: a version, ARGV[2]: channel, ARGV[3]: event prefix. Deletes the
# value if it is still that version, and announces it. On a cluster, where a fenced write cannot
# see the namespace's clear time, its writer takes back a value that a clear overtook.
DISOWN = (
    ANNOUNCE
    + BUMP
    + HEADER
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
    ANNOUNCE
    + BUMP
    + HEADER
    + _DELETE_ONE
    + _EACH_KEY.format(
        call="delete_one(KEYS[2 * i - 1], KEYS[2 * i], stream, ARGV[1], ARGV[i + 1])"
    )
)

# KEYS[1]: the namespace's clear time, KEYS[2] (optional): the event stream. ARGV[1]: channel,
# ARGV[2]: event prefix. Every value whose version is not above the new clear time is gone
# (readers skip it; the next write replaces it). Returns that time.
CLEAR = (
    ANNOUNCE
    + BUMP
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
    READ_FROM_MASTER
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
    ANNOUNCE
    + BUMP
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
