"""The hint queue is bounded: at most ``HINT_QUEUE_MAX`` ids wait, enforced in the push script."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devenv.asgi import lifespan
from service.keys import Keys
from service.settings import DEFAULT_HINT_QUEUE_MAX, ConfigError, Needs, Settings
from service.sync import hints as q
from service.sync.hints import Hints
from service.web.app import create_app

FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}


def leads(*ids: int, lm: int = 0) -> Hints:
    return Hints(changes={"leads": dict.fromkeys(ids, lm)})


async def test_ids_past_the_cap_are_not_queued(redis: Redis, keys: Keys) -> None:
    first = await q.push(redis, keys, leads(*range(1, 9)), cap=5)
    assert (first.scheduled, first.dropped, first.first_drop) == (True, 3, True)
    assert [i for i, _, _ in await q.claim(redis, keys, "leads")] == [1, 2, 3, 4, 5]
    again = await q.push(redis, keys, Hints(deletes={"contacts": {7}}), cap=5)
    assert (again.dropped, again.first_drop) == (1, False)  # the same burst: logged once
    # a re-hint of a queued id is always taken, with its newer last_modified
    assert (await q.push(redis, keys, leads(2, 3, lm=50), cap=5)).dropped == 0
    assert {i: lm for i, _, lm in await q.claim(redis, keys, "leads")}[2] == 50
    # a restore left out by the cap leaves no flag behind
    restored = Hints(changes={"leads": {9: 1}}, restores={"leads": {9}})
    assert (await q.push(redis, keys, restored, cap=5)).dropped == 1
    assert await q.restores(redis, keys, "leads", [9]) == set()
    assert await q.pending_count(redis, keys) == 5
    assert await redis.pttl(keys.hints_overflow) > 50_000


async def test_delayed_retries_count_as_waiting(redis: Redis, keys: Keys) -> None:
    await q.push(redis, keys, leads(1, 2, 3), cap=4)
    claimed = await q.claim(redis, keys, "leads")
    assert await q.retry_later(redis, keys, "leads", claimed, 60) == 3
    assert await q.pending_count(redis, keys) == 0
    pushed = await q.push(redis, keys, Hints(deletes={"leads": {7, 8}}), cap=4)
    assert pushed.dropped == 1 and await q.pending_count(redis, keys) == 1


async def test_the_cap_holds_under_concurrent_pushes(redis: Redis, keys: Keys) -> None:
    batches = [leads(*range(n * 10, n * 10 + 10)) for n in range(1, 21)]
    results = await asyncio.gather(*(q.push(redis, keys, h, cap=50) for h in batches))
    assert await q.pending_count(redis, keys) == 50
    assert sum(r.dropped for r in results) == 150
    assert sum(r.first_drop for r in results) == 1


async def test_a_new_burst_is_logged_again(redis: Redis, keys: Keys) -> None:
    assert (await q.push(redis, keys, leads(1, 2), cap=1)).first_drop
    await redis.delete(keys.hints_overflow)  # a minute without drops
    assert (await q.push(redis, keys, leads(3), cap=1)).first_drop


def test_the_setting(env: dict[str, str]) -> None:
    assert Settings.from_env(env).hint_queue_max == DEFAULT_HINT_QUEUE_MAX == 10_000
    assert Settings.from_env({**env, "HINT_QUEUE_MAX": "2500"}).hint_queue_max == 2500
    for bad in ("100", "lots", "-1"):
        with pytest.raises(ConfigError, match="^configuration error: HINT_QUEUE_MAX "):
            Settings.from_env({**env, "HINT_QUEUE_MAX": bad})


# --- the endpoint: still 200, says how many were dropped, counts and logs them ---------------


@pytest.fixture
async def capped(env: dict[str, str], redis: Redis) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings.from_env(
        {**env, "HINT_QUEUE_MAX": "250"}, Needs.DATABASE | Needs.REDIS | Needs.WEB
    )
    assert settings.webhook_secret is not None
    async with lifespan(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as client:
            yield client, f"/webhooks/kommo/{settings.webhook_secret.value}"
    jobs = await redis.zrange(Keys(settings.redis_prefix).queue, 0, -1)  # arq's keys are global
    if jobs:
        await redis.delete(*(b"arq:job:" + j for j in jobs))


def body(first: int, count: int) -> bytes:
    return "&".join(
        f"leads[update][{n}][id]={first + n}&leads[update][{n}][last_modified]=1748300000"
        for n in range(count)
    ).encode()


def dropped_metric() -> float:
    return REGISTRY.get_sample_value("webhook_hints_dropped_total", {}) or 0.0


async def test_the_endpoint_answers_200_and_says_how_many_were_dropped(
    capped: tuple[httpx.AsyncClient, str],
    redis: Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, path = capped
    before = dropped_metric()
    with caplog.at_level(logging.WARNING, logger="service.web.webhooks"):
        first = await client.post(path, content=body(1, 200), headers=FORM)
        second = await client.post(path, content=body(1000, 120), headers=FORM)
        third = await client.post(path, content=body(5000, 30), headers=FORM)
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert [r.json()["dropped"] for r in (first, second, third)] == [0, 70, 30]
    assert second.json()["queued"]["leads"] == 120  # what the body named
    assert dropped_metric() == before + 100
    assert await q.pending_count(redis, keys) == 250
    warnings = [r for r in caplog.records if "hint queue full" in r.getMessage()]
    assert len(warnings) == 1 and "HINT_QUEUE_MAX=250" in warnings[0].getMessage()
