"""The test harness: real PostgreSQL and real Redis, isolated per test session.

Each session creates its own throwaway database (built by the migration runner) and its own
Redis key prefix, so two runs at once never collide; every test that asks for ``pool`` or
``redis`` starts from empty tables and an empty namespace.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from devenv.asgi import lifespan
from service.keys import Keys
from service.settings import Needs, Settings
from service.store.migrations import migrate
from tests.session import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    RUN_ID,
    WEBHOOK_SECRET,
    WS_TOKEN,
    with_database,
)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    name = f"kommo_test_{RUN_ID}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


@pytest.fixture(scope="session")
def env(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment a process of the service under test would see."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"test:{RUN_ID}:",
        "KOMMO_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "KOMMO_ACCOUNT_ID": "31000001",
        "WS_TOKENS": WS_TOKEN,
        "RECONCILE_INTERVAL": "1",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, Needs.DATABASE | Needs.REDIS)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.redis_prefix)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'"
        )
        await conn.execute("TRUNCATE " + ", ".join(f'"{r["tablename"]}"' for r in tables))
        await conn.execute("ALTER SEQUENCE lead_version_seq RESTART")
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str, settings: Settings) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url)
    await _clear_prefix(client, settings.redis_prefix)
    yield client
    await _clear_prefix(client, settings.redis_prefix)
    await client.aclose()


@pytest.fixture
async def client(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app with its lifespan running, through an in-process transport."""
    from service.web.app import create_app

    async with lifespan(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as web:
            yield web
    jobs = await redis.zrange(Keys(settings.redis_prefix).queue, 0, -1)  # arq's job keys are global
    if jobs:
        await redis.delete(*(b"arq:job:" + j for j in jobs))


async def _clear_prefix(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture(scope="session", autouse=True)
def _no_proxy() -> Iterator[None]:
    """Tests talk to loopback only; never let an environment proxy intercept it."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    yield
    os.environ.update(saved)
