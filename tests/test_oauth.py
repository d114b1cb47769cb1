"""OAuth tokens in real Postgres, against a token endpoint whose refresh tokens rotate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from service.kommo.budget import Priority
from service.kommo.client import KommoClient, kommo_client
from service.kommo.errors import KommoAuthError
from service.settings import Needs, Settings

BASE = "http://kommo.test"
CLIENT_SECRET = "client-SECRET-0123456789"
W = Priority.WEBHOOK


class OAuthKommo:
    """Kommo's token endpoint (refresh tokens rotate and are single-use) and one API route.

    Every API call also checks that the token it is shown is already committed in Postgres:
    a new pair must be persisted before it is used.
    """

    def __init__(
        self, pool: asyncpg.Pool, *, refresh: set[str], access: set[str], code: str | None = None
    ) -> None:
        self.pool = pool
        self.refresh, self.access, self.code = refresh, access, code
        self.token_calls: list[dict[str, str]] = []
        self.api_calls: list[str] = []
        self.revoked = 0
        self.issued = 1

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            return await self._token(json.loads(request.content))
        token = request.headers["authorization"].removeprefix("Bearer ")
        self.api_calls.append(token)
        if token not in self.access:
            return httpx.Response(
                401,
                json={
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": "Invalid user name or password",
                },
            )
        stored = await self.pool.fetchval("SELECT access_token FROM oauth_tokens")
        assert stored == token, "a token was used before it was committed"
        return httpx.Response(200, json={"id": 31000001, "subdomain": "examplecorp"})

    async def _token(self, body: dict[str, str]) -> httpx.Response:
        self.token_calls.append(body)
        await asyncio.sleep(0.02)  # network latency: gives a racing refresher its chance
        assert body["client_secret"] == CLIENT_SECRET
        if body["grant_type"] == "authorization_code":
            valid, self.code = body["code"] == self.code, None
        else:
            valid = body["refresh_token"] in self.refresh
            self.refresh.discard(body["refresh_token"])
        if not valid:
            self.revoked += 1
            return httpx.Response(
                400,
                json={
                    "hint": "Token has been revoked",
                    "title": "Некорректный запрос",
                    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                    "status": 400,
                    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
                },
            )
        self.issued += 1
        access, refresh = f"access-{self.issued}", f"refresh-{self.issued}"
        self.access, self.refresh = {access}, {refresh}
        return httpx.Response(
            200,
            json={
                "token_type": "Bearer",
                "expires_in": 86400,
                "server_time": int(time.time()),
                "access_token": access,
                "refresh_token": refresh,
            },
        )


def oauth_settings(env: dict[str, str], **extra: str) -> Settings:
    return Settings.from_env(
        env
        | {
            "KOMMO_BASE_URL": BASE,
            "KOMMO_CLIENT_ID": "client-id",
            "KOMMO_RATE_LIMIT": "50",
            "KOMMO_CLIENT_SECRET": CLIENT_SECRET,
            "KOMMO_REDIRECT_URI": "https://sync.example.com/oauth",
        }
        | extra,
        Needs.DATABASE | Needs.REDIS | Needs.KOMMO,
    )


@contextlib.asynccontextmanager
async def process(
    settings: Settings, redis: Redis, pool: asyncpg.Pool, kommo: OAuthKommo
) -> AsyncIterator[KommoClient]:
    """One process's client: its own httpx client and budget; Postgres and Redis shared."""
    async with kommo_client(settings, redis, pool, transport=httpx.MockTransport(kommo)) as client:
        yield client


async def store(pool: asyncpg.Pool, access: str, refresh: str, expires_in: float) -> None:
    await pool.execute(
        "INSERT INTO oauth_tokens (base_url, access_token, refresh_token, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        BASE,
        access,
        refresh,
        datetime.fromtimestamp(time.time() + expires_in, UTC),
    )


async def stored(pool: asyncpg.Pool) -> tuple[str, str, float]:
    row = await pool.fetchrow(
        "SELECT access_token, refresh_token,"
        " extract(epoch FROM expires_at) AS exp FROM oauth_tokens"
    )
    assert row is not None
    return row["access_token"], row["refresh_token"], float(row["exp"]) - time.time()


