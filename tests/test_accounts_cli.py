"""``kommo-sync accounts …`` as an operator runs it: real processes against a simulated fleet
served over HTTP, the session's Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from cryptography.fernet import Fernet

from kommo_sim import SimFleet, serve
from service.accounts.consumers import scope_of
from service.accounts.secrets import digest
from tests.accounts import KEY, SECOND, SIM, TOKEN, deployment, fleet_of, secret_file

HOOK = "https://sync.example.com/webhooks/kommo/"


@pytest.fixture
async def server() -> AsyncIterator[tuple[SimFleet, str]]:
    fleet = fleet_of()
    async with serve(fleet) as url:
        yield fleet, url


def process_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    values = base | env | {"SECRETS_KEY": KEY, "PUBLIC_URL": "https://sync.example.com"} | SIM
    return {k: v for k, v in (values | extra).items() if v}


async def accounts(environ: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "accounts",
        *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_accounts_commands(
    env: dict[str, str], pool: asyncpg.Pool, server: tuple[SimFleet, str], tmp_path: Path
) -> None:
    fleet, url = server
    environ = process_env(env)
    second = secret_file(tmp_path, f"{TOKEN}-2", "second")
    third = secret_file(tmp_path, f"{TOKEN}-3", "third")
    add = ["add", "--subdomain", "examplecorp2", "--base-url", f"{url}/examplecorp2"]

    code, out, err = await accounts(environ, *add, "--token-file", second, "--rate-limit", "4")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("account 31000002 (examplecorp2) registered")
    hook = lines[-1]
    assert hook.startswith(HOOK)
    secret = hook.removeprefix(HOOK)
    assert await pool.fetchval("SELECT webhook_secret_hash FROM accounts") == digest(secret)
    assert secret not in err and f"{TOKEN}-2" not in err

    refusals = [
        ([*add, "--token-file", second], "already registered"),
        (
            ["add", "--subdomain", "examplecorp4", "--base-url", f"{url}/examplecorp3"]
            + ["--token-file", third],
            "opens account 31000003 (examplecorp3), not examplecorp4",
        ),
        (  # KOMMO_ACCOUNT_ID's account
            ["add", "--subdomain", "examplecorp", "--base-url", f"{url}/examplecorp"]
            + ["--token-file", secret_file(tmp_path, TOKEN, "first")],
            "environment's own",
        ),
        (["add", "--subdomain", "bad/name", "--token-file", third], "not a bare subdomain"),
        (["add", "--subdomain", "x", "--token-file", str(tmp_path / "none")], "cannot read"),
        (["disable", "nosuch"], "no registered account"),
    ]
    for args, problem in refusals:
        code, out, err = await accounts(environ, *args)
        assert code == 1 and problem in err, (args, err)
        assert err.strip().splitlines()[-1].startswith("kommo-sync: ")
        assert f"{TOKEN}-3" not in err
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1

    code, out, err = await accounts(process_env(env, SECRETS_KEY=""), *add, "--token-file", second)
    assert code == 2 and err.strip() == (
        "kommo-sync: configuration error: SECRETS_KEY is required once an account is registered "
        "(`kommo-sync accounts new-key` makes one)"
    )

    code, out, _ = await accounts(environ, "webhook-url", "examplecorp2")
    assert (code, out.strip()) == (0, hook)

    code, out, _ = await accounts(environ, "token", "examplecorp2")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert await scope_of(pool, deployment(env), token) == frozenset({SECOND})
    assert await pool.fetchval("SELECT count(*) FROM consumer_tokens") == 1

    code, out, _ = await accounts(environ, "disable", "examplecorp2", "--reason", "audit")
    assert code == 0 and "disabled" in out
    code, out, _ = await accounts(environ, "list", "--json")
    (row,) = [json.loads(line) for line in out.strip().splitlines()]
    assert row["id"] == SECOND and row["state"] == "disabled" and row["rate_limit"] == 4.0
    assert row["state_reason"] == "audit" and row["consumer_tokens"] == 1
    assert secret not in out and "fleet-token" not in out and "fernet:" not in out
    code, out, _ = await accounts(environ, "enable", "31000002")
    assert code == 0 and "enabled" in out
    code, out, _ = await accounts(environ, "list")
    assert code == 0 and "examplecorp2" in out and "enabled" in out and secret not in out

    # key rotation: "new,old", rekey, then the new key alone reads everything
    new = Fernet.generate_key().decode()
    code, out, err = await accounts(process_env(env, SECRETS_KEY=f"{new},{KEY}"), "rekey")
    assert code == 0 and "re-encrypted 1 account(s)" in out, err
    code, out, _ = await accounts(process_env(env, SECRETS_KEY=new), "webhook-url", "examplecorp2")
    assert (code, out.strip()) == (0, hook)
    code, out, err = await accounts(environ, "webhook-url", "examplecorp2")  # the old key alone
    assert code == 2 and "SECRETS_KEY does not decrypt" in err and secret not in err

    await pool.execute(
        "INSERT INTO lead_tags (account_id, lead_id, tag_id) SELECT $1, g, 1"
        " FROM generate_series(1, 7) g",
        SECOND,
    )
    code, out, _ = await accounts(environ, "remove", "examplecorp2", "--purge")
    assert code == 0 and "7 lead_tags" in out
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0
    assert await pool.fetchval("SELECT count(*) FROM lead_tags") == 0
    assert fleet["examplecorp2"].counters  # the simulator was really asked


async def test_keys_and_the_install_link(env: dict[str, str]) -> None:
    environ = process_env(env)
    code, out, _ = await accounts(environ, "new-key")
    assert code == 0
    Fernet(out.strip().encode())  # a valid key
    code, out, err = await accounts(environ, "install-url")
    assert code == 0, err
    link = urlsplit(out.strip())
    query = parse_qs(link.query)
    assert link.netloc == "www.kommo.com" and query["client_id"] == [SIM["KOMMO_CLIENT_ID"]]
    assert len(query["state"][0].split(".")) == 3
    code, out, err = await accounts(process_env(env, KOMMO_CLIENT_ID=""), "install-url")
    assert code == 2 and "KOMMO_CLIENT_ID" in err
