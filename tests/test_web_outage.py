"""The web app with PostgreSQL or Redis gone: 503 ``{"error": …}`` with ``Retry-After`` from
every handler that needs them (mapped once, in the app's exception handlers), ``/readyz`` says
which, and the process logs the outage once each way. The outage is real: the app's DSN goes
through :class:`tests.netfault.Proxy` to the local server, and the proxy is cut."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from devenv.asgi import lifespan
from service.settings import Needs, Settings
from service.web.app import create_app
from tests.netfault import Proxy

READ_PATHS = ["/api/leads", "/api/leads?changed_after=0&limit=5", "/api/leads/24000101"]


@pytest.fixture
async def pg_proxy(env: dict[str, str], pool: asyncpg.Pool) -> AsyncIterator[Proxy]:
    async with Proxy.for_url(env["DATABASE_URL"], 5432) as proxy:
        yield proxy


@pytest.fixture
async def redis_proxy(env: dict[str, str], redis: Redis) -> AsyncIterator[Proxy]:
    async with Proxy.for_url(env["REDIS_URL"], 6379) as proxy:
        yield proxy


@pytest.fixture
def token(env: dict[str, str]) -> dict[str, str]:
    return {"authorization": f"Bearer {env['WS_TOKENS']}"}


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            yield client


@pytest.fixture
async def web_via_pg_proxy(
    env: dict[str, str], pg_proxy: Proxy
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env(
        {**env, "DATABASE_URL": pg_proxy.url(env["DATABASE_URL"])}, Needs.DATABASE | Needs.REDIS
    )
    async with app_client(settings) as client:
        yield client


@pytest.fixture
async def web_via_redis_proxy(
    env: dict[str, str], redis_proxy: Proxy
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env(
        {**env, "REDIS_URL": redis_proxy.url(env["REDIS_URL"])}, Needs.DATABASE | Needs.REDIS
    )
    async with app_client(settings) as client:
        yield client


def assert_unavailable(response: httpx.Response, service: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"error": f"{service} is unavailable; retry later"}
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"


def outage_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("how", ["cut", "refuse"])
async def test_read_api_and_status_answer_503_while_postgres_is_down(
    web_via_pg_proxy: httpx.AsyncClient,
    pg_proxy: Proxy,
    token: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    web = web_via_pg_proxy
    assert (await web.get("/api/leads", headers=token)).status_code == 200
    await (pg_proxy.cut() if how == "cut" else pg_proxy.refuse())
    caplog.set_level(logging.INFO, logger="service.web.app")
    for _ in range(2):
        for path in [*READ_PATHS, "/api/status"]:
            assert_unavailable(await web.get(path, headers=token), "PostgreSQL")
    ready = await web.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["postgres"] and ready.json()["redis"] == {"ok": True}
    gone = f"cannot reach PostgreSQL at 127.0.0.1:{pg_proxy.port} ("
    assert len(outage_lines(caplog, gone)) == 1, caplog.text  # eight 503s, one line
    assert not [r for r in caplog.records if r.name.startswith("service") and r.exc_info]

    await pg_proxy.restore()
    assert (await web.get("/readyz")).status_code == 200
    for path in READ_PATHS:
        assert (await web.get(path, headers=token)).status_code in (200, 404)
    assert (await web.get("/api/status", headers=token)).status_code == 200
    back = f"PostgreSQL at 127.0.0.1:{pg_proxy.port} reachable again"
    assert len(outage_lines(caplog, back)) == 1, caplog.text


async def test_status_answers_503_while_redis_is_down(
    web_via_redis_proxy: httpx.AsyncClient,
    redis_proxy: Proxy,
    token: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    web = web_via_redis_proxy
    assert (await web.get("/api/status", headers=token)).status_code == 200
    await redis_proxy.cut()
    caplog.set_level(logging.INFO, logger="service.web.app")
    assert_unavailable(await web.get("/api/status", headers=token), "Redis")
    assert (await web.get("/api/leads", headers=token)).status_code == 200  # needs no Redis
    ready = await web.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["redis"] and ready.json()["postgres"] == {"ok": True}
    assert len(outage_lines(caplog, f"cannot reach Redis at 127.0.0.1:{redis_proxy.port}")) == 1

    await redis_proxy.restore()
    assert (await web.get("/readyz")).status_code == 200
    assert (await web.get("/api/status", headers=token)).status_code == 200
