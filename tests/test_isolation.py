"""Deployments sharing one Redis server never hear or touch each other.

Redis pub/sub ignores the logical database: the channel carries the database number. The hub
relays only its own accounts' messages. And every key, channel, queue and job id a deployment
writes (arq's included) lives under its ``REDIS_PREFIX``: a run of two deployments on one
database leaves no key the other could read or steal.
"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest
from arq.worker import Worker
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devenv.asgi import lifespan
from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.gateway.hub import Hub
from service.keys import Keys, redis_db
from service.settings import Needs, Settings
from service.web.app import create_app
from tests.engine import SIM_TOKEN, kommo_settings_for
from workers.main import worker_options

SPARE_DB = 13


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


SPARE_DB_DOC = None  # a logical database no other test uses; emptied before and after


def test_the_channel_carries_the_database_number() -> None:
    assert redis_db("redis://127.0.0.1:6379/0") == 0
    assert redis_db("redis://127.0.0.1:6379/5") == 5
    assert redis_db("redis://127.0.0.1:6379?db=7") == 7
    assert redis_db("unix:///run/redis.sock?db=2") == 2
    assert Keys("p:", 0).lead_update == "p:lead_update"
    assert Keys("p:", 3).lead_update != Keys("p:", 0).lead_update


def _on_db(env: dict[str, str], db: int, **extra: str) -> Settings:
    url = env["REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"
    return Settings.from_env({**env, "REDIS_URL": url, **extra}, Needs.DATABASE | Needs.REDIS)


async def test_a_deployment_on_another_database_is_not_heard(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    ours, theirs = _on_db(env, 0), _on_db(env, 1)
    hub = Hub(ours)
    async with lifespan(create_app(ours, hub=hub)):
        await asyncio.wait_for(hub.subscribed.wait(), 10)
        foreign = json.dumps(
            {
                "event": "lead_update",
                "account_id": 31000001,
                "data": {
                    "action": "updated",
                    "version": 10**12,
                    "source": "webhook",
                    "lead": {"id": 1, "pipeline_id": 2},
                },
            }
        )
        # same prefix, same account, other database: another deployment's message
        assert await redis.publish(Keys.of(theirs).lead_update, foreign) == 0
        # a message of an account this deployment does not mirror, on our own channel
        dropped = metric("ws_foreign_messages_dropped_total")
        stranger = foreign.replace("31000001", "99999999")
        assert await redis.publish(Keys.of(ours).lead_update, stranger) == 1
        # then one of ours: once it is relayed, the stranger before it was seen (and dropped)
        own = foreign.replace(str(10**12), "777")
        assert await redis.publish(Keys.of(ours).lead_update, own) == 1
        async with asyncio.timeout(10):
            while hub.last_version != 777:
                await asyncio.sleep(0.01)
    assert metric("ws_foreign_messages_dropped_total") == dropped + 1
    assert hub.last_version == 777  # hello never reports another deployment's version


async def test_every_key_of_two_deployments_is_under_its_prefix(
    env: dict[str, str], pool: asyncpg.Pool
) -> None:
    base = env["REDIS_URL"].rsplit("/", 1)[0] + f"/{SPARE_DB}"
    raw: Redis = Redis.from_url(base)
    await raw.flushdb()
    sim = Simulator(
        SimConfig(
            seed=4, leads=30, contacts=15, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    prefixes = ["deployA:", "deployB:"]
    try:
        for prefix in prefixes:
            settings = kommo_settings_for(
                {**env, "REDIS_URL": base, "REDIS_PREFIX": prefix}, Needs.WEB
            )
            await _run_a_while(settings, sim)
        keys = [k.decode() async for k in raw.scan_iter(count=1000)]
    finally:
        await raw.flushdb()
        await raw.aclose()
    assert keys, "the run wrote nothing: the test proves nothing"
    outside = [k for k in keys if not any(p in k for p in prefixes)]
    assert outside == []  # arq's own keys carry the prefix in their queue name or job id
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys)
        assert any(k.startswith("arq:") and prefix in k for k in keys) or any(
            k == Keys(prefix).queue for k in keys
        )


async def _run_a_while(settings: Settings, sim: Simulator) -> None:
    """A web app taking a webhook, and a worker with its cron jobs until a tick has run."""
    transport = httpx.ASGITransport(app=sim.app)
    options = worker_options(settings, kommo_transport=transport)
    options.update(handle_signals=False)
    worker = Worker(**options)
    task = asyncio.create_task(worker.main())
    keys = Keys.of(settings)
    check: Redis = Redis.from_url(settings.redis_dsn)
    try:
        async with (
            lifespan(create_app(settings)) as app,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as web,
        ):
            assert settings.webhook_secret is not None
            response = await web.post(
                f"/webhooks/kommo/{settings.webhook_secret.value}",
                content=f"leads[update][0][id]={min(sim.leads)}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 200
            async with asyncio.timeout(60):  # backfill, then reconcile ticks run
                while int(await check.get(keys.reconcile_runs) or 0) < 2:
                    await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await worker.close()
        await check.aclose()
