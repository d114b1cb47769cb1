"""Webhooks end to end: Kommo's bodies in, rows and lead_update messages out."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from devenv.asgi import ASGIApp, lifespan
from kommo_sim import RateLimitConfig, SimConfig, Simulator, random_mutation
from service.keys import Keys
from service.settings import Needs, Settings
from service.store import cursors as store
from service.web.app import create_app
from tests.engine import SIM_TOKEN, kommo_settings_for, mark_imported, run_worker_burst
from tests.mirror import differences

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "webhooks"
FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env, Needs.WEB)


@pytest.fixture
async def web(kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis) -> AsyncIterator[ASGIApp]:
    async with lifespan(create_app(kommo_settings)) as app:
        yield app


async def mark_backfilled(pool: asyncpg.Pool, account_id: int) -> None:
    """Only webhooks may fill the mirror in these tests: no import, cursors far ahead."""
    await mark_imported(pool, account_id)


async def drain(settings: Settings, sim: Simulator) -> None:
    """Run the webhook jobs (and nothing else) until the queue is empty."""
    await run_worker_burst(settings, sim, timeout=60)


def hook_path(settings: Settings) -> str:
    assert settings.webhook_secret is not None
    return f"/webhooks/kommo/{settings.webhook_secret.value}"


async def post(app: ASGIApp, body: bytes, settings: Settings) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sync.test"
    ) as client:
        return await client.post(hook_path(settings), content=body, headers=FORM)


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.txt").read_bytes().strip()


class Messages:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.pubsub = redis.pubsub()
        self.channel = Keys(settings.redis_prefix).lead_update

    async def __aenter__(self) -> Messages:
        await self.pubsub.subscribe(self.channel)
        await self.pubsub.get_message(timeout=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()

    async def collect(self) -> list[dict[str, Any]]:
        out = []
        while m := await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2):
            out.append(json.loads(m["data"]))
        return out


# fixture -> (what the simulator does first, leads expected in messages, actions)
SCENARIOS: dict[str, tuple[str | None, set[int], set[str]]] = {
    "lead_add": (None, {24000101}, {"created"}),
    "lead_update": (None, {24000101}, {"created"}),
    "lead_status": (None, {24000102}, {"created"}),
    "lead_responsible": (None, {24000102}, {"created"}),
    "dp_lead_add": (None, {24000103}, {"created"}),
    "dp_lead_status": (None, {24000102}, {"created"}),
    "SYNTHETIC_two_leads_one_body": (None, {24000101, 24000102}, {"created"}),
    "contact_add": (None, set(), set()),
    "contact_update": (None, set(), set()),
    "company_add": (None, set(), set()),
    "company_delete": (None, set(), set()),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_each_fixture_body_mirrors_its_ids(
    name: str, kommo_settings: Settings, web: ASGIApp, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=1, leads=120, contacts=520, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    await mark_backfilled(pool, sim.config.account_id)
    _, lead_ids, actions = SCENARIOS[name]
    async with Messages(redis, kommo_settings) as messages:
        response = await post(web, body(name), kommo_settings)
        assert response.status_code == 200, response.text
        await drain(kommo_settings, sim)
        got = await messages.collect()
    assert {m["data"]["lead"]["id"] for m in got} == lead_ids
    assert {m["data"]["action"] for m in got} == actions
    assert all(m["data"]["source"] == "webhook" for m in got)
    async with pool.acquire() as conn:
        leads = {r["id"] for r in await conn.fetch("SELECT id FROM leads")}
        contacts = {r["id"] for r in await conn.fetch("SELECT id FROM contacts")}
    assert lead_ids <= leads
    if name.startswith("contact_"):
        assert 35000501 in contacts
    if name.startswith("company_"):
        assert leads == set() and contacts == set()
    await sim.aclose()


async def test_delete_and_restore_bodies(
    kommo_settings: Settings, web: ASGIApp, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=1, leads=120, contacts=520, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    await mark_backfilled(pool, sim.config.account_id)
    async with Messages(redis, kommo_settings) as messages:
        assert (await post(web, body("lead_add"), kommo_settings)).status_code == 200
        assert (await post(web, body("contact_add"), kommo_settings)).status_code == 200
        await drain(kommo_settings, sim)
        sim.delete_lead(24000101)
        sim.delete_contact(35000501)
        assert (await post(web, body("lead_delete"), kommo_settings)).status_code == 200
        assert (await post(web, body("contact_delete"), kommo_settings)).status_code == 200
        await drain(kommo_settings, sim)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT is_deleted FROM leads WHERE id = 24000101")
            assert await conn.fetchval("SELECT is_deleted FROM contacts WHERE id = 35000501")
        sim.restore_lead(24000101)
        assert (await post(web, body("lead_restore"), kommo_settings)).status_code == 200
        await drain(kommo_settings, sim)
        got = await messages.collect()
    actions = [m["data"]["action"] for m in got if m["data"]["lead"]["id"] == 24000101]
    assert actions[0] == "created" and actions[-2:] == ["deleted", "restored"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT is_deleted FROM leads WHERE id = 24000101") is False
    await sim.aclose()


async def test_duplicated_delayed_and_reordered_webhooks_converge(
    kommo_settings: Settings, web: ASGIApp, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=5, leads=150, contacts=80, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        ),
        webhook_transport=httpx.ASGITransport(app=web),
    )
    sim.webhooks.subscribe(f"http://sync.test{hook_path(kommo_settings)}", list(_all_settings()))
    await drain_backfill_via_webhooks_free_start(kommo_settings, sim, pool)
    sim.faults.update(sim.clock, webhook_duplicate=0.3, webhook_delay=0.3, webhook_delay_max=2.0)
    rng = random.Random(99)
    for _ in range(150):
        random_mutation(sim, rng)
    sim.clock.advance(5)  # every delayed delivery is due
    await sim.webhooks.drain()
    assert sim.webhooks.stats["delayed"] > 0 and sim.webhooks.stats.get("duplicated", 1) > 0
    await drain(kommo_settings, sim)
    assert await differences(pool, sim, history=False) == []  # moves: from events
    await sim.aclose()


def _all_settings() -> list[str]:
    from kommo_sim import ALL_SETTINGS

    return list(ALL_SETTINGS)


async def drain_backfill_via_webhooks_free_start(
    settings: Settings, sim: Simulator, pool: asyncpg.Pool
) -> None:
    """Start from a full mirror (a backfill), then only webhooks may change it."""
    await run_worker_burst(settings, sim, timeout=60)
    assert await differences(pool, sim, history=False) == []  # moves: from events
    async with pool.acquire() as conn:
        for name in ("leads", "contacts", "events"):
            await store.set_cursor(conn, sim.config.account_id, name, 4_000_000_000)
