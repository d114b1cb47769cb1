"""The sync's health at a glance: for ``kommo-sync status``, the live page and ``/readyz``.

Every figure comes from shared state (Postgres and Redis), so any process can answer for the
whole deployment: cursors and their lag, the last reconcile, queue depth, the request budget,
429/403 counts, webhook-to-consumer latency and the last errors.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from redis.asyncio import Redis

from service import hints
from service.budget import RateBudget
from service.resources import Resources, open_resources
from service.settings import Settings

STATS = "stats"  # HASH of deployment-wide counters (kommo_429, kommo_403, ...)
LATENCIES = "stats:freshness"  # LIST of recent change-to-publish latencies (ms)
ERRORS = "stats:errors"  # LIST of the last errors (JSON)


async def record_count(redis: Redis, settings: Settings, name: str, amount: int = 1) -> None:
    await redis.hincrby(settings.key(STATS), name, amount)  # type: ignore[misc]


async def record_latencies(redis: Redis, settings: Settings, millis: list[float]) -> None:
    if not millis:
        return
    key = settings.key(LATENCIES)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, *(f"{m:.1f}" for m in millis))
        pipe.ltrim(key, 0, 499)
        await pipe.execute()


async def record_error(redis: Redis, settings: Settings, where: str, message: str) -> None:
    key = settings.key(ERRORS)
    entry = json.dumps({"at": time.time(), "where": where, "error": message[:300]})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, entry)
        pipe.ltrim(key, 0, 19)
        await pipe.execute()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def reconcile_age(res: Resources) -> float | None:
    last = await res.redis.get(res.settings.key("reconcile:last"))
    return None if last is None else max(0.0, time.time() - float(last))


async def gather_status(res: Resources) -> dict[str, Any]:
    now = time.time()
    settings, redis = res.settings, res.redis
    async with res.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT name, value, state, updated_at FROM sync_cursors ORDER BY account_id, name"
        )
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM leads WHERE NOT is_deleted) AS leads,
                      (SELECT count(*) FROM contacts WHERE NOT is_deleted) AS contacts,
                      (SELECT max(version) FROM leads) AS version"""
        )
    assert counts is not None
    cursors = {}
    for r in rows:
        entry: dict[str, Any] = {"value": r["value"], "saved_at": r["updated_at"].isoformat()}
        if r["name"] in ("leads", "contacts", "events"):
            entry["lag_seconds"] = round(max(0.0, now - r["value"]), 1)
        if r["name"] == "backfill":
            entry["state"] = json.loads(r["state"])
        cursors[r["name"]] = entry
    budget = RateBudget(redis, settings)
    usage = await budget.usage()
    breaker = await budget.breaker()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(settings.key(STATS))
        pipe.lrange(settings.key(LATENCIES), 0, -1)
        pipe.lrange(settings.key(ERRORS), 0, -1)
        raw_stats, raw_latencies, raw_errors = await pipe.execute()
    stats = {k.decode(): int(v) for k, v in raw_stats.items()}
    latencies = [float(x) for x in raw_latencies]
    errors = [json.loads(e) for e in raw_errors]
    age = await reconcile_age(res)
    return {
        "now": now,
        "mirror": {"leads": counts["leads"], "contacts": counts["contacts"],
                   "latest_version": counts["version"]},
        "cursors": cursors,
        "reconcile": {
            "last_seconds_ago": None if age is None else round(age, 1),
            "interval": settings.reconcile_interval,
            "stale": age is None or age > 3 * settings.reconcile_interval,
            "runs": int(await redis.get(settings.key("reconcile:runs")) or 0),
        },
        "queue": {
            "hints_pending": await hints.pending_count(redis, settings),
            "hints_delayed": await hints.delayed_count(redis, settings),
            "arq_jobs": int(await redis.zcard(res.queue_name)),
        },
        "kommo": {
            "calls_last_second": usage.last_second,
            "calls_last_minute": usage.last_minute,
            "rate_limit": settings.rate_limit,
            "responses_429": stats.get("kommo_429", 0),
            "responses_403": stats.get("kommo_403", 0),
            "breaker": None if breaker is None else {"reason": breaker.reason,
                                                     "until": breaker.until},
        },
        "freshness_ms": {
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "samples": len(latencies),
        },
        "errors": errors,
    }


async def print_status(settings: Settings) -> int:
    async with open_resources(settings) as res:
        status = await gather_status(res)
    sys.stdout.write(json.dumps(status, indent=2, default=str) + "\n")
    return 1 if status["kommo"]["breaker"] or status["reconcile"]["stale"] else 0
