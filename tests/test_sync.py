"""The sync engine end to end: the simulator, real Postgres and Redis, arq in burst mode."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from kommo_sim import RateLimitConfig, SimConfig, Simulator, random_mutation
from service.keys import Keys
from service.kinds import LEADS
from service.kommo.budget import Priority
from service.resources import SyncResources, open_sync_resources
from service.settings import Settings
from service.store import cursors as store
from service.sync.backfill import Backfill
from service.sync.mirror import Mirror
from service.sync.reconcile import Reconciler
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst
from tests.mirror import differences


@pytest.fixture
def sim() -> Simulator:
    return Simulator(
        SimConfig(
            seed=7, leads=2000, contacts=1000, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


@dataclass
class Engine:
    res: SyncResources
    mirror: Mirror
    reconciler: Reconciler


@pytest.fixture
async def engine(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> AsyncIterator[Engine]:
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        mirror = Mirror(res, sim.config.account_id)
        yield Engine(res, mirror, Reconciler(mirror))


async def test_backfill_mirrors_the_account_exactly(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    await run_worker_burst(kommo_settings, sim)
    assert await differences(pool, sim) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM leads") == 2000
        phones = "SELECT count(*) FROM contact_phones WHERE normalized IS NOT NULL"
        assert await conn.fetchval(phones) > 500
        cursors = {r["name"] for r in await conn.fetch("SELECT name FROM sync_cursors")}
    assert {"leads", "contacts", "events", "backfill"} <= cursors


async def test_mutations_without_webhooks_are_mirrored_within_two_ticks(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    rng = random.Random(11)
    kinds = collections.Counter(" ".join(random_mutation(sim, rng).split()[:2]) for _ in range(500))
    done = {"edit company", "delete company", "restore company", "status lead", "update lead"}
    assert (
        done | {"delete lead", "restore lead", "delete contact", "restore contact"} <= kinds.keys()
    )
    assert await differences(pool, sim), "the mutations should have changed something"
    await engine.reconciler.tick(0)
    await engine.reconciler.tick(1)
    assert await differences(pool, sim) == []


async def test_one_message_per_real_change_and_none_for_rereads(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    pubsub = redis.pubsub()
    await pubsub.subscribe(Keys(kommo_settings.redis_prefix).lead_update)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    ids = sorted(sim.leads)[:3]
    for i, lead_id in enumerate(ids):
        sim.update_lead(lead_id, price=10_000 + i)
    await engine.reconciler.tick(0)
    await engine.reconciler.tick(1)  # a re-read of the same rows: nothing new to say
    messages = []
    while m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2):
        messages.append(json.loads(m["data"]))
    await pubsub.aclose()
    assert sorted(m["data"]["lead"]["id"] for m in messages) == ids
    assert all(
        m["event"] == "lead_update"
        and m["data"]["source"] == "reconcile"
        and m["data"]["action"] == "updated"
        for m in messages
    )
    versions = [m["data"]["version"] for m in messages]
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_same_second_changes_are_not_skipped(
    kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=3,
            leads=20,
            contacts=10,
            token=SIM_TOKEN,
            clock_speed=0,
            rate_limit=RateLimitConfig(rate=0),
        )
    )
    await run_worker_burst(kommo_settings, sim)
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        reconciler = Reconciler(Mirror(res, sim.config.account_id))
        lead_id = min(sim.leads)
        sim.update_lead(lead_id, name="first edit")
        await reconciler.tick(0)
        sim.update_lead(lead_id, name="second edit, same second")
        await reconciler.tick(1)
    assert await differences(pool, sim) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT name FROM leads WHERE id = $1", lead_id) == (
            "second edit, same second"
        )


async def test_two_workers_run_each_tick_once(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    other = Reconciler(engine.mirror)
    runs_key = Keys(kommo_settings.redis_prefix).reconcile_runs
    ran = 0
    for second in range(6):
        now = 1_900_000_000 + second * 0.5  # two fires per tick of 1 s, from two workers
        results = await asyncio.gather(engine.reconciler.maybe_tick(now), other.maybe_tick(now))
        ran += sum(r is not None for r in results)
    assert ran == 3
    assert int(await redis.get(runs_key) or 0) == 3


def kommo_calls(sim: Simulator) -> int:
    return sum(n for (endpoint, _), n in sim.counters.items() if "/api/v4/" in endpoint)


async def test_an_idle_tick_costs_at_most_four_calls(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    per_tick = []
    for number in range(48):  # every slot of the rotation: events, 12 slow items every 4th tick
        before = kommo_calls(sim)
        await engine.reconciler.tick(number)
        per_tick.append(kommo_calls(sim) - before)
    assert max(per_tick) <= 4, per_tick  # three streams, then events or one slow item
    assert sum(per_tick) / len(per_tick) * 12 <= 48  # calls a minute at a 5 s interval


async def test_a_quiet_stream_reads_past_its_cursor_and_still_sees_changes(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    await engine.reconciler.tick(0)
    async with pool.acquire() as conn:  # the cursors have stood still for two minutes
        await conn.execute(
            "UPDATE sync_cursors SET state = state || '{\"moved_at\": 1}'::jsonb"
            " WHERE name IN ('leads', 'contacts', 'events')"
        )
    sim.counters.clear()
    await engine.reconciler.tick(1)
    assert sim.counters[("GET /api/v4/leads", 204)] == 1
    assert sim.counters[("GET /api/v4/contacts", 204)] == 1
    assert sim.counters[("GET /api/v4/events", 204)] == 1
    assert sim.counters[("GET /api/v4/leads", 200)] == 0  # nothing re-read
    lead_id = min(sim.leads)
    sim.clock.advance(1)
    sim.update_lead(lead_id, name="changed after a quiet spell")
    await engine.reconciler.tick(2)
    assert await differences(pool, sim) == []


class ChangesDuringScan(httpx.ASGITransport):
    """Kommo's data changes between two pages of one scan (after the first list page)."""

    def __init__(self, sim: Simulator, lead_id: int) -> None:
        super().__init__(app=sim.app)
        self.sim, self.lead_id, self.done = sim, lead_id, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not self.done and "filter%5Bupdated_at%5D" in str(request.url):
            self.done = True
            self.sim.clock.advance(1000)
            self.sim.update_lead(self.lead_id, name="moved to the end of the scan")
        return response


