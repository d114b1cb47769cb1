"""``make run`` (``python -m devenv run``) against the machine's PostgreSQL and Redis.

Each run creates a demo database and a Redis prefix of its own and drops them when it stops; a
database named ``kommo_sync_demo`` (which ``make run`` once force-dropped) survives. Two runs at
once both become ready, on ports, databases, Redis prefixes and env files of their own, and the
banner's shell line runs ``kommo-sync status`` against its own stack.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from redis.asyncio import Redis

from service.keys import Keys
from tests.stack import (
    ROOT,
    Banner,
    Stack,
    read_env_file,
    readyz,
    redis_server_url,
    run_env,
    server_url,
    shell,
)

pytestmark = pytest.mark.timeout(240)

OLD_NAME = "kommo_sync_demo"


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(server_url())
    yield conn
    await conn.close()


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.close()


async def _oid(admin: asyncpg.Connection, name: str) -> int | None:
    oid: int | None = await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", name)
    return oid


async def _keys(prefix: str) -> list[bytes]:
    client: Redis = Redis.from_url(redis_server_url())
    try:
        return [k async for k in client.scan_iter(match="*" + Keys(prefix).matching())]
    finally:
        await client.aclose()


def _records_naming(database: str) -> list[str]:
    return [p.name for p in (ROOT / ".local" / "runs").glob("*.json") if database in p.read_text()]


async def _check_running(banner: Banner, admin: asyncpg.Connection) -> dict[str, str]:
    """The stack's own database and env file as they should be while it runs."""
    assert banner.database and banner.database.startswith("kommo_sync_demo_")
    assert await _oid(admin, banner.database) is not None
    assert stat.S_IMODE(banner.env_file.stat().st_mode) == 0o600
    env = read_env_file(banner.env_file)
    assert env["DATABASE_URL"].endswith("/" + banner.database)
    assert env["PORT"] == str(banner.port)
    assert env["REDIS_PREFIX"].startswith("demo-")
    assert {"REDIS_URL", "KOMMO_BASE_URL", "KOMMO_TOKEN", "WS_TOKENS"} <= env.keys()
    assert {"KOMMO_WEBHOOK_SECRET", "WORKER_METRICS_PORT"} <= env.keys()
    return env


async def _status(banner: Banner) -> None:
    """The banner's line, pasted into a new shell, reports on this stack (ready means its web
    process answers; its worker's first reconcile tick may come a moment later)."""
    assert banner.cli.endswith("kommo-sync status")
    async with asyncio.timeout(60):
        while True:
            done = await asyncio.to_thread(shell, banner.cli)
            assert done.returncode in (0, 1), done.stderr  # 1: no reconcile tick yet
            status = json.loads(done.stdout)
            if status["reconcile"]["runs"] >= 1:  # its Redis prefix: the ticks of this stack
                break
            await asyncio.sleep(0.5)
    assert done.returncode == 0, done.stderr
    assert status["reconcile"]["stale"] is False


async def _check_gone(banner: Banner, env: dict[str, str], admin: asyncpg.Connection) -> None:
    assert banner.database
    assert await _oid(admin, banner.database) is None
    assert not banner.env_file.exists()
    assert _records_naming(banner.database) == []
    assert await _keys(env["REDIS_PREFIX"]) == []


async def test_make_run_keeps_a_kommo_sync_demo_it_did_not_create(
    admin: asyncpg.Connection, stacks: list[Stack]
) -> None:
    before, made = await _oid(admin, OLD_NAME), False
    if before is None:  # someone else's, as far as make run knows
        await admin.execute(f'CREATE DATABASE "{OLD_NAME}"')
        before, made = await _oid(admin, OLD_NAME), True
    try:
        stacks.append(stack := Stack(run_env()))
        banner = await asyncio.to_thread(stack.ready)
        assert await _oid(admin, OLD_NAME) == before
        env = await _check_running(banner, admin)
        assert await _keys(env["REDIS_PREFIX"])
        await _status(banner)
        assert await asyncio.to_thread(stack.stop) == 0, stack.output.tail()
        assert await _oid(admin, OLD_NAME) == before  # the same database, not a new one
        await _check_gone(banner, env, admin)
        assert stack.output.search(rf"dropped database {banner.database}$")
    finally:
        if made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{OLD_NAME}"')


async def test_two_runs_at_once_each_have_their_own_ports_data_and_env_file(
    admin: asyncpg.Connection, stacks: list[Stack]
) -> None:
    stacks += [Stack(run_env()), Stack(run_env())]  # both without PORT: 8000 is the default
    first, second = await asyncio.gather(*(asyncio.to_thread(s.ready) for s in stacks))
    envs = [await _check_running(b, admin) for b in (first, second)]
    for name in ("PORT", "WORKER_METRICS_PORT", "KOMMO_BASE_URL", "DATABASE_URL", "REDIS_PREFIX"):
        assert envs[0][name] != envs[1][name], name
    assert first.env_file != second.env_file
    for banner in (first, second):
        assert re.fullmatch(rf"dev\.env|dev-{banner.port}\.env", banner.env_file.name)
        assert banner.env_file.parent == ROOT / ".local"
    await asyncio.gather(_status(first), _status(second))

    assert await asyncio.to_thread(stacks[0].stop) == 0, stacks[0].output.tail()
    await _check_gone(first, envs[0], admin)
    assert await asyncio.to_thread(readyz, second.base) == 200  # the other one is untouched
    await _check_running(second, admin)
    assert await _keys(envs[1]["REDIS_PREFIX"])
    await _status(second)
    assert await asyncio.to_thread(stacks[1].stop) == 0, stacks[1].output.tail()
    await _check_gone(second, envs[1], admin)
