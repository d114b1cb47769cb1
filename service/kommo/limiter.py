"""The admission decision of the request budget, one Lua script run atomically in Redis.

Rules, in order (``cap`` calls per ``window`` seconds; see :mod:`service.kommo.budget`):

1. An open breaker (403, 402) refuses every call until it expires.
2. After a 429 nobody calls until ``penalty_until``; then ``cap`` drops to ``slow_cap``.
3. Never more than ``cap`` calls in any ``window`` (a sliding log, a sorted set of admission
   times): the hard limit, however the calls are spread.
4. Bursts: while fewer than ``burst`` calls were admitted in the window, a call goes at once
   (a webhook after a quiet spell reaches Kommo without waiting). Past that, calls are spaced
   evenly, one every ``window / cap * pacing``, so that under load nobody waits for a window
   to slide and the mean wait is half a gap.
5. Priorities: a caller yields to any waiting caller of a higher priority (each waiter keeps a
   short-lived marker), except that RECONCILE always gets ``reserve`` calls per window while it
   waits: webhooks leave that slot to it, and it does not yield to them inside its reserve.
   So a flood of webhook hints can slow the reconcile, never starve it.
6. An optional total cap over several budgets (``KOMMO_RATE_LIMIT_TOTAL`` across accounts):
   at most ``total_cap`` calls in any window in the shared log as well.

Members of the log are ``<priority>:<uuid>``, so the script can count a priority's share.
"""

from __future__ import annotations

from service.scripts import Script

RECONCILE = 1  # service.kommo.budget.Priority.RECONCILE

NOW = """
local function fmt(x) return string.format('%.6f', x) end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: calls, state, breaker, total calls (or ''), waiting:0 .. waiting:n-1
# ARGV: now, priority, cap, slow cap, window, member, max sleep, history, pacing, burst,
#       reserve, total cap (0: none)
ACQUIRE = Script(
    NOW
    + """
local prio, cap, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local history, pacing = tonumber(ARGV[8]), tonumber(ARGV[9])
local burst, reserve, total_cap = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local RECONCILE = """
    + str(RECONCILE)
    + """
local function waiting(q)
  local key = KEYS[5 + q]
  if not key then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  return redis.call('ZCARD', key)
end
local b = redis.call('GET', KEYS[3])
if b and tonumber(cjson.decode(b)['until']) > now then return {2, b} end
local wait = 0
local pen = tonumber(redis.call('HGET', KEYS[2], 'penalty_until') or '0')
if pen > now then
  wait = pen - now
else
  if tonumber(redis.call('HGET', KEYS[2], 'slow_until') or '0') > now then
    cap = tonumber(ARGV[4])
  end
  local gap = window / cap * pacing
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - history))
  local since = '(' .. fmt(now - window)
  local recent = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES')
  local used = #recent / 2
  if used >= cap then
    wait = tonumber(recent[(used - cap) * 2 + 2]) + window - now
  else
    local reconciled, last = 0, nil
    for j = 1, #recent, 2 do
      if string.sub(recent[j], 1, 2) == RECONCILE .. ':' then reconciled = reconciled + 1 end
      last = tonumber(recent[j + 1])
    end
    local reserved = prio == RECONCILE and reconciled < reserve
    if used >= burst and last and now - last < gap then
      wait = gap - (now - last)
    end
    for q = 0, prio - 1 do
      if wait > 0 then break end
      if not (reserved and q < RECONCILE) and waiting(q) > 0 then wait = gap end
    end
    if wait <= 0 and prio < RECONCILE and reconciled < reserve and used >= cap - reserve
        and waiting(RECONCILE) > 0 then
      wait = gap  -- the reserved slot is the waiting reconcile's
    end
  end
  if wait <= 0 and total_cap > 0 and KEYS[4] ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', fmt(now - history))
    local all = redis.call('ZRANGEBYSCORE', KEYS[4], since, '+inf', 'WITHSCORES')
    local n = #all / 2
    if n >= total_cap then wait = tonumber(all[(n - total_cap) * 2 + 2]) + window - now end
  end
end
local mine = KEYS[5 + prio]
local member = prio .. ':' .. ARGV[6]
if wait <= 0 then
  redis.call('ZADD', KEYS[1], fmt(now), member)
  redis.call('PEXPIRE', KEYS[1], math.ceil(history * 1000) + 1000)
  if total_cap > 0 and KEYS[4] ~= '' then
    redis.call('ZADD', KEYS[4], fmt(now), member)
    redis.call('PEXPIRE', KEYS[4], math.ceil(history * 1000) + 1000)
  end
  redis.call('ZREM', mine, ARGV[6])
  return {0, fmt(now)}
end
local nap = math.min(wait, tonumber(ARGV[7]))
redis.call('ZADD', mine, fmt(now + nap + 1), ARGV[6])
redis.call('PEXPIRE', mine, math.ceil((nap + 2) * 1000))
return {1, fmt(wait)}
"""
)

# KEYS: state. ARGV: now, retry_after, slow seconds
PENALIZE = Script(
    NOW
    + """
local pen = math.max(now + tonumber(ARGV[2]),
                     tonumber(redis.call('HGET', KEYS[1], 'penalty_until') or '0'))
local slow = math.max(pen + tonumber(ARGV[3]),
                      tonumber(redis.call('HGET', KEYS[1], 'slow_until') or '0'))
redis.call('HSET', KEYS[1], 'penalty_until', fmt(pen), 'slow_until', fmt(slow))
redis.call('PEXPIRE', KEYS[1], math.ceil((slow - now) * 1000) + 1000)
return fmt(pen)
"""
)

# KEYS: breaker. ARGV: now, seconds, reason, kind. An open breaker keeps its trip time, reason
# and kind, and extends `until`.
TRIP = Script(
    NOW
    + """
local info = {reason = ARGV[3], kind = ARGV[4], tripped_at = now,
              ['until'] = now + tonumber(ARGV[2])}
local old = redis.call('GET', KEYS[1])
if old then
  old = cjson.decode(old)
  if tonumber(old['until']) > now then
    info['tripped_at'] = old['tripped_at']
    info['reason'] = old['reason']
    info['kind'] = old['kind']
    info['until'] = math.max(info['until'], tonumber(old['until']))
  end
end
local text = cjson.encode(info)
redis.call('SET', KEYS[1], text, 'PX', math.ceil((info['until'] - now) * 1000) + 1000)
return text
"""
)

# KEYS: breaker, calls. ARGV: now
STATUS = Script(
    NOW
    + """
local b = redis.call('GET', KEYS[1])
if b and tonumber(cjson.decode(b)['until']) <= now then b = false end
return {b or '', redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - 1), '+inf'),
        redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - 60), '+inf')}
"""
)
