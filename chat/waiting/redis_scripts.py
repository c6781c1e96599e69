"""Lua scripts of the Redis waiting rooms: each call is one script, atomic over one room's keys.

Keys of a room (one hash slot: ``{<room>}``), as the pure model names its fields:

* ``…:seq`` — arrival counter (``_seq``): an arrival's number is its place's score and its ticket id;
* ``…:q`` — sorted set user → arrival number: the line (``_order``/``_queued``);
* ``…:exp`` — hash user → when their place lapses (ms);
* ``…:t`` — hash user → ``"<ticket id>:<expires ms>"`` (``_tickets``), and ``…:tx``, sorted set
  user → expiry, to drop expired tickets without a scan;
* ``…:slot`` — ``"<second>:<admissions in it>"`` (``_second``/``_used``), expiring after 2 s.

Every script starts with the same prelude: ``now`` in ms (the Redis server's clock, or the
caller's ``ARGV[1]`` when not empty — tests inject a clock), the slot helpers, and ``keep()``,
which sets an expiry on the room's keys so an abandoned line vanishes by itself.
"""

from __future__ import annotations

_PRELUDE = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local budget = tonumber(ARGV[2])
local function slot(take)
  local sec = math.floor(now / 1000)
  local used = 0
  local v = redis.call('GET', KEYS[6])
  if v then
    local s, u = string.match(v, '^(%d+):(%d+)$')
    if tonumber(s) == sec then used = tonumber(u) end
  end
  if used >= budget then return false end
  if take then redis.call('SET', KEYS[6], sec .. ':' .. (used + 1), 'EX', 2) end
  return true
end
local function issue(id, user, ttl)
  redis.call('HSET', KEYS[4], user, id .. ':' .. (now + ttl))
  redis.call('ZADD', KEYS[5], now + ttl, user)
end
local function keep(ttl_s)
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl_s) end
end
"""

# ARGV: now, budget, user, max_queue, ticket_ttl_ms, entry_ttl_ms, keep_s
# → {"queued", position} | {"admitted", ticket, expires_in_ms} | {"full", queued}
ARRIVE = (
    _PRELUDE
    + """
local user, max_queue = ARGV[3], tonumber(ARGV[4])
local ticket_ttl, entry_ttl, keep_s = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('ZSCORE', KEYS[2], user) then
  redis.call('HSET', KEYS[3], user, now + entry_ttl)
  keep(keep_s)
  return {'queued', redis.call('ZRANK', KEYS[2], user) + 1}
end
local held = redis.call('HGET', KEYS[4], user)
if held then
  local id, expires = string.match(held, '^(%d+):(%d+)$')
  if tonumber(expires) > now then return {'admitted', id, tonumber(expires) - now} end
end
local n = redis.call('ZCARD', KEYS[2])
if n == 0 and slot(true) then
  local id = redis.call('INCR', KEYS[1])
  issue(id, user, ticket_ttl)
  keep(keep_s)
  return {'admitted', tostring(id), ticket_ttl}
end
if n >= max_queue then return {'full', n} end
local id = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], id, user)
redis.call('HSET', KEYS[3], user, now + entry_ttl)
keep(keep_s)
return {'queued', n + 1}
"""
)

# ARGV: now, budget, ticket_ttl_ms, max_steps → {user, ticket, …}, ms until the next admission (-1: nobody waits)
ADMIT = (
    _PRELUDE
    + """
local ticket_ttl, max_steps = tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, user in ipairs(gone) do redis.call('HDEL', KEYS[4], user) end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local out = {}
local steps = 0
while steps < max_steps and slot(false) do
  local head = redis.call('ZPOPMIN', KEYS[2])
  if #head == 0 then break end
  local user, id = head[1], head[2]
  local lapses = tonumber(redis.call('HGET', KEYS[3], user) or '0')
  redis.call('HDEL', KEYS[3], user)
  if lapses > now then  -- a lapsed place is skipped: its client is gone
    slot(true)
    issue(id, user, ticket_ttl)
    out[#out + 1] = user
    out[#out + 1] = id
  end
  steps = steps + 1
end
local wait = -1
if budget > 0 and redis.call('ZCARD', KEYS[2]) > 0 then
  if slot(false) then wait = 0 else wait = 1000 - now % 1000 end
end
return {out, wait}
"""
)

# ARGV: now, (budget, unused), user, ticket → 1 | 0
REDEEM = (
    _PRELUDE
    + """
local held = redis.call('HGET', KEYS[4], ARGV[3])
if not held then return 0 end
local id, expires = string.match(held, '^(%d+):(%d+)$')
if id ~= ARGV[4] or tonumber(expires) <= now then return 0 end
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
return 1
"""
)

# KEYS: q, exp; ARGV: user → 1 | 0
CANCEL = """
local gone = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return gone
"""