async def test_two_processes_refresh_ahead_of_expiry_exactly_once(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    await store(pool, "access-1", "refresh-1", expires_in=300)  # under the 10-minute margin
    kommo = OAuthKommo(pool, refresh={"refresh-1"}, access={"access-1"})
    s = oauth_settings(env, KOMMO_REFRESH_TOKEN="refresh-from-env")
    async with process(s, redis, pool, kommo) as one, process(s, redis, pool, kommo) as two:
        async with asyncio.timeout(10):
            await asyncio.gather(
                one.account(priority=W),
                two.account(priority=W),
                one.account(priority=W),
                two.account(priority=W),
            )
    assert len(kommo.token_calls) == 1 and kommo.revoked == 0
    assert kommo.token_calls[0]["refresh_token"] == "refresh-1"  # the stored one, not the env's
    assert kommo.api_calls == ["access-2"] * 4
    access, refresh, left = await stored(pool)
    assert (access, refresh) == ("access-2", "refresh-2") and left > 86000


async def test_a_401_raced_by_two_processes_makes_one_refresh(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    await store(pool, "access-1", "refresh-1", expires_in=3600)
    kommo = OAuthKommo(pool, refresh={"refresh-1"}, access=set())  # access-1 was revoked
    s = oauth_settings(env, KOMMO_REFRESH_TOKEN="refresh-from-env")
    async with process(s, redis, pool, kommo) as one, process(s, redis, pool, kommo) as two:
        async with asyncio.timeout(10):
            await asyncio.gather(one.account(priority=W), two.account(priority=W))
    assert len(kommo.token_calls) == 1 and kommo.revoked == 0
    # each process was refused access-1 at most once, then both used the one new token
    assert kommo.api_calls.count("access-2") == 2
    assert set(kommo.api_calls) == {"access-1", "access-2"}


async def test_first_run_exchanges_the_auth_code_once(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    kommo = OAuthKommo(pool, refresh=set(), access=set(), code="auth-code-1")
    s = oauth_settings(env, KOMMO_AUTH_CODE="auth-code-1")
    async with process(s, redis, pool, kommo) as one:
        await one.account(priority=W)
    async with process(s, redis, pool, kommo) as restarted:  # a later process reuses the row
        await restarted.account(priority=W)
    assert [c["grant_type"] for c in kommo.token_calls] == ["authorization_code"]
    call = kommo.token_calls[0]
    assert (call["code"], call["client_id"], call["redirect_uri"]) == (
        "auth-code-1",
        "client-id",
        "https://sync.example.com/oauth",
    )
    assert (await stored(pool))[:2] == ("access-2", "refresh-2")


async def test_first_run_uses_the_configured_refresh_token(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    kommo = OAuthKommo(pool, refresh={"refresh-from-env"}, access=set())
    async with process(
        oauth_settings(env, KOMMO_REFRESH_TOKEN="refresh-from-env"), redis, pool, kommo
    ) as client:
        assert (await client.account(priority=W))["subdomain"] == "examplecorp"
    assert kommo.token_calls[0]["refresh_token"] == "refresh-from-env"
    assert (await stored(pool))[:2] == ("access-2", "refresh-2")


async def test_a_refused_refresh_stops_with_one_clear_error(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await store(pool, "access-1", "refresh-old", expires_in=-60)  # expired
    kommo = OAuthKommo(pool, refresh={"refresh-other"}, access=set())
    async with process(oauth_settings(env, KOMMO_REFRESH_TOKEN="x"), redis, pool, kommo) as c:
        for _ in range(3):
            with pytest.raises(KommoAuthError) as caught:
                await c.account(priority=W)
    assert len(kommo.token_calls) == 1 and kommo.api_calls == []  # no retry loop
    message = str(caught.value)
    assert "Token has been revoked" in message and "syncing stops" in message
    for secret in (CLIENT_SECRET, "refresh-old", "access-1"):
        assert secret not in message and secret not in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert (await stored(pool))[:2] == ("access-1", "refresh-old")  # nothing overwritten


async def test_a_second_401_after_refreshing_is_an_auth_error(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    await store(pool, "access-1", "refresh-1", expires_in=3600)
    kommo = OAuthKommo(pool, refresh={"refresh-1"}, access=set())
    kommo.access = set()

    async def always_401(request: httpx.Request) -> httpx.Response:
        response = await kommo(request)
        kommo.access = set()  # every new access token is rejected, too
        return response

    async with kommo_client(
        oauth_settings(env, KOMMO_REFRESH_TOKEN="x"),
        redis,
        pool,
        transport=httpx.MockTransport(always_401),
    ) as client:
        with pytest.raises(KommoAuthError):
            await client.account(priority=W)
    assert len(kommo.token_calls) == 1 and len(kommo.api_calls) == 2
