"""Secrets at rest: SECRETS_KEY encrypts (first key) and decrypts (any key), rekey rotates
every stored secret, nothing is stored or shown in clear, and the environment account's
OAuth pair is encrypted once a key is set (plain rows keep working)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from service.accounts import registry
from service.accounts.registry import Credential
from service.accounts.secrets import SEALED, NoKey, SecretBox, box_of, cipher_for, digest
from service.kommo.budget import Priority
from service.kommo.client import kommo_client
from service.settings import ConfigError, Needs, Secret, Settings
from service.store import accounts as store
from tests.accounts import KEY, OLD_KEY, SECOND, deployment

TOKEN = "long-lived-token-abcdef0123456789"


def test_seal_and_reveal_with_rotation() -> None:
    old = SecretBox([OLD_KEY])
    sealed_old = old.seal("hello")
    assert sealed_old.startswith(SEALED) and "hello" not in sealed_old
    both = SecretBox([KEY, OLD_KEY])
    assert both.reveal(sealed_old) == "hello"  # read with any key
    fresh = both.seal("hello")
    assert SecretBox([KEY]).reveal(fresh) == "hello"  # written with the first
    with pytest.raises(ConfigError) as info:
        old.reveal(fresh)
    assert info.value.name == "SECRETS_KEY" and "rekey" in str(info.value)
    rotated = both.reseal(sealed_old)
    assert SecretBox([KEY]).reveal(rotated) == "hello"
    assert both.reveal("plain-stored-value") == "plain-stored-value"  # before keys existed
    assert KEY not in repr(both) and OLD_KEY not in str(both)


def test_no_key_passes_plain_values_and_refuses_sealed_ones() -> None:
    assert NoKey().seal("x") == "x" and NoKey().reveal("x") == "x"
    with pytest.raises(ConfigError) as info:
        NoKey().reveal(SecretBox([KEY]).seal("x"))
    assert info.value.name == "SECRETS_KEY"


@pytest.mark.parametrize("value", ["short", "not base64 at all!", f"{KEY},", f"{KEY},abc"])
def test_secrets_key_validation_names_the_variable_not_the_value(value: str) -> None:
    if value == f"{KEY},":  # an empty trailing entry is ignored
        assert Settings.from_env({"SECRETS_KEY": value}).secrets_key == Secret(KEY)
        return
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SECRETS_KEY": value})
    assert info.value.name == "SECRETS_KEY" and "\n" not in str(info.value)
    assert value not in str(info.value) and KEY not in str(info.value)


def test_settings_hide_the_key() -> None:
    s = Settings.from_env({"SECRETS_KEY": f"{KEY},{OLD_KEY}"})
    assert KEY not in repr(s) and OLD_KEY not in repr(s)
    box = box_of(s)
    assert box is not None and box.key_count == 2


async def _register(pool: asyncpg.Pool, settings: Settings, token: str = TOKEN) -> str:
    done = await registry.register(
        pool,
        settings,
        account_id=SECOND,
        subdomain="examplecorp2",
        base_url="https://examplecorp2.kommo.com",
        credential=Credential(token=Secret(token)),
    )
    return done.webhook_secret.value


async def test_nothing_is_stored_in_clear(env: dict[str, str], pool: asyncpg.Pool) -> None:
    settings = deployment(env)
    secret = await _register(pool, settings)
    row = await pool.fetchrow("SELECT * FROM accounts")
    assert row is not None
    text = json.dumps({k: str(v) for k, v in dict(row).items()})
    assert TOKEN not in text and secret not in text
    assert row["webhook_secret_hash"] == digest(secret)
    assert row["token_sealed"].startswith(SEALED) and row["webhook_secret_sealed"].startswith(
        SEALED
    )
    async with pool.acquire() as conn:
        account = await store.get(conn, SECOND)
    assert account is not None
    assert row["token_sealed"] not in repr(account) and "hidden" in repr(account.sealed)


async def test_registering_needs_secrets_key(env: dict[str, str], pool: asyncpg.Pool) -> None:
    with pytest.raises(ConfigError) as info:
        await _register(pool, deployment(env, SECRETS_KEY=""))
    assert info.value.name == "SECRETS_KEY" and "\n" not in str(info.value)
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0
    # a process's start-up check: with a registered account the key is required
    keyless = deployment(env, SECRETS_KEY="")
    async with pool.acquire() as conn:
        await registry.require_key_if_registered(conn, keyless)
        await _register(pool, deployment(env))
        with pytest.raises(ConfigError):
            await registry.require_key_if_registered(conn, keyless)


async def test_rekey_moves_every_secret_to_the_first_key(
    env: dict[str, str], pool: asyncpg.Pool
) -> None:
    old = deployment(env, SECRETS_KEY=OLD_KEY)
    secret = await _register(pool, old)
    await pool.execute(  # the environment account's pair, stored before any key was set
        "INSERT INTO oauth_tokens (base_url, access_token, refresh_token, expires_at)"
        " VALUES ('https://examplecorp.kommo.com', 'plain-access', 'plain-refresh', now())"
    )
    before = await pool.fetchval("SELECT token_sealed FROM accounts")
    both = deployment(env, SECRETS_KEY=f"{KEY},{OLD_KEY}")
    box = box_of(both)
    assert box is not None
    assert await registry.rekey(pool, box) == (1, 1)
    new_only = SecretBox([KEY])
    row = await pool.fetchrow("SELECT * FROM accounts")
    assert row is not None and row["token_sealed"] != before
    assert new_only.reveal(row["token_sealed"]) == TOKEN
    assert new_only.reveal(row["webhook_secret_sealed"]) == secret
    pair = await pool.fetchrow("SELECT access_token, refresh_token FROM oauth_tokens")
    assert pair is not None and pair["access_token"].startswith(SEALED)
    assert (new_only.reveal(pair["access_token"]), new_only.reveal(pair["refresh_token"])) == (
        "plain-access",
        "plain-refresh",
    )
    with pytest.raises(ConfigError):  # the old key alone no longer reads them
        SecretBox([OLD_KEY]).reveal(row["token_sealed"])


class PairKommo:
    """A token endpoint and /api/v4/account that check the stored pair is sealed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.issued, self.grants = pool, 0, 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            body = json.loads(request.content)
            assert body["refresh_token"] == f"refresh-{self.issued}"  # revealed, not sealed
            self.issued += 1
            self.grants += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"access-{self.issued}",
                    "refresh_token": f"refresh-{self.issued}",
                    "expires_in": 86400,
                },
            )
        token = request.headers["authorization"].removeprefix("Bearer ")
        if token != f"access-{self.issued}":
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        return httpx.Response(200, json={"id": 31000001, "subdomain": "examplecorp"})


