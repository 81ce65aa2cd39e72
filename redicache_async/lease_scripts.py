"""The scripts of leases and builder targets: a lease's renewal and release, a
registration's leadership and build record, the atomic swap of a build's targets, and a
target's read."""

from __future__ import annotations

from .lua import ANNOUNCE, BUMP, READ_FROM_MASTER

__all__ = ["ACQUIRE_LEADER", "READ_TARGET", "RECORD_BUILD", "RELEASE", "RENEW", "SWAP_TARGETS"]

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
    BUMP
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
    ANNOUNCE
    + BUMP
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
    READ_FROM_MASTER
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
