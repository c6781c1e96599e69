"""The Lua scripts of the Redis PresenceStore: the rules of presence/state.py, run atomically.

Keys (``P`` = the store's prefix):

* ``P deadlines`` — a sorted set of every recorded device, scored by its deadline (last
  heartbeat + timeout); member ``<len(user)>:<user><device>`` (length-prefixed: no separator to
  escape). It is the device registry: a plain heartbeat is one ``ZADD … GT`` (a deadline never
  moves back) whose reply says whether the device is new.
* ``P d:<user>`` — the set of the user's recorded devices (exists while the user is online).
* ``P s:<user>`` — the user's summary, ``"1:<last_seen>"`` (online) or ``"0:<last_seen>"``,
  written on transitions and closes only, so a query is one ``MGET`` for many users and no
  script. An online user's summary has no TTL (it lives as long as their devices); an offline
  user's expires after the retention.

Scripts build the user keys from the prefix, so on Redis Cluster the prefix must hold a hash tag
(``{presence}:``) to keep every key on the shard that owns ``KEYS[1]``. Times are Lua numbers
(ms fit a double exactly) written back with ``%.0f``.
"""

from __future__ import annotations

from typing import Final

# Shared by both scripts: remove a device, updating the user's summary; the user's last_seen
# if that was their last device (they went offline), else nil.
_FORGET: Final = """
local function fmt(n) return string.format('%.0f', n) end
local function seen_of(skey)
  local s = redis.call('GET', skey)
  if s then return tonumber(string.sub(s, 3)) end
  return nil
end
local function forget(deadlines, prefix, retention, user, device, member, seen_at)
  redis.call('ZREM', deadlines, member)
  local dkey, skey = prefix .. 'd:' .. user, prefix .. 's:' .. user
  redis.call('SREM', dkey, device)
  local seen = seen_of(skey)
  if not seen or seen_at > seen then seen = seen_at end
  if redis.call('SCARD', dkey) > 0 then
    redis.call('SET', skey, '1:' .. fmt(seen))
    return nil
  end
  redis.call('SET', skey, '0:' .. fmt(seen), 'PX', retention)
  return seen
end
"""

# KEYS[1] deadlines. ARGV: prefix, timeout_ms, retention_ms, then (kind, user, device, at_ms)…
# kind "h" = heartbeat, "c" = clean close. Returns flat (user, 1|0 online/offline, last_seen)….
APPLY: Final = (
    _FORGET
    + """
local deadlines, prefix = KEYS[1], ARGV[1]
local timeout, retention = tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 4, #ARGV, 4 do
  local kind, user, device, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local member = #user .. ':' .. user .. device
  if kind == 'h' then
    if redis.call('ZADD', deadlines, 'GT', at + timeout, member) == 1 then  -- a new device
      local dkey, skey = prefix .. 'd:' .. user, prefix .. 's:' .. user
      redis.call('SADD', dkey, device)
      if redis.call('SCARD', dkey) == 1 then
        local seen = seen_of(skey)
        if not seen or at > seen then seen = at end
        redis.call('SET', skey, '1:' .. fmt(seen))
        out[#out + 1] = user; out[#out + 1] = 1; out[#out + 1] = fmt(seen)
      end
    end
  else
    local deadline = redis.call('ZSCORE', deadlines, member)
    if deadline then  -- a clean close of a recorded device (of an unknown one: nothing)
      local last = tonumber(deadline) - timeout
      local seen = forget(deadlines, prefix, retention, user, device, member, math.max(at, last))
      if seen then
        out[#out + 1] = user; out[#out + 1] = 0; out[#out + 1] = fmt(seen)
      end
    end
  end
end
return out
"""
)

# KEYS[1] deadlines. ARGV: prefix, timeout_ms, now_ms, limit, retention_ms.
# Returns {more (1|0), then flat (user, last_seen)…} for the users that went offline.
EXPIRE: Final = (
    _FORGET
    + """
local deadlines, prefix = KEYS[1], ARGV[1]
local timeout, retention = tonumber(ARGV[2]), ARGV[5]
local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. ARGV[3], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {0}
for i = 1, #due, 2 do
  local member = due[i]
  local colon = string.find(member, ':', 1, true)
  local n = tonumber(string.sub(member, 1, colon - 1))
  local user = string.sub(member, colon + 1, colon + n)
  local device = string.sub(member, colon + n + 1)
  local seen = forget(deadlines, prefix, retention, user, device, member, tonumber(due[i + 1]) - timeout)
  if seen then
    out[#out + 1] = user; out[#out + 1] = fmt(seen)
  end
end
if #redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1) > 0 then out[1] = 1 end
return out
"""
)