async def test_the_environment_pair_is_encrypted_with_a_key(
    env: dict[str, str], redis: Redis, pool: asyncpg.Pool
) -> None:
    base = "http://kommo.test"
    await pool.execute(  # a plain row from before SECRETS_KEY, already expired
        "INSERT INTO oauth_tokens (base_url, access_token, refresh_token, expires_at)"
        " VALUES ($1, 'access-0', 'refresh-0', $2)",
        base,
        datetime.fromtimestamp(time.time() - 60, UTC),
    )
    settings = Settings.from_env(
        env
        | {
            "KOMMO_BASE_URL": base,
            "KOMMO_CLIENT_ID": "client-id",
            "KOMMO_CLIENT_SECRET": "client-secret-0123456789",
            "KOMMO_REDIRECT_URI": "https://sync.example.com/oauth",
            "KOMMO_REFRESH_TOKEN": "refresh-from-env",
            "KOMMO_RATE_LIMIT": "50",
            "SECRETS_KEY": KEY,
        },
        Needs.DATABASE | Needs.REDIS | Needs.KOMMO,
    )
    assert isinstance(cipher_for(settings), SecretBox)
    kommo = PairKommo(pool)
    async with kommo_client(settings, redis, pool, transport=httpx.MockTransport(kommo)) as c:
        assert (await c.account(priority=Priority.WEBHOOK))["id"] == 31000001
    assert kommo.grants == 1  # the plain refresh token was read and used
    row = await pool.fetchrow("SELECT access_token, refresh_token FROM oauth_tokens")
    assert row is not None
    assert row["access_token"].startswith(SEALED) and row["refresh_token"].startswith(SEALED)
    assert "access-1" not in row["access_token"] and "refresh-1" not in row["refresh_token"]
    # a later process reads the sealed pair without refreshing again
    async with kommo_client(settings, redis, pool, transport=httpx.MockTransport(kommo)) as c:
        await c.account(priority=Priority.WEBHOOK)
    assert kommo.grants == 1
    # and one without the key says so in one line instead of sending ciphertext to Kommo
    keyless = Settings.from_env(
        {k: v for k, v in (env | {"KOMMO_BASE_URL": base}).items()}
        | {
            "KOMMO_CLIENT_ID": "client-id",
            "KOMMO_CLIENT_SECRET": "client-secret-0123456789",
            "KOMMO_REDIRECT_URI": "https://sync.example.com/oauth",
            "KOMMO_REFRESH_TOKEN": "refresh-from-env",
        },
        Needs.DATABASE | Needs.REDIS | Needs.KOMMO,
    )
    async with kommo_client(keyless, redis, pool, transport=httpx.MockTransport(kommo)) as c:
        with pytest.raises(ConfigError) as info:
            await c.account(priority=Priority.WEBHOOK)
    assert info.value.name == "SECRETS_KEY"
