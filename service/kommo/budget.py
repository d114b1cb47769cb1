"""One Kommo request budget for the whole deployment, kept in Redis.

Every web and worker process calls :meth:`RateBudget.acquire` before each Kommo request. One
Lua script decides atomically, from shared state, whether the call may go now:

* a sliding one-second log (a sorted set) admits at most ``KOMMO_RATE_LIMIT`` calls per window;
* calls are spaced evenly (one every window/limit), so nobody waits for a window to slide;
* priorities: RECONCILE and BACKFILL may not take a slot while a higher-priority caller is
  waiting (each waiter keeps a short-lived marker), so a webhook fetch waits at most one gap;
* after a 429, :meth:`RateBudget.penalize` stops everyone until ``retry_after`` has passed,
  then the deployment runs at half rate for a minute;
* after a 403, :meth:`RateBudget.trip_breaker` makes every ``acquire`` raise
  :class:`~service.errors.KommoBlocked` until the breaker expires or an operator resets it.

A refused caller sleeps for the time the script computed (capped at ``max_sleep`` so that a
breaker tripped meanwhile is noticed within a second), never in a tight loop. The clock is
Redis ``TIME`` unless one is injected (tests use a virtual clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import IntEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.keys import Keys
from service.kommo.errors import KommoBlocked
from service.scripts import Script

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# Calls go a little slower than window/limit apart, so that network jitter between us and Kommo
# can never squeeze one call too many into Kommo's own one-second window.
PACING = 1.05


class Priority(IntEnum):
    """Lower value wins: webhook-triggered fetches go first, then reconcile, then backfill."""

    WEBHOOK = 0
    RECONCILE = 1
    BACKFILL = 2


@dataclasses.dataclass(frozen=True)
class BreakerInfo:
    reason: str
    until: float
    tripped_at: float


@dataclasses.dataclass(frozen=True)
class Usage:
    last_second: int
    last_minute: int


_NOW = """
local function fmt(x) return string.format('%.6f', x) end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: calls, state, breaker, waiting:0, waiting:1, waiting:2
# ARGV: now, priority, capacity, slow capacity, window, member, max sleep, history, pacing
_ACQUIRE = Script(
    _NOW
    + """
local prio, cap, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local history = tonumber(ARGV[8])
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
  local gap = window / cap * tonumber(ARGV[9])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - history))
  local since = '(' .. fmt(now - window)
  local used = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  if used >= cap then
    local nth = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
                           'LIMIT', used - cap, 1)
    wait = tonumber(nth[2]) + window - now
  else
    -- Even spacing: a burst of calls followed by a long pause would hold every waiter back
    -- until the window slides; one call every window/capacity keeps waits short.
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    if last[2] and now - tonumber(last[2]) < gap then
      wait = gap - (now - tonumber(last[2]))
    end
    for q = 0, prio - 1 do
      if wait > 0 then break end
      redis.call('ZREMRANGEBYSCORE', KEYS[4 + q], '-inf', fmt(now))
      if redis.call('ZCARD', KEYS[4 + q]) > 0 then
        wait = window / tonumber(ARGV[3])
        break
      end
    end
  end
end
local mine = KEYS[4 + prio]
if wait <= 0 then
  redis.call('ZADD', KEYS[1], fmt(now), ARGV[6])
  redis.call('PEXPIRE', KEYS[1], math.ceil(history * 1000) + 1000)
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
_PENALIZE = Script(
    _NOW
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

# KEYS: breaker. ARGV: now, seconds, reason. An open breaker keeps its trip time, extends `until`.
_TRIP = Script(
    _NOW
    + """
local info = {reason = ARGV[3], tripped_at = now, ['until'] = now + tonumber(ARGV[2])}
local old = redis.call('GET', KEYS[1])
if old then
  old = cjson.decode(old)
  if tonumber(old['until']) > now then
    info['tripped_at'] = old['tripped_at']
    info['reason'] = old['reason']
    info['until'] = math.max(info['until'], tonumber(old['until']))
  end
end
local text = cjson.encode(info)
redis.call('SET', KEYS[1], text, 'PX', math.ceil((info['until'] - now) * 1000) + 1000)
return text
"""
)

# KEYS: breaker, calls. ARGV: now
_STATUS = Script(
    _NOW
    + """
local b = redis.call('GET', KEYS[1])
if b and tonumber(cjson.decode(b)['until']) <= now then b = false end
return {b or '', redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - 1), '+inf'),
        redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now - 60), '+inf')}
