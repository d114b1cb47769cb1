"""A flood of hints for ids Kommo does not have costs a bounded number of Kommo calls.

With the webhook secret, one body can name thousands of ids. Ids past ``HINT_QUEUE_MAX`` are
not queued (the reconcile catches real changes); an id Kommo does not return at all is given
up after one short retry, or at once when the mirror never saw it; a read older than its
webhook (Kommo's read lag) is retried a few times, as before.

Retries are delayed by seconds; :func:`settle` brings their due time forward instead of
sleeping, and runs the worker in burst mode again until no hint waits.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from devenv.asgi import lifespan
from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.keys import Keys
from service.settings import DEFAULT_HINT_QUEUE_MAX, Needs, Settings
from service.sync import hints as q
from service.sync.drain import LAG_MAX_TRIES, MISSING_MAX_TRIES
from service.sync.hints import Hints
from service.web.app import create_app
from tests.engine import SIM_TOKEN, kommo_settings_for, mark_imported, run_worker_burst

FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
UNKNOWN = 90_000_000  # above every id the simulator hands out
FLOOD = 26_000


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env, Needs.WEB)


@pytest.fixture
async def sim(pool: asyncpg.Pool) -> AsyncIterator[Simulator]:
    sim = Simulator(
        SimConfig(
            seed=4, leads=30, contacts=20, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    await mark_imported(pool, sim.config.account_id)  # only webhooks fill the mirror here
    yield sim
    await sim.aclose()


def lead_reads(sim: Simulator) -> int:
    return sum(n for (endpoint, _), n in sim.counters.items() if endpoint == "GET /api/v4/leads")


def kommo_calls(sim: Simulator) -> int:
    return sum(sim.counters.values())


async def settle(settings: Settings, sim: Simulator, redis: Redis, rounds: int = 12) -> int:
    """Drain the hints and every delayed retry (due at once, no sleeping); how many worker
    bursts it took."""
    keys = Keys(settings.redis_prefix)
    arq = ArqRedis(connection_pool=redis.connection_pool)
    for number in range(1, rounds + 1):
        await run_worker_burst(settings, sim, timeout=120)
        if await q.delayed_count(redis, keys) == 0 and await q.pending_count(redis, keys) == 0:
            return number
        await q.promote_due(redis, keys, now=time.time() + 3600, limit=100_000)
        await q.clear_scheduled(redis, keys)
        assert await q.ensure_scheduled(redis, arq, keys)
    raise AssertionError(f"hints still waiting after {rounds} worker bursts")


async def hint(settings: Settings, redis: Redis, ids: list[int], lm: int) -> None:
    """Queue change hints as the endpoint does (and the job that drains them)."""
    arq = ArqRedis(connection_pool=redis.connection_pool)
    hints = Hints(changes={"leads": dict.fromkeys(ids, lm)})
    await q.push_and_schedule(redis, arq, Keys(settings.redis_prefix), hints)


async def in_mirror(pool: asyncpg.Pool, ids: list[int]) -> set[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM leads WHERE id = ANY($1::bigint[])", ids)
    return {r["id"] for r in rows}


async def test_ids_nobody_has_are_given_up_after_one_read(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    ids = list(range(UNKNOWN, UNKNOWN + 600))
    await hint(kommo_settings, redis, ids, lm=int(time.time()))
    before = lead_reads(sim)
    assert await settle(kommo_settings, sim, redis) == 1
    assert lead_reads(sim) - before == math.ceil(600 / 250)  # one read per 250, no retry
    assert await in_mirror(pool, ids) == set()


async def test_a_mirrored_id_kommo_no_longer_returns_gets_one_retry(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    gone = sorted(sim.leads)[:3]
    await hint(kommo_settings, redis, gone, lm=0)
    await settle(kommo_settings, sim, redis)
    assert await in_mirror(pool, gone) == set(gone)
    for ident in gone:
        sim.delete_lead(ident)  # its delete webhook is lost
    await hint(kommo_settings, redis, gone, lm=int(time.time()))
    before = lead_reads(sim)
    await settle(kommo_settings, sim, redis)
    assert lead_reads(sim) - before == 1 + MISSING_MAX_TRIES == 2


async def test_a_lagging_read_of_a_mirrored_id_is_retried_as_before(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    lagging = sorted(sim.leads)[:2]
    await hint(kommo_settings, redis, lagging, lm=0)
    await settle(kommo_settings, sim, redis)
    # the webhook says newer than Kommo ever shows: each read looks like a lagging one
    await hint(kommo_settings, redis, lagging, lm=int(time.time()) + 86_400)
    before = lead_reads(sim)
    await settle(kommo_settings, sim, redis)
    assert lead_reads(sim) - before == 1 + LAG_MAX_TRIES == 6


def flood_bodies(count: int, limit: int, last_modified: int) -> list[bytes]:
    """``count`` unknown lead ids as ``leads[update]`` records with a ``last_modified``, in as
    few bodies of at most ``limit`` bytes as they fit."""
    bodies: list[bytes] = []
    parts: list[str] = []
    size = 0
    for n in range(count):
        record = f"leads[update][{n}]"
        part = f"{record}[id]={UNKNOWN + n}&{record}[last_modified]={last_modified}"
        if size + len(part) + 1 > limit:
            bodies.append("&".join(parts).encode())
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    bodies.append("&".join(parts).encode())
    return bodies


async def test_a_flood_of_unknown_ids_costs_a_bounded_number_of_calls(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    assert kommo_settings.hint_queue_max == DEFAULT_HINT_QUEUE_MAX
    bodies = flood_bodies(FLOOD, kommo_settings.webhook_max_bytes, int(time.time()))
    assert kommo_settings.webhook_secret is not None
    path = f"/webhooks/kommo/{kommo_settings.webhook_secret.value}"
    named = dropped = 0
    async with lifespan(create_app(kommo_settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as client:
            for raw in bodies:
                response = await client.post(path, content=raw, headers=FORM)
                assert response.status_code == 200, response.text
                named += response.json()["queued"]["leads"]
                dropped += response.json()["dropped"]
    assert (named, dropped) == (FLOOD, FLOOD - DEFAULT_HINT_QUEUE_MAX)
    before = kommo_calls(sim)
    await settle(kommo_settings, sim, redis)
    spent = kommo_calls(sim) - before
    # every queued id read once (250 a call), none retried; plus the worker's start-up call
    assert spent <= math.ceil(DEFAULT_HINT_QUEUE_MAX / 250) + 2, spent
    assert await in_mirror(pool, list(range(UNKNOWN, UNKNOWN + FLOOD))) == set()
