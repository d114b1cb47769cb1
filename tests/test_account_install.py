"""The public integration installs itself: Kommo's redirect with a signed single-use state,
the code exchanged only with a Kommo host (the simulator's OAuth), and the uninstall hook."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from kommo_sim import SimConfig, SimFleet, Simulator, serve
from service.accounts.install import install_routes, oauth_origin, uninstall_signature
from service.accounts.state import States
from service.keys import Keys
from service.settings import Settings
from service.store import accounts as store
from tests.accounts import SECOND, SIM, THIRD, KommoHosts, deployment, install_app
from tests.accounts import fleet_of as make_fleet

CALLBACK = "/oauth/kommo/callback"


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    fleet = make_fleet()
    yield fleet
    await fleet.aclose()


@pytest.fixture
def hosts(fleet: SimFleet) -> KommoHosts:
    return KommoHosts(fleet)


async def fresh_state(web: httpx.AsyncClient) -> str:
    resp = await web.get("/oauth/kommo/start")
    assert resp.status_code == 302
    link = urlsplit(resp.headers["location"])
    assert (link.scheme, link.netloc, link.path) == ("https", "www.kommo.com", "/oauth")
    query = parse_qs(link.query)
    assert query["client_id"] == [SIM["KOMMO_CLIENT_ID"]]
    return query["state"][0]


async def registered(pool: asyncpg.Pool) -> list[int]:
    return [int(r["id"]) for r in await pool.fetch("SELECT id FROM accounts ORDER BY id")]


async def test_install_registers_the_account_once(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, fleet: SimFleet, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    sim = fleet["examplecorp2"]
    async with install_app(settings, hosts) as web:
        code = sim.tokens.issue_code()
        query = {"code": code, "referer": "examplecorp2.kommo.com", "state": await fresh_state(web)}
        resp = await web.get(CALLBACK, params=query)
        assert resp.status_code == 200, resp.text
        assert "examplecorp2 (31000002)" in resp.text and "installed" in resp.text.lower()
        assert code not in resp.text
        assert hosts.hosts == ["examplecorp2.kommo.com"] * 2
        assert hosts.paths == ["/oauth2/access_token", "/api/v4/account"]
        assert sim.tokens.code_grants == 1

        replay = await web.get(CALLBACK, params=query)  # the same redirect, again
        assert replay.status_code == 400 and "already used" in replay.text
        assert sim.tokens.code_grants == 1 and len(hosts.paths) == 2  # nothing exchanged
    assert await registered(pool) == [SECOND]
    async with pool.acquire() as conn:
        account = await store.get(conn, SECOND)
    assert account is not None
    assert (account.auth, account.oauth_client_id, account.base_url) == (
        "oauth",
        None,  # the deployment's integration
        "https://examplecorp2.kommo.com",
    )
    row = await pool.fetchrow("SELECT * FROM accounts")
    assert row is not None and all(
        "def50200" not in str(v) for v in dict(row).values()
    )  # no refresh token in clear


@pytest.mark.parametrize(
    "referer",
    [
        "evil.example.com",
        "examplecorp2.kommo.com.evil.com",
        "examplecorp2.kommo.com@evil.com",
        "evil.com/examplecorp2.kommo.com",
        "examplecorp2.kommo.com/../x",
        "http://examplecorp2.kommo.com",  # never in clear
        "www.kommo.com",
        "kommo.com",
        "127.0.0.1:8080",  # not in KOMMO_OAUTH_HOSTS
        "",
    ],
)
async def test_the_code_goes_only_to_a_kommo_host(
    env: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    fleet: SimFleet,
    hosts: KommoHosts,
    referer: str,
) -> None:
    sim = fleet["examplecorp2"]
    async with install_app(deployment(env), hosts) as web:
        state, code = await fresh_state(web), sim.tokens.issue_code()
        resp = await web.get(CALLBACK, params={"code": code, "referer": referer, "state": state})
        assert resp.status_code == 400 and "referer" in resp.text
        assert hosts.hosts == [] and await registered(pool) == []
        # the state was not spent on the bad redirect: the genuine one still installs
        good = {"code": code, "referer": "examplecorp2.kommo.com", "state": state}
        assert (await web.get(CALLBACK, params=good)).status_code == 200
    assert await registered(pool) == [SECOND]


def test_oauth_origin() -> None:
    s = Settings.from_env({"KOMMO_OAUTH_HOSTS": "sim.test:8443, http://127.0.0.1:9000"})
    assert s.oauth_hosts == ("sim.test:8443", "http://127.0.0.1:9000")
    assert oauth_origin("examplecorp.kommo.com", s) == "https://examplecorp.kommo.com"
    assert oauth_origin("Example-Corp.AMOCRM.RU", s) == "https://example-corp.amocrm.ru"
    assert oauth_origin("https://x1.amocrm.com/", s) == "https://x1.amocrm.com"
    assert oauth_origin("sim.test:8443", s) == "https://sim.test:8443"
    assert oauth_origin("127.0.0.1:9000", s) == "http://127.0.0.1:9000"
    for bad in ("sim.test", "127.0.0.1:9001", "a.b.kommo.com", "-x.kommo.com", None):
        assert oauth_origin(bad, s) is None, bad
    with pytest.raises(Exception) as info:
        Settings.from_env({"KOMMO_OAUTH_HOSTS": "ok.test, bad/path"})
    assert "KOMMO_OAUTH_HOSTS" in str(info.value)


async def test_a_forged_or_expired_state_registers_nothing(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, fleet: SimFleet, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    assert settings.integration is not None
    keys = Keys(settings.redis_prefix)
    expired = States(settings.integration, redis, keys, clock=lambda: time.time() - 3600).issue()
    other = deployment(env, KOMMO_CLIENT_SECRET="another-deployment-secret")
    assert other.integration is not None
    foreign = States(other.integration, redis, keys).issue()
    sim = fleet["examplecorp2"]
    async with install_app(settings, hosts) as web:
        good = await fresh_state(web)
        nonce, expires, signature = good.split(".")
        cases = {
            expired: "expired",
            foreign: "not one this deployment issued",
            f"{nonce}.{int(expires) + 3600}.{signature}": "not one this deployment issued",
            f"{nonce}x.{expires}.{signature}": "not one this deployment issued",
            "": "missing",
            "a.b": "missing",
        }
        for state, problem in cases.items():
            resp = await web.get(
                CALLBACK,
                params={
                    "code": sim.tokens.issue_code(),
                    "referer": "examplecorp2.kommo.com",
                    "state": state,
                },
            )
            assert resp.status_code == 400 and problem in resp.text, (state, resp.text)
        assert hosts.hosts == [] and sim.tokens.code_grants == 0
    assert await registered(pool) == []


async def test_refusals_register_nothing(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, fleet: SimFleet, hosts: KommoHosts
) -> None:
    sim = fleet["examplecorp3"]
    async with install_app(deployment(env), hosts) as web:
        query = {"referer": "examplecorp3.kommo.com"}
        used = {**query, "code": "def50200-not-a-code", "state": await fresh_state(web)}
        resp = await web.get(CALLBACK, params=used)
        assert resp.status_code == 400 and "Kommo refused" in resp.text
        assert "def50200-not-a-code" not in resp.text
        denied = {**query, "error": "access_denied", "state": await fresh_state(web)}
        assert (await web.get(CALLBACK, params=denied)).status_code == 400
        own = {"code": fleet["examplecorp"].tokens.issue_code(), "referer": "examplecorp.kommo.com"}
        resp = await web.get(CALLBACK, params={**own, "state": await fresh_state(web)})
        assert resp.status_code == 409 and "environment's own" in resp.text
    async with install_app(deployment(env, SECRETS_KEY=""), hosts) as web:
        ok = {**query, "code": sim.tokens.issue_code(), "state": await fresh_state(web)}
        resp = await web.get(CALLBACK, params=ok)
        assert resp.status_code == 503 and "SECRETS_KEY" in resp.text
    assert await registered(pool) == [] and sim.tokens.code_grants == 0
    assert install_routes(deployment(env, KOMMO_CLIENT_ID="")) == []  # no integration


async def test_kommo_oauth_hosts_lets_a_simulator_install(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    sim = Simulator(SimConfig(seed=5, leads=2, contacts=1, account_id=31000009, subdomain="solo"))
    async with serve(sim) as base:
        host = base.removeprefix("http://")
        settings = deployment(env, KOMMO_OAUTH_HOSTS=f"http://{host}")
        async with install_app(settings, httpx.AsyncHTTPTransport()) as web:
            query = {"code": sim.tokens.issue_code(), "referer": host}
            resp = await web.get(CALLBACK, params={**query, "state": await fresh_state(web)})
            assert resp.status_code == 200, resp.text
        async with install_app(deployment(env), httpx.AsyncHTTPTransport()) as web:
            query = {"code": sim.tokens.issue_code(), "referer": host}
            resp = await web.get(CALLBACK, params={**query, "state": await fresh_state(web)})
            assert resp.status_code == 400  # not listed: nothing sent there
    assert sim.tokens.code_grants == 1
    async with pool.acquire() as conn:
        account = await store.get(conn, "solo")
    assert account is not None and account.base_url == base and account.id == 31000009


async def test_the_uninstall_hook(
    env: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    fleet: SimFleet,
    hosts: KommoHosts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = deployment(env)
    assert settings.integration is not None
    async with install_app(settings, hosts) as web:
        for sub in ("examplecorp2", "examplecorp3"):
            query = {"code": fleet[sub].tokens.issue_code(), "referer": f"{sub}.kommo.com"}
            resp = await web.get(CALLBACK, params={**query, "state": await fresh_state(web)})
            assert resp.status_code == 200
        good = uninstall_signature(settings.integration, str(SECOND))
        forged = [
            {"account_id": str(SECOND), "signature": "0" * 64},
            {"account_id": str(THIRD), "signature": good},  # another account's signature
            {"account_id": str(SECOND), "signature": good, "client_uuid": "other-integration"},
            {"account_id": str(SECOND)},
        ]
        for query in forged:
            assert (await web.get("/oauth/kommo/uninstall", params=query)).status_code == 403
        async with pool.acquire() as conn:
            assert {a.state for a in await store.all_accounts(conn)} == {"enabled"}

        caplog.clear()
        with caplog.at_level(logging.INFO):
            resp = await web.get(
                CALLBACK,  # Kommo's hook may point at the redirect URI's path too
                params={
                    "client_uuid": SIM["KOMMO_CLIENT_ID"],
                    "account_id": str(SECOND),
                    "signature": good.upper(),
                },
            )
        assert resp.status_code == 200
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "UNINSTALLED" in errors[0].getMessage()
        assert SIM["KOMMO_CLIENT_SECRET"] not in caplog.text
    async with pool.acquire() as conn:
        states = {a.id: (a.state, a.state_reason) for a in await store.all_accounts(conn)}
        routes = await store.webhook_routes(conn)
    assert states == {
        SECOND: ("uninstalled", "uninstalled in Kommo"),
        THIRD: ("enabled", None),
    }
    assert set(routes.values()) == {THIRD}
