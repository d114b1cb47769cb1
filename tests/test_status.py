import asyncpg
from redis.asyncio import Redis

from service.keys import Keys
from service.resources import open_resources
from service.settings import Settings
from service.store import cursors as store
from service.sync import status


async def test_status_reports_the_shared_state(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    async with pool.acquire() as conn:
        await store.set_cursor(conn, 31000001, "leads", 1_700_000_000)
        await store.set_cursor(conn, 31000001, "backfill", 1, {"stage": "done", "page": 9})
    await redis.set(Keys(settings.redis_prefix).reconcile_last, "0")  # long ago: stale
    await status.record_count(redis, Keys(settings.redis_prefix), "kommo_429", 2)
    await status.record_latencies(redis, Keys(settings.redis_prefix), [10.0, 20.0, 30.0, 400.0])
    await status.record_error(
        redis, Keys(settings.redis_prefix), "reconcile", "GET /api/v4/leads: HTTP 502"
    )
    async with open_resources(settings) as res:
        report = await status.gather_status(res)
    assert report["cursors"]["leads"]["lag_seconds"] > 0
    assert report["cursors"]["backfill"]["state"]["stage"] == "done"
    assert report["imports"] == {
        "backfill": "done",
        "upgrade": "not started",
        "history": "not started",
    }
    assert report["reconcile"]["stale"] is True
    assert report["kommo"]["responses_429"] == 2 and report["kommo"]["breaker"] is None
    assert report["freshness_ms"]["samples"] == 4 and report["freshness_ms"]["p50"] == 25.0
    assert report["errors"][0]["where"] == "reconcile"
    assert report["queue"] == {"hints_pending": 0, "hints_delayed": 0, "arq_jobs": 0}
