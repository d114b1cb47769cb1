"""The shared rate budget, against real Redis; two instances stand in for two processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from service.keys import Keys
from service.kommo.budget import PACING, Priority, RateBudget
from service.kommo.errors import KommoBlocked
from service.settings import Settings


def budget_for(redis: Redis, settings: Settings, **kw: Any) -> RateBudget:
    return RateBudget(redis, Keys(settings.redis_prefix), settings.rate_limit, **kw)


class VirtualClock:
    """Time that moves only when someone sleeps: hours of penalty cost no real time."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class SleepWatch:
    """Real sleep that reports when ``expected`` distinct tasks are waiting in it."""

    def __init__(self, expected: int) -> None:
        self.tasks: set[asyncio.Task[object] | None] = set()
        self.expected = expected
        self.all_waiting = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.tasks.add(asyncio.current_task())
        if len(self.tasks) >= self.expected:
            self.all_waiting.set()
        await asyncio.sleep(seconds)


def with_rate(settings: Settings, rate: float) -> Settings:
    return dataclasses.replace(settings, rate_limit=rate)


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times))


async def test_capacity_follows_the_setting(redis: Redis, settings: Settings) -> None:
    assert budget_for(redis, settings).capacity == 6  # KOMMO_RATE_LIMIT default
    slow = budget_for(redis, with_rate(settings, 0.5))
    assert (slow.capacity, slow.window) == (1, 2.0)


async def test_concurrent_acquirers_in_two_processes_never_exceed_the_rate(
    redis: Redis, settings: Settings
) -> None:
    s = with_rate(settings, 10)
    first, second = budget_for(redis, s), budget_for(redis, s)
    granted: list[float] = []  # measured here
    admitted: list[float] = []  # as decided in Redis

    async def call(budget: RateBudget, priority: Priority) -> None:
        admitted.append(await budget.acquire(priority))
        granted.append(time.monotonic())

    start = time.monotonic()
    async with asyncio.timeout(20):
        await asyncio.gather(*(call((first, second)[i % 2], Priority(i % 3)) for i in range(30)))
    assert len(granted) == 30
    # 30 calls at 10/s need at least three one-second windows; 50 ms allows for measuring
    assert max_in_window(granted, 1.0 - 0.05) <= 10
    assert max_in_window(admitted, 1.0) <= 10
    assert max(granted) - start >= 2.0 - 0.05
    assert (await first.usage()).last_minute == 30


async def test_a_quiet_budget_lets_a_burst_through_then_spaces_calls(
    redis: Redis, settings: Settings
) -> None:
    clock = VirtualClock()
    budget = budget_for(redis, with_rate(settings, 5), clock=clock.now, sleep=clock.sleep)
    assert budget.burst == 2
    times = [await budget.acquire(Priority.BACKFILL) for _ in range(11)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] == 0  # a quiet budget: the first calls go at once
    assert min(gaps[1:]) >= 0.2 * PACING - 1e-6  # then one every window / limit
    assert max_in_window(times, 1.0) <= 5  # never more than the limit in any second
    assert times[-1] - times[0] <= 2.0 * PACING + 0.2  # a lone caller gets the full rate


async def test_after_a_quiet_spell_a_call_goes_at_once(redis: Redis, settings: Settings) -> None:
    clock = VirtualClock()
    budget = budget_for(redis, settings, clock=clock.now, sleep=clock.sleep)
    for _ in range(20):  # one call every 0.8 s: each goes without waiting
        asked = clock.now()
        assert await budget.acquire(Priority.WEBHOOK) == pytest.approx(asked, abs=1e-5)
        clock.t += 0.8
    assert clock.slept == []


async def test_a_webhook_flood_leaves_reconcile_its_share(redis: Redis, settings: Settings) -> None:
    """Webhook callers keep the budget saturated for about four seconds; a reconcile caller that
    waits meanwhile still gets about one call per window (never starved), and the limit holds.
    Real time: the callers' waits overlap, which a virtual clock cannot model."""
    flood, reconcile = budget_for(redis, settings), budget_for(redis, settings)
    admitted: list[tuple[float, str]] = []
    flooding = True

    async def webhooks() -> None:
        while flooding:
            admitted.append((await flood.acquire(Priority.WEBHOOK), "WEBHOOK"))

    async def reconciler() -> None:
        while flooding:
            admitted.append((await reconcile.acquire(Priority.RECONCILE), "RECONCILE"))

    tasks = [asyncio.create_task(webhooks()) for _ in range(4)]
    tasks.append(asyncio.create_task(reconciler()))
    async with asyncio.timeout(20):
        while sum(1 for _, name in admitted if name == "WEBHOOK") < 20:
            await asyncio.sleep(0.05)
        flooding = False
        await asyncio.gather(*tasks)
    times = sorted(t for t, _ in admitted)
    assert max_in_window(times, 1.0) <= 6
    span = times[-1] - times[0]
    reconciled = [t for t, name in admitted if name == "RECONCILE"]
    assert len(reconciled) >= int(span) - 1  # about one per window while it waited
    assert len(reconciled) <= len(admitted) / 3  # and the webhooks kept the rest


