"""Lua pieces that several scripts share (``value_scripts.py``, ``lease_scripts.py``): the
announcement of a change, the version bump, the stored value's header, and the shebang of
read scripts.

Versions are microseconds of the server's clock, bumped past the key's previous version so they
only grow, even when a key is deleted and written again or the clock steps back."""

from __future__ import annotations

__all__ = ["ANNOUNCE", "BUMP", "HEADER", "READ_FROM_MASTER", "STREAM_MAXLEN"]

#: Entries the namespace's event stream keeps (approximately: ``XADD MAXLEN ~``). A listener
#: that was away for fewer events than this replays them; beyond it, it flushes its local layer.
STREAM_MAXLEN = 10_000

# Publishes an invalidation and, when a stream key is given, appends it to the stream first and
# tells the id in the published event, so listeners know where to resume after a disconnect.
ANNOUNCE = f"""
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
BUMP = """
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
HEADER = """
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
READ_FROM_MASTER = "#!lua flags=allow-oom\n"
