"""``/readyz``, ``/metrics`` and ``/api/status`` through the real app, Postgres and Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.keys import Keys
from service.settings import Settings
from tests.session import WEBHOOK_SECRET, WS_TOKEN

FIXTURES = Path(__file__).parent / "fixtures" / "kommo" / "webhooks"
FORM = {"content-type": "application/x-www-form-urlencoded"}


async def reconciled(redis: Redis, settings: Settings, seconds_ago: float) -> None:
    await redis.set(Keys(settings.redis_prefix).reconcile_last, str(time.time() - seconds_ago))


# --- /readyz -------------------------------------------------------------------------------


async def test_ready_when_postgres_and_redis_answer(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    await reconciled(redis, settings, 0.5)
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert body["postgres"] == {"ok": True}
    assert body["redis"] == {"ok": True}
    assert 0 <= body["informational"]["reconcile_age_seconds"] < 3 * settings.reconcile_interval
    assert "failed" not in body
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("seconds_ago", [None, 3600.0])
async def test_readiness_ignores_the_sync_state(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, seconds_ago: float | None
) -> None:
    """A stale reconcile (or none yet) is the account's state, for /api/status and alerts:
    restarting web processes cannot cure it, so it never fails readiness."""
    if seconds_ago is not None:
        await reconciled(redis, settings, seconds_ago)
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True and "failed" not in body
    age = body["informational"]["reconcile_age_seconds"]
    assert age is None if seconds_ago is None else age >= seconds_ago
    assert "ok" not in body["informational"]  # shown, never checked
    status = await client.get("/api/status", headers={"authorization": f"Bearer {WS_TOKEN}"})
    assert status.json()["reconcile"]["stale"] is True  # where the sync's state does show


async def test_healthz_needs_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- /metrics ------------------------------------------------------------------------------


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_parse_and_move_when_a_webhook_arrives(client: httpx.AsyncClient) -> None:
    received = ("webhooks_received_total", (("kind", "leads"),))
    before = await scrape(client)
    assert before[("hint_queue_depth", ())] == 0
    body = (FIXTURES / "lead_update.txt").read_bytes()
    response = await client.post(f"/webhooks/kommo/{WEBHOOK_SECRET}", content=body, headers=FORM)
    assert response.status_code == 200, response.text
    after = await scrape(client)
    assert after[received] == before.get(received, 0) + 1
    assert after[("hint_queue_depth", ())] == 1  # no worker drained it
    assert ("webhook_request_seconds_count", ()) in after


async def test_metrics_show_the_deployments_breaker(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    """The breaker another process tripped (written straight to Redis here) shows on the next
    scrape, and is gone from the one after it closed."""
    blocked, unpaid = (("kommo_breaker_open", (("reason", r),)) for r in ("blocked", "unpaid"))
    breaker = Keys(settings.redis_prefix).budget_breaker
    before = await scrape(client)
    assert (before[blocked], before[unpaid]) == (0, 0)
    now = time.time()
    info = {"reason": "HTTP 402", "kind": "unpaid", "until": now + 600, "tripped_at": now}
    await redis.set(breaker, json.dumps(info), ex=600)
    tripped = await scrape(client)
    assert (tripped[blocked], tripped[unpaid]) == (0, 1)
    await redis.delete(breaker)
    after = await scrape(client)
    assert (after[blocked], after[unpaid]) == (0, 0)


# --- /api/status ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": ""}])
async def test_status_requires_a_token(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/api/status", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid token"}
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("how", ["header", "query"])
async def test_status_with_a_token(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, how: str
) -> None:
    await reconciled(redis, settings, 1.0)
    if how == "header":
        response = await client.get("/api/status", headers={"authorization": f"Bearer {WS_TOKEN}"})
    else:
        response = await client.get("/api/status", params={"token": WS_TOKEN})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reconcile"]["stale"] is False
    assert body["queue"]["hints_pending"] == 0
    assert body["mirror"] == {"leads": 0, "contacts": 0, "companies": 0, "latest_version": None}
    assert set(body) >= {"cursors", "kommo", "freshness_ms", "errors"}
