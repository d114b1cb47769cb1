"""The sync's health at a glance: for ``kommo-sync status``, the live page and ``/api/status``.

Every figure comes from shared state (Postgres and Redis), so any process can answer for the
whole deployment: cursors and their lag, the last reconcile, queue depth, the request budget,
429/403 counts, webhook-to-consumer latency and the last errors.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from redis.asyncio import Redis

from service.keys import Keys
from service.kommo.budget import RateBudget
from service.resources import Resources
from service.store import cursors, reads
from service.sync import hints

# Redis (service.keys): ``stats`` HASH of deployment-wide counters (kommo_429, kommo_403, ...),
# ``stats:freshness`` LIST of recent change-to-publish latencies (ms), ``stats:errors`` LIST of
# the last errors (JSON).


async def record_count(redis: Redis, keys: Keys, name: str, amount: int = 1) -> None:
    await redis.hincrby(keys.stats, name, amount)  # type: ignore[misc]


async def record_latencies(redis: Redis, keys: Keys, millis: list[float]) -> None:
    if not millis:
        return
    key = keys.stats_freshness
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, *(f"{m:.1f}" for m in millis))
        pipe.ltrim(key, 0, 499)
        await pipe.execute()


async def record_error(redis: Redis, keys: Keys, where: str, message: str) -> None:
    key = keys.stats_errors
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
    last = await res.redis.get(res.keys.reconcile_last)
    return None if last is None else max(0.0, time.time() - float(last))


STREAMED = frozenset({"leads", "contacts", "companies", "events"})
IMPORTS = {"backfill": "backfill", "upgrade_2": "upgrade", "history": "history"}
"""The background imports' cursors (:mod:`service.sync.imports`) and how status names them."""


def _import_state(state: dict[str, Any] | None) -> str:
    """``not started``, ``done`` or where it is (``contacts page 12``, ``page 3``)."""
    if not state:
        return "not started"
    if state.get("done") or state.get("stage") == "done":
        return "done"
    where = f"{state['stage']} " if "stage" in state else ""
    return f"{where}page {state.get('page', 1)}"


async def gather_status(res: Resources) -> dict[str, Any]:
    now = time.time()
    settings, redis, keys = res.settings, res.redis, res.keys
    async with res.pool.acquire() as conn:
        saved = await cursors.all_cursors(conn)
        counts = await reads.counts(conn)
    found = {}
    for _, name, value, state, saved_at in saved:
        entry: dict[str, Any] = {"value": value, "saved_at": saved_at.isoformat()}
        if name in STREAMED:
            entry["lag_seconds"] = round(max(0.0, now - value), 1)
        if name in IMPORTS:
            entry["state"] = state
        found[name] = entry
    budget = RateBudget(redis, keys, settings.rate_limit)
    usage = await budget.usage()
    breaker = await budget.breaker()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.stats)
        pipe.lrange(keys.stats_freshness, 0, -1)
        pipe.lrange(keys.stats_errors, 0, -1)
        raw_stats, raw_latencies, raw_errors = await pipe.execute()
    stats = {k.decode(): int(v) for k, v in raw_stats.items()}
    latencies = [float(x) for x in raw_latencies]
    errors = [json.loads(e) for e in raw_errors]
    age = await reconcile_age(res)
    return {
        "now": now,
        "mirror": {
            "leads": counts.leads,
            "contacts": counts.contacts,
            "companies": counts.companies,
            "latest_version": counts.latest_version,
        },
        "cursors": found,
        "imports": {
            label: _import_state(found.get(name, {}).get("state"))
            for name, label in IMPORTS.items()
        },
        "reconcile": {
            "last_seconds_ago": None if age is None else round(age, 1),
            "interval": settings.reconcile_interval,
            "stale": age is None or age > 3 * settings.reconcile_interval,
            "runs": int(await redis.get(keys.reconcile_runs) or 0),
        },
        "queue": {
            "hints_pending": await hints.pending_count(redis, keys),
            "hints_delayed": await hints.delayed_count(redis, keys),
            "arq_jobs": int(await redis.zcard(keys.queue)),
        },
        "kommo": {
            "calls_last_second": usage.last_second,
            "calls_last_minute": usage.last_minute,
            "rate_limit": settings.rate_limit,
            "responses_429": stats.get("kommo_429", 0),
            "responses_403": stats.get("kommo_403", 0),
            "breaker": None
            if breaker is None
            else {"reason": breaker.reason, "until": breaker.until},
        },
        "freshness_ms": {
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "samples": len(latencies),
        },
        "errors": errors,
    }