async def test_a_scan_loses_no_row_when_pages_drift(
    kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=8,
            leads=600,
            contacts=50,
            token=SIM_TOKEN,
            clock_speed=0,
            rate_limit=RateLimitConfig(rate=0),
        )
    )
    await run_worker_burst(kommo_settings, sim)
    ids = sorted(sim.leads)
    for i, lead_id in enumerate(ids):  # 600 changes, one a second: a three-page scan
        sim.clock.advance(1)
        sim.update_lead(lead_id, price=100_000 + i)
    transport = ChangesDuringScan(sim, ids[5])  # a row of the first page moves to the end
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        await Reconciler(Mirror(res, sim.config.account_id)).stream(LEADS)
    assert transport.done
    assert await differences(pool, sim) == []


async def test_the_id_sweep_finds_what_events_and_webhooks_missed(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    await run_worker_burst(kommo_settings, sim)
    ids = sorted(sim.leads)
    gone, lost = ids[300], ids[1500]
    sim.delete_lead(gone)
    sim.events.events.clear()  # the deletion never shows up in the events feed
    async with pool.acquire() as conn:  # and a row the mirror never got
        await conn.execute("DELETE FROM leads WHERE id = $1", lost)
    assert len(await differences(pool, sim)) == 2
    for _ in range(8):  # 2,000 leads: eight pages of ids
        await engine.reconciler.sweep.page(LEADS)
    assert await differences(pool, sim) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT is_deleted FROM leads WHERE id = $1", gone) is True
        assert await store.get_cursor(conn, sim.config.account_id, "sweep_leads") == 1


async def test_faulty_kommo_loses_nothing(
    kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(
        SimConfig(
            seed=21, leads=600, contacts=300, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    sim.faults.update(
        sim.clock,
        error_rate=0.2,
        error_status=502,
        lag_seconds=2,
        lag_probability=0.5,
        html_429=True,
        storm_seconds=1.5,
    )
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        mirror = Mirror(res, sim.config.account_id)
        from service.sync.imports import Imports  # what the worker runs: backfill, history

        await Imports(mirror).run()
        rng = random.Random(3)
        for _ in range(100):
            random_mutation(sim, rng)
        reconciler = Reconciler(mirror)
        for number in range(3):
            await reconciler.tick(number)
    assert sum(n for (_, status), n in sim.counters.items() if status == 502) > 0
    assert sum(n for (_, status), n in sim.counters.items() if status == 429) > 0
    sim.faults.reset()
    sim.clock.advance(5)  # past the lag window: what Kommo shows now is final
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        reconciler = Reconciler(Mirror(res, sim.config.account_id))
        await reconciler.tick(4)
    assert await differences(pool, sim) == []


async def test_a_403_stops_every_call_and_nothing_retries_it(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    from service.kommo.errors import KommoBlocked

    await run_worker_burst(kommo_settings, sim)
    sim.faults.update(sim.clock, block_seconds=3600)
    before = kommo_calls(sim)
    with pytest.raises(KommoBlocked):
        await engine.reconciler.tick(0)
    assert kommo_calls(sim) == before + 1  # one call met the block; none after it
    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as other:
        with pytest.raises(KommoBlocked):  # another process: refused before any request
            await other.kommo.get("/api/v4/leads", priority=Priority.WEBHOOK)
    for number in range(1, 4):
        with pytest.raises(KommoBlocked):
            await engine.reconciler.tick(number)
    assert kommo_calls(sim) == before + 1


async def test_a_restarted_backfill_rewrites_rows_kommo_did_not_change(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis, engine: Engine
) -> None:
    """What a fix of the normalisation needs: phones recomputed from unchanged objects."""
    await run_worker_burst(kommo_settings, sim)
    async with pool.acquire() as conn:
        stale = await conn.execute(
            "UPDATE contact_phones SET normalized = '0000' WHERE normalized IS NOT NULL"
        )
    assert stale != "UPDATE 0" and await differences(pool, sim)
    await Backfill(engine.mirror).run(restart=True)
    assert await differences(pool, sim) == []