"""
)


class RateBudget:
    """The shared budget; create one per process (all instances share the Redis state)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        rate_limit: float,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        slow_factor: float = 0.5,
        slow_seconds: float = 60.0,
        max_sleep: float = 0.5,
    ) -> None:
        self.window = max(1.0, 1.0 / rate_limit)
        self.capacity = max(1, math.floor(rate_limit * self.window + 1e-9))
        self.slow_capacity = max(1, math.floor(self.capacity * slow_factor))
        self.slow_seconds = slow_seconds
        self.max_sleep = max_sleep
        self._history = max(60.0, self.window)
        self._clock, self.sleep = clock, sleep
        self._calls, self._state = keys.budget_calls, keys.budget_state
        self._breaker = keys.budget_breaker
        self._stats = keys.stats  # deployment-wide counters, see service.sync.status
        self._waiting = [keys.budget_waiting(p.value) for p in Priority]
        self._redis = redis
        self._announced: float | None = None

    def _now(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    async def acquire(self, priority: Priority = Priority.WEBHOOK) -> float:
        """Wait until one request may be sent; return the admission time (the budget's clock).

        Raises KommoBlocked while the breaker is open.
        """
        member = uuid.uuid4().hex
        keys = [self._calls, self._state, self._breaker, *self._waiting]
        registered = False
        try:
            while True:
                status, value = await _ACQUIRE(
                    self._redis,
                    keys=keys,
                    args=[
                        self._now(),
                        int(priority),
                        self.capacity,
                        self.slow_capacity,
                        self.window,
                        member,
                        self.max_sleep,
                        self._history,
                        PACING,
                    ],
                )
                if int(status) == 0:
                    registered = False  # the script removed our waiting marker
                    return float(_text(value))
                if int(status) == 2:
                    raise self._blocked(_breaker_info(value))
                registered = True
                await self.sleep(min(float(value), self.max_sleep) + 0.001)
        finally:
            if registered:
                with contextlib.suppress(RedisError):
                    await self._redis.zrem(self._waiting[priority], member)

    async def penalize(self, retry_after: float) -> None:
        """After a 429: nobody calls for ``retry_after`` seconds, then half rate for a while."""
        until = await _PENALIZE(
            self._redis,
            keys=[self._state],
            args=[self._now(), max(0.0, retry_after), self.slow_seconds],
        )
        await self._redis.hincrby(self._stats, "kommo_429", 1)  # type: ignore[misc]
        log.warning(
            "Kommo answered 429: every process pauses until %s, then runs at %d/%.0fs for %.0fs",
            _iso(float(_text(until))),
            self.slow_capacity,
            self.window,
            self.slow_seconds,
        )

    async def trip_breaker(self, seconds: float = 900.0, reason: str = "HTTP 403") -> BreakerInfo:
        """Stop every process's Kommo calls for ``seconds`` (extends an open breaker)."""
        text = await _TRIP(self._redis, keys=[self._breaker], args=[self._now(), seconds, reason])
        await self._redis.hincrby(self._stats, "kommo_403", 1)  # type: ignore[misc]
        info = _breaker_info(text)
        self._announce(info)
        return info

    async def breaker(self) -> BreakerInfo | None:
        """The open breaker, or None."""
        text, _, _ = await _STATUS(
            self._redis, keys=[self._breaker, self._calls], args=[self._now()]
        )
        return _breaker_info(text) if _text(text) else None

    async def reset_breaker(self) -> bool:
        """Close the breaker (operators, after Kommo lifted the block); True if it was open."""
        removed = int(await self._redis.delete(self._breaker))
        self._announced = None
        log.warning("Kommo breaker reset by an operator (was open: %s)", bool(removed))
        return bool(removed)

    async def usage(self) -> Usage:
        """Calls admitted deployment-wide in the last second and the last minute."""
        _, second, minute = await _STATUS(
            self._redis, keys=[self._breaker, self._calls], args=[self._now()]
        )
        return Usage(int(second), int(minute))

    def _blocked(self, info: BreakerInfo) -> KommoBlocked:
        self._announce(info)
        return KommoBlocked(
            f"Kommo API calls are stopped until {_iso(info.until)}: {info.reason}",
            until=info.until,
        )

    def _announce(self, info: BreakerInfo) -> None:
        """One loud line per process and trip, however many callers hit the breaker."""
        if self._announced == info.tripped_at:
            return
        self._announced = info.tripped_at
        log.error(
            "KOMMO API BLOCKED: %s. Every Kommo call of every process is stopped until %s "
            "and is not retried; ask Kommo support to lift the block, then reset the breaker.",
            info.reason,
            _iso(info.until),
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _breaker_info(value: object) -> BreakerInfo:
    data = json.loads(_text(value))
    return BreakerInfo(str(data["reason"]), float(data["until"]), float(data["tripped_at"]))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
