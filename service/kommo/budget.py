"""One Kommo request budget, shared by every process, kept in Redis.

Every web and worker process calls :meth:`RateBudget.acquire` before each Kommo request; the
decision is one Lua script (:mod:`service.kommo.limiter`) over shared state:

* never more than ``KOMMO_RATE_LIMIT`` calls in any one-second window (a sliding log), and,
  with ``KOMMO_RATE_LIMIT_TOTAL``, never more than that over several budgets together;
* a quiet budget lets a short burst through at once (a webhook change reaches Kommo without
  waiting); a busy one spaces calls evenly, so nobody waits for a window to slide;
* priorities WEBHOOK > RECONCILE > BACKFILL > HISTORY, with one call per window reserved for a
  waiting reconcile, so a flood of webhooks slows the reconcile but never starves it;
* after a 429, :meth:`RateBudget.penalize` stops everyone until ``retry_after`` has passed,
  then the budget runs at half rate for a minute;
* after a 403 (or a 402), :meth:`RateBudget.trip_breaker` makes every ``acquire`` raise
  :class:`~service.kommo.errors.KommoBlocked` until the breaker expires or an operator resets it.

The gauge ``kommo_breaker_open{reason}`` (``reason``: a :data:`BreakerKind`) is this process's
view of the breaker: set when it trips, on every ``acquire`` (an admitted call closes it, a
refused one opens it) and on every :meth:`RateBudget.breaker` read; the web's ``/metrics``
reads the breaker on each scrape, so there it is the deployment's state.

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
from typing import Literal, get_args

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.keys import Keys
from service.kommo.errors import KommoBlocked
from service.kommo.limiter import ACQUIRE, PENALIZE, STATUS, TRIP

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# Calls go a little slower than window/limit apart, so that network jitter between us and Kommo
# can never squeeze one call too many into Kommo's own one-second window.
PACING = 1.05

BreakerKind = Literal["blocked", "unpaid"]
"""Why the breaker is open: a 403 block, or a 402 (the account's subscription ended)."""

BREAKER_KINDS: tuple[BreakerKind, ...] = get_args(BreakerKind)
BREAKER_OPEN = Gauge(
    "kommo_breaker_open", "1 while the Kommo breaker (403/402) is open, by kind", ["reason"]
)
_OPEN = {kind: BREAKER_OPEN.labels(kind) for kind in BREAKER_KINDS}


class Priority(IntEnum):
    """Lower value wins: webhook fetches first, then reconcile, backfill, the history import."""

    WEBHOOK = 0
    RECONCILE = 1
    BACKFILL = 2
    HISTORY = 3


@dataclasses.dataclass(frozen=True)
class BreakerInfo:
    reason: str
    until: float
    tripped_at: float
    kind: BreakerKind = "blocked"


@dataclasses.dataclass(frozen=True)
class Usage:
    last_second: int
    last_minute: int


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
        burst: int | None = None,
        reserve: int = 1,
        total_limit: float | None = None,
    ) -> None:
        self.window = max(1.0, 1.0 / rate_limit)
        self.capacity = max(1, math.floor(rate_limit * self.window + 1e-9))
        self.slow_capacity = max(1, math.floor(self.capacity * slow_factor))
        self.burst = max(1, self.capacity // 2) if burst is None else burst
        self.reserve = min(reserve, self.capacity - 1)
        self.total_capacity = (
            0 if total_limit is None else max(1, math.floor(total_limit * self.window + 1e-9))
        )
        self.slow_seconds = slow_seconds
        self.max_sleep = max_sleep
        self._history = max(60.0, self.window)
        self._clock, self.sleep = clock, sleep
        self._calls, self._state = keys.budget_calls, keys.budget_state
        self._total = keys.budget_total_calls if total_limit is not None else ""
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
        keys = [self._calls, self._state, self._breaker, self._total, *self._waiting]
        registered = False
        try:
            while True:
                status, value = await ACQUIRE(
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
                        self.burst,
                        self.reserve,
                        self.total_capacity,
                    ],
                )
                if int(status) == 0:
                    registered = False  # the script removed our waiting marker
                    _show(None)
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
        until = await PENALIZE(
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

    async def trip_breaker(
        self, seconds: float = 900.0, reason: str = "HTTP 403", kind: BreakerKind = "blocked"
    ) -> BreakerInfo:
        """Stop every process's Kommo calls for ``seconds`` (extends an open breaker, which
        keeps its reason and kind)."""
        text = await TRIP(
            self._redis, keys=[self._breaker], args=[self._now(), seconds, reason, kind]
        )
        await self._redis.hincrby(self._stats, "kommo_403", 1)  # type: ignore[misc]
        info = _breaker_info(text)
        self._announce(info)
        return info

    async def breaker(self) -> BreakerInfo | None:
        """The open breaker, or None."""
        text, _, _ = await STATUS(
            self._redis, keys=[self._breaker, self._calls], args=[self._now()]
        )
        info = _breaker_info(text) if _text(text) else None
        _show(info)
        return info

    async def reset_breaker(self) -> bool:
        """Close the breaker (operators, after Kommo lifted the block); True if it was open."""
        removed = int(await self._redis.delete(self._breaker))
        self._announced = None
        _show(None)
        log.warning("Kommo breaker reset by an operator (was open: %s)", bool(removed))
        return bool(removed)

    async def usage(self) -> Usage:
        """Calls admitted deployment-wide in the last second and the last minute."""
        _, second, minute = await STATUS(
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
        _show(info)
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
    kind = data.get("kind")  # absent in a breaker tripped by an older version
    return BreakerInfo(
        str(data["reason"]),
        float(data["until"]),
        float(data["tripped_at"]),
        kind if kind in BREAKER_KINDS else "blocked",
    )


def _show(info: BreakerInfo | None) -> None:
    for kind, child in _OPEN.items():
        child.set(1 if info is not None and info.kind == kind else 0)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
