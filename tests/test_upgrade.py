"""A mirror made by the previous release (leads, contacts, tags; none of sql/004's tables filled)
is upgraded in the background: the new kinds are imported, leads gain the new fields without a
lead_update each, and a lead that really changed meanwhile is still published."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.keys import Keys
from service.resources import open_sync_resources
from service.settings import Settings
from service.sync.mirror import Mirror
from service.sync.reconcile import Reconciler
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst
from tests.mirror import differences

NEW_TABLES = (
    "companies", "company_tags", "company_phones", "lead_companies", "contact_companies",
    "contact_emails", "custom_fields", "custom_field_enums", "custom_field_values",
    "loss_reasons", "lead_status_changes",
)  # fmt: skip


@pytest.fixture
def sim() -> Simulator:
    config = SimConfig(
        seed=9, leads=400, contacts=200, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
    )
    return Simulator(config)


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


async def as_the_previous_release_left_it(pool: asyncpg.Pool, account_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"TRUNCATE {', '.join(NEW_TABLES)}")
        await conn.execute(
            "UPDATE leads SET loss_reason_id = NULL, shown = lead_shown_before_004(shown)"
        )
        await conn.execute(
            "DELETE FROM sync_cursors WHERE account_id = $1"
            " AND name IN ('upgrade_2', 'history', 'companies')",
            account_id,
        )


async def test_the_upgrade_adds_fields_quietly_and_still_publishes_real_changes(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    await run_worker_burst(kommo_settings, sim)
    await as_the_previous_release_left_it(pool, sim.config.account_id)
    assert await differences(pool, sim), "the stripped mirror should differ"
    changed = sorted(sim.leads)[:3]
    for lead_id in changed:
        sim.update_lead(lead_id, price=777_000 + lead_id % 1000)

    pubsub = redis.pubsub()
    await pubsub.subscribe(Keys(kommo_settings.redis_prefix).lead_update)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    await run_worker_burst(kommo_settings, sim)
    messages = []
    async with asyncio.timeout(10):
        while m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5):
            messages.append(json.loads(m["data"]))
    assert await differences(pool, sim) == []
    assert sorted(m["data"]["lead"]["id"] for m in messages) == changed
    assert all("pipeline_name" in m["data"]["lead"] for m in messages)

    async with pool.acquire() as conn:
        gained = await conn.fetchval(
            "SELECT count(*) FROM leads WHERE shown ? 'pipeline_name' AND shown ? 'companies'"
        )
        assert gained == await conn.fetchval("SELECT count(*) FROM leads")
        states = {
            r["name"]: json.loads(r["state"])
            for r in await conn.fetch("SELECT name, state FROM sync_cursors")
        }
    assert states["upgrade_2"]["stage"] == "done"
    assert states["history"]["done"] is True

    quiet_one = sorted(sim.leads)[10]  # its next change shows the new fields
    sim.update_lead(quiet_one, name="after the upgrade")
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        await Reconciler(Mirror(res, sim.config.account_id)).tick(0)
    m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    await pubsub.aclose()
    assert m is not None
    lead = json.loads(m["data"])["data"]["lead"]
    assert (lead["id"], lead["name"]) == (quiet_one, "after the upgrade")
    assert {"pipeline_name", "status_name", "companies", "loss_reason"} <= lead.keys()
