"""The Lua scripts of the Redis PresenceStore: the rules of presence/state.py, run atomically.

Keys (``P`` = the store's prefix):

* ``P u:<user>`` — a hash: field ``""`` holds last_seen, every other field is a device and its
  last heartbeat (ms since the Unix epoch). Its TTL (the retention) is renewed on every write,
  so a user's last_seen outlives their last device by the retention period.
* ``P deadlines`` — a sorted set of every recorded device, scored by its deadline (last heartbeat
  + timeout); member ``<len(user)>:<user><device>`` (length-prefixed: no separator to escape).

Scripts build the user keys from the prefix, so on Redis Cluster the prefix must hold a hash tag
(``{presence}:``) to keep every key on the shard that owns ``KEYS[1]``. Times are compared as
numbers and written back as the strings they came as (ms fit a Lua double exactly).
"""

from __future__ import annotations

from typing import Final

# KEYS[1] deadlines. ARGV: prefix, timeout_ms, retention_ms, then (kind, user, device, at_ms)…
# kind "h" = heartbeat, "c" = clean close. Returns flat (user, 1|0 online/offline, last_seen)….
APPLY: Final = """
local deadlines, prefix = KEYS[1], ARGV[1]
local timeout, retention = tonumber(ARGV[2]), ARGV[3]
local out = {}
for i = 4, #ARGV, 4 do
  local kind, user, device, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = prefix .. 'u:' .. user
  local member = #user .. ':' .. user .. device
  local got = redis.call('HMGET', key, '', device)
  local seen, last = got[1], got[2]
  if kind == 'h' then
    local t = at
    if last and tonumber(last) > tonumber(at) then t = last end
    local new_seen = t
    if seen and tonumber(seen) > tonumber(t) then new_seen = seen end
    local went_online = false
    if not last then
      went_online = redis.call('HLEN', key) == (seen and 1 or 0)
    end
    redis.call('HSET', key, device, t, '', new_seen)
    redis.call('PEXPIRE', key, retention)
    redis.call('ZADD', deadlines, tonumber(t) + timeout, member)
    if went_online then
      out[#out + 1] = user; out[#out + 1] = 1; out[#out + 1] = new_seen
    end
  elseif last then
    local new_seen = at
    if tonumber(last) > tonumber(new_seen) then new_seen = last end
    if seen and tonumber(seen) > tonumber(new_seen) then new_seen = seen end
    redis.call('HDEL', key, device)
    redis.call('ZREM', deadlines, member)
    redis.call('HSET', key, '', new_seen)
    redis.call('PEXPIRE', key, retention)
    if redis.call('HLEN', key) == 1 then
      out[#out + 1] = user; out[#out + 1] = 0; out[#out + 1] = new_seen
    end
  end
end
return out
"""

# KEYS[1] deadlines. ARGV: prefix, timeout_ms, now_ms, limit.
# Returns {more (1|0), then flat (user, last_seen)…} for the users that went offline.
EXPIRE: Final = """
local deadlines, prefix = KEYS[1], ARGV[1]
local timeout, now, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {0}
local removed = 0
while removed < limit do
  local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. ARGV[3], 'LIMIT', 0, limit - removed)
  if #due == 0 then break end
  for _, member in ipairs(due) do
    local colon = string.find(member, ':', 1, true)
    local n = tonumber(string.sub(member, 1, colon - 1))
    local user = string.sub(member, colon + 1, colon + n)
    local device = string.sub(member, colon + n + 1)
    local key = prefix .. 'u:' .. user
    local last = redis.call('HGET', key, device)
    if last and tonumber(last) + timeout >= now then
      -- Heartbeated after all (its score was stale): keep it, with its real deadline.
      redis.call('ZADD', deadlines, tonumber(last) + timeout, member)
    else
      redis.call('ZREM', deadlines, member)
      if last then
        redis.call('HDEL', key, device)
        removed = removed + 1
        if redis.call('HLEN', key) <= 1 then
          out[#out + 1] = user
          out[#out + 1] = redis.call('HGET', key, '') or last
        end
      end
    end
  end
end
if #redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1) > 0 then out[1] = 1 end
return out
"""

# ARGV: prefix, timeout_ms, now_ms, then users…
# Returns flat (1|0 online, last_seen or nil)… in the order asked.
QUERY: Final = """
local prefix, timeout, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local flat = redis.call('HGETALL', prefix .. 'u:' .. ARGV[i])
  local online, seen = 0, false
  for j = 1, #flat, 2 do
    if flat[j] == '' then
      seen = flat[j + 1]
    elseif online == 0 and tonumber(flat[j + 1]) + timeout >= now then
      online = 1
    end
  end
  out[#out + 1] = online; out[#out + 1] = seen
end
return out
"""