async def test_webhook_is_served_before_a_waiting_backfill_flood(
    redis: Redis, settings: Settings
) -> None:
    s = with_rate(settings, 5)
    watch = SleepWatch(expected=12)
    worker = budget_for(redis, s, sleep=watch.sleep)  # the backfill process
    web = budget_for(redis, s)  # the process handling webhooks
    for _ in range(5):
        await web.acquire(Priority.WEBHOOK)  # the window is full
    granted: list[tuple[float, str]] = []  # (admission time in Redis, priority)

    async def call(budget: RateBudget, priority: Priority) -> None:
        granted.append((await budget.acquire(priority), priority.name))

    flood = [asyncio.create_task(call(worker, Priority.BACKFILL)) for _ in range(12)]
    async with asyncio.timeout(5):
        await watch.all_waiting.wait()
        started = time.monotonic()
        await call(web, Priority.WEBHOOK)
    waited = time.monotonic() - started
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    order = [name for _, name in sorted(granted)]
    assert order[0] == "WEBHOOK", order
    assert waited < 1.2


async def test_breaker_trip_is_seen_by_every_process(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = budget_for(redis, settings), budget_for(redis, settings)
    info = await first.trip_breaker(900, "HTTP 403 on GET /api/v4/leads")
    for _ in range(5):
        with pytest.raises(KommoBlocked) as caught:
            await second.acquire(Priority.WEBHOOK)
        assert caught.value.until == pytest.approx(info.until, abs=0.01)
    seen = await second.breaker()
    assert seen is not None and seen.reason == "HTTP 403 on GET /api/v4/leads"
    assert seen.until - seen.tripped_at == pytest.approx(900, abs=0.01)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one loud line per process, not one per call
    assert await second.reset_breaker() is True
    assert await first.breaker() is None
    async with asyncio.timeout(2):
        await first.acquire(Priority.BACKFILL)


def breaker_gauge() -> dict[str, float | None]:
    return {
        reason: REGISTRY.get_sample_value("kommo_breaker_open", {"reason": reason})
        for reason in ("blocked", "unpaid")
    }


async def test_the_breaker_gauge_follows_reads_trips_and_resets(
    redis: Redis, settings: Settings
) -> None:
    """Each read refreshes this process's gauge: a breaker tripped by another process shows on
    the next read, its kind survives a second trip, and a breaker an older version wrote (no
    kind) counts as a block."""
    mine, other = budget_for(redis, settings), budget_for(redis, settings)
    assert await mine.breaker() is None
    assert breaker_gauge() == {"blocked": 0, "unpaid": 0}
    await other.trip_breaker(600, "HTTP 402: payment required", kind="unpaid")
    await mine.reset_breaker()  # shows closed here...
    assert breaker_gauge() == {"blocked": 0, "unpaid": 0}
    await other.trip_breaker(600, "HTTP 402: payment required", kind="unpaid")
    seen = await mine.breaker()  # ... and open again once read
    assert seen is not None and seen.kind == "unpaid"
    assert breaker_gauge() == {"blocked": 0, "unpaid": 1}
    again = await other.trip_breaker(900, "HTTP 403", kind="blocked")  # extends, keeps its kind
    assert (again.kind, again.reason) == ("unpaid", "HTTP 402: payment required")
    keys = Keys(settings.redis_prefix)
    old = {"reason": "HTTP 403", "until": time.time() + 60, "tripped_at": time.time()}
    await redis.set(keys.budget_breaker, json.dumps(old), ex=60)
    seen = await mine.breaker()
    assert seen is not None and seen.kind == "blocked"
    assert breaker_gauge() == {"blocked": 1, "unpaid": 0}
    await redis.delete(keys.budget_breaker)
    assert await mine.breaker() is None
    assert breaker_gauge() == {"blocked": 0, "unpaid": 0}


async def test_a_waiting_caller_sees_the_breaker_within_a_second(
    redis: Redis, settings: Settings
) -> None:
    watch = SleepWatch(expected=1)
    waiter, tripper = budget_for(redis, settings, sleep=watch.sleep), budget_for(redis, settings)
    await tripper.penalize(30)  # the waiter would otherwise wait half a minute
    task = asyncio.create_task(waiter.acquire(Priority.RECONCILE))
    async with asyncio.timeout(2):
        await watch.all_waiting.wait()
    await tripper.trip_breaker(60, "HTTP 403")
    async with asyncio.timeout(1.0):
        with pytest.raises(KommoBlocked):
            await task


async def test_penalize_stops_everyone_then_slows_the_deployment(
    redis: Redis, settings: Settings
) -> None:
    clock = VirtualClock()
    s = with_rate(settings, 6)
    first = budget_for(redis, s, clock=clock.now, sleep=clock.sleep)
    second = budget_for(redis, s, clock=clock.now, sleep=clock.sleep)
    start = clock.t
    await first.penalize(30)
    await first.penalize(5)  # a later, shorter retry_after never shortens the pause
    await second.acquire(Priority.WEBHOOK)
    assert clock.t >= start + 30
    granted = [clock.t]
    for _ in range(11):
        await second.acquire(Priority.WEBHOOK)
        granted.append(clock.t)
    assert max_in_window(granted, 1.0) == 3  # half rate after a 429
    clock.t = start + 30 + 61  # the slow minute is over
    again = clock.t
    for _ in range(7):
        await first.acquire(Priority.WEBHOOK)
    assert clock.t - again <= 1.0 * PACING + 0.05  # six gaps of 1/6 s: the full rate again


async def test_usage_counts_the_last_second_and_minute(redis: Redis, settings: Settings) -> None:
    clock = VirtualClock()
    budget = budget_for(redis, settings, clock=clock.now, sleep=clock.sleep)
    for _ in range(3):
        await budget.acquire(Priority.RECONCILE)
    usage = await budget.usage()
    assert (usage.last_second, usage.last_minute) == (3, 3)
    clock.t += 2
    usage = await budget.usage()
    assert (usage.last_second, usage.last_minute) == (0, 3)
    clock.t += 60
    assert (await budget.usage()).last_minute == 0
