"""The registry against a simulated fleet: an account is registered only with a credential
that opens it, never twice, never the environment's own; states; removal with and without
purge; an OAuth account refreshes its own sealed pair."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from kommo_sim import SimFleet
from service.accounts import consumers, registry
from service.accounts.credentials import account_client
from service.accounts.registry import AccountError, Credential
from service.accounts.secrets import SecretBox, digest
from service.kommo.budget import Priority
from service.kommo.errors import KommoAuthError
from service.kommo.oauth import request_tokens
from service.settings import IntegrationSettings, Secret, Settings
from service.store import accounts as store
from tests.accounts import ENV_ACCOUNT, KEY, SECOND, SIM, THIRD, TOKEN, KommoHosts, deployment
from tests.accounts import fleet_of as make_fleet

W = Priority.WEBHOOK


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    fleet = make_fleet()
    yield fleet
    await fleet.aclose()


@pytest.fixture
def hosts(fleet: SimFleet) -> KommoHosts:
    return KommoHosts(fleet)


async def add(
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    hosts: KommoHosts,
    subdomain: str,
    token: str,
    *,
    account_id: int | None = None,
    host: str | None = None,
) -> registry.Registered:
    """Register ``subdomain`` with ``token`` (at ``host``'s URL, by default its own)."""
    return await registry.add(
        pool,
        redis,
        settings,
        subdomain=subdomain,
        base_url=hosts.base_url(host or subdomain),
        credential=Credential(token=Secret(token)),
        account_id=account_id,
        transport=hosts,
    )


async def accounts_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM accounts"))


async def test_add_registers_the_account_its_token_opens(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    done = await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2", account_id=SECOND)
    account, secret = done.account, done.webhook_secret.value
    assert (account.id, account.subdomain, account.state, account.auth) == (
        SECOND,
        "examplecorp2",
        "enabled",
        "token",
    )
    assert account.base_url == "https://examplecorp2.kommo.com" and account.rate_limit == 6.0
    assert account.token_expires_at is None  # the simulator's token is no JWT
    assert hosts.hosts == ["examplecorp2.kommo.com"] and hosts.paths == ["/api/v4/account"]
    assert len(secret) >= 32 and secret not in repr(done)
    async with pool.acquire() as conn:
        assert await store.webhook_routes(conn) == {digest(secret): SECOND}
        assert (await store.by_webhook_hash(conn, digest(secret))) == account
    assert registry.webhook_url(settings, secret) == (
        f"https://sync.example.com/webhooks/kommo/{secret}"
    )
    assert registry.webhook_url(deployment(env, PUBLIC_URL=""), secret) == (
        f"/webhooks/kommo/{secret}"
    )


@pytest.mark.parametrize(
    ("subdomain", "token", "host", "account_id", "problem"),
    [
        # --base-url of account 3 given for examplecorp2: the token opens 3, not 2
        ("examplecorp2", f"{TOKEN}-3", "examplecorp3", None, "opens account 31000003"),
        ("examplecorp2", f"{TOKEN}-2", None, THIRD, "not 31000003 (examplecorp2)"),
        ("examplecorp", TOKEN, None, None, "environment's own"),  # KOMMO_ACCOUNT_ID's
    ],
)
async def test_add_refuses_another_account_and_changes_nothing(
    env: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    hosts: KommoHosts,
    subdomain: str,
    token: str,
    host: str | None,
    account_id: int | None,
    problem: str,
) -> None:
    with pytest.raises(AccountError) as info:
        await add(
            pool, redis, deployment(env), hosts, subdomain, token, account_id=account_id, host=host
        )
    assert problem in str(info.value) and token not in str(info.value)
    assert await accounts_count(pool) == 0


async def test_add_refuses_an_account_already_registered_without_calling_kommo(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2")
    calls = len(hosts.paths)
    with pytest.raises(AccountError, match="already registered"):
        await add(pool, redis, settings, hosts, "EXAMPLECORP2", f"{TOKEN}-2")
    assert len(hosts.paths) == calls and await accounts_count(pool) == 1
    with pytest.raises(AccountError, match="environment's own"):  # by KOMMO_SUBDOMAIN too
        await registry.add(
            pool,
            redis,
            deployment(env, KOMMO_SUBDOMAIN="examplecorp3", KOMMO_ACCOUNT_ID=""),
            subdomain="examplecorp3",
            base_url=hosts.base_url("examplecorp3"),
            credential=Credential(token=Secret(f"{TOKEN}-3")),
            transport=hosts,
        )
    with pytest.raises(KommoAuthError, match="expired or revoked"):
        await add(pool, redis, settings, hosts, "examplecorp3", "wrong-token-0123456789")
    assert await accounts_count(pool) == 1


async def test_states_and_the_uninstalled_account_installed_again(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    first = await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2")
    async with pool.acquire() as conn:
        off = await registry.set_state(conn, "examplecorp2", "disabled", "maintenance")
        assert (off.state, off.state_reason) == ("disabled", "maintenance")
        assert off.state_changed_at > first.account.state_changed_at
        assert await store.webhook_routes(conn) == {}  # a disabled account's webhooks: nobody's
        on = await registry.set_state(conn, str(SECOND), "enabled", None)
        assert on.state == "enabled"
        with pytest.raises(AccountError, match="no registered account"):
            await registry.set_state(conn, "nosuch", "disabled", None)
        await store.set_state(conn, SECOND, "uninstalled", "uninstalled in Kommo")
        with pytest.raises(AccountError, match="install it again"):
            await registry.set_state(conn, "examplecorp2", "enabled", None)
    again = await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2")
    assert again.account.state == "enabled" and again.account.state_reason == "installed again"
    assert again.webhook_secret == first.webhook_secret  # Kommo keeps posting to the same URL
    assert await accounts_count(pool) == 1


async def _mirrored_rows(pool: asyncpg.Pool) -> None:
    for account in (ENV_ACCOUNT, SECOND):
        await pool.execute(
            "INSERT INTO lead_tags (account_id, lead_id, tag_id)"
            " SELECT $1, g, 1 FROM generate_series(1, 25) g",
            account,
        )
        await pool.execute(
            "INSERT INTO sync_cursors (account_id, name, value)"
            " SELECT $1, 'c' || g, g FROM generate_series(1, 3) g",
            account,
        )


async def _rows(pool: asyncpg.Pool, account: int) -> tuple[int, int]:
    tags = await pool.fetchval("SELECT count(*) FROM lead_tags WHERE account_id = $1", account)
    cursors = await pool.fetchval(
        "SELECT count(*) FROM sync_cursors WHERE account_id = $1", account
    )
    return int(tags), int(cursors)


async def test_remove_keeps_the_rows_and_purge_deletes_only_the_accounts(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2")
    await _mirrored_rows(pool)
    token = await consumers.issue(pool, [SECOND])
    assert await registry.remove(pool, "examplecorp2", purge=False) == {}
    assert await accounts_count(pool) == 0 and await _rows(pool, SECOND) == (25, 3)
    assert await consumers.scope_of(pool, settings, token) is None  # its tokens went with it

    await add(pool, redis, settings, hosts, "examplecorp2", f"{TOKEN}-2")
    batches: list[tuple[str, int]] = []
    removed = await registry.remove(
        pool, "examplecorp2", purge=True, batch=10, progress=lambda t, n: batches.append((t, n))
    )
    assert removed["lead_tags"] == 25 and removed["sync_cursors"] == 3
    assert "consumer_tokens" in removed and "accounts" not in removed
    assert [n for t, n in batches if t == "lead_tags"] == [10, 20, 25]  # in batches
    assert await _rows(pool, SECOND) == (0, 0)
    assert await _rows(pool, ENV_ACCOUNT) == (25, 3)  # another account's rows stay
    assert await accounts_count(pool) == 0
    with pytest.raises(AccountError):
        await registry.remove(pool, "examplecorp2", purge=True)


async def test_the_registry_tables_document_every_column(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        """SELECT c.relname, a.attname, col_description(c.oid, a.attnum) AS comment,
                  obj_description(c.oid, 'pg_class') AS table_comment
           FROM pg_class c
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE c.relname IN ('accounts', 'consumer_tokens') AND c.relkind = 'r'"""
    )
    assert {r["relname"] for r in rows} == {"accounts", "consumer_tokens"}
    assert len(rows) > 20
    assert [f"{r['relname']}.{r['attname']}" for r in rows if not r["comment"]] == []
    assert all(r["table_comment"] for r in rows)


async def test_an_oauth_account_refreshes_its_own_sealed_pair(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis, fleet: SimFleet, hosts: KommoHosts
) -> None:
    settings = deployment(env)
    sim = fleet["examplecorp3"]
    client = IntegrationSettings(
        SIM["KOMMO_CLIENT_ID"], Secret(SIM["KOMMO_CLIENT_SECRET"]), SIM["KOMMO_REDIRECT_URI"]
    )
    async with httpx.AsyncClient(base_url=hosts.base_url("examplecorp3"), transport=hosts) as http:
        grant = await request_tokens(
            http,
            {
                "client_id": client.client_id,
                "client_secret": client.client_secret.value,
                "grant_type": "authorization_code",
                "code": sim.tokens.issue_code(),
                "redirect_uri": client.redirect_uri,
            },
            "exchange",
        )
    done = await registry.add(
        pool,
        redis,
        settings,
        subdomain="examplecorp3",
        base_url=hosts.base_url("examplecorp3"),
        credential=Credential(grant=grant, client=client),
        transport=hosts,
    )
    account = done.account
    assert account.auth == "oauth" and account.oauth_client_id == "sim-client-id"
    before = await pool.fetchrow("SELECT * FROM accounts")
    assert before is not None and grant.refresh_token not in str(dict(before))
    box = SecretBox([KEY])
    async with account_client(settings, account, box, redis, pool, transport=hosts) as kommo:
        assert (await kommo.account(priority=W))["id"] == THIRD
        assert sim.tokens.refresh_calls == 0
        fleet.clock.advance(2 * 86400)  # Kommo's access token expires; ours does not know
        assert (await kommo.account(priority=W))["id"] == THIRD  # 401, refresh, retry
    assert sim.tokens.refresh_calls == 1
    after = await pool.fetchrow("SELECT * FROM accounts")
    assert after is not None
    assert after["refresh_token_sealed"] != before["refresh_token_sealed"]
    assert box.reveal(after["refresh_token_sealed"]) != grant.refresh_token  # rotated, stored
