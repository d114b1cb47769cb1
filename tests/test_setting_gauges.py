"""The settings the alerts compare against are exported by web and worker processes at start."""

from __future__ import annotations

import dataclasses

import asyncpg
import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from devenv.asgi import lifespan
from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.settings import Settings
from service.web.app import create_app
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst

NAMES = ("reconcile_interval_seconds", "kommo_rate_limit_per_second", "hint_queue_max")


def exported(settings: Settings) -> dict[str, float]:
    return {
        "reconcile_interval_seconds": settings.reconcile_interval,
        "kommo_rate_limit_per_second": settings.rate_limit,
        "hint_queue_max": settings.hint_queue_max,
    }


async def test_the_web_process_exports_its_settings(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    mine = dataclasses.replace(
        settings, reconcile_interval=7.5, rate_limit=3.5, hint_queue_max=1234
    )
    async with lifespan(create_app(mine)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as web:
            response = await web.get("/metrics")
    assert response.status_code == 200
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in NAMES
    }
    assert found == exported(mine)


async def test_a_worker_exports_its_settings(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    mine = dataclasses.replace(kommo_settings_for(env), reconcile_interval=2.5, hint_queue_max=4321)
    sim = Simulator(
        SimConfig(leads=3, contacts=2, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0))
    )
    try:
        await run_worker_burst(mine, sim)  # starts, backfills three leads, stops
    finally:
        await sim.aclose()
    assert {name: REGISTRY.get_sample_value(name) for name in NAMES} == exported(mine)
