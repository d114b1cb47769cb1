"""The run registry, ports and env file of ``make run``, in process, with the real servers.

A record is live while its run or any child holding its descriptor lives; a crashed run's
record is cleaned up by the next: only the database it created is dropped, its Redis keys
deleted, its env file removed. Live runs' ports are never claimed twice.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from devenv import demo, envfile, ports, runs
from devenv.services import Services
from service.keys import Keys
from service.settings import ConfigError
from tests.stack import ROOT, read_env_file, redis_server_url, server_url, shell


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(server_url())
    yield conn
    await conn.close()


def _found() -> Services:
    return Services(server_url(), redis_server_url(), embedded=[])


async def _exists(admin: asyncpg.Connection, name: str) -> bool:
    return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


def test_the_env_file_names_every_setting() -> None:
    source = (ROOT / "service" / "settings.py").read_text()
    read = set(re.findall(r'r\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert len(read) > 20
    assert read <= set(envfile.NAMES), read - set(envfile.NAMES)


def test_the_env_file_is_private_and_a_shell_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "dev.env"
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/kommo_sync_demo_0a1b2c3d",
        "WS_TOKENS": "it's $HOME; `a b`",
        "PATH": "/not/written",
    }
    envfile.write(path, env, "a test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == {k: v for k, v in env.items() if k != "PATH"}
    done = shell(f'set -a; . {path}; set +a; printf %s "$WS_TOKENS"')
    assert done.returncode == 0, done.stderr
    assert done.stdout == env["WS_TOKENS"]


def test_a_second_run_gets_other_ports_and_its_own_env_file(tmp_path: Path) -> None:
    with runs.registry(tmp_path) as registry:
        chosen = ports.choose({}, registry.ports, simulator=True)
        first = envfile.path_for(tmp_path, chosen.web, registry.env_files)
        entry = registry.add(runs.Record(1, chosen.all, str(first)))
    try:
        assert first.name == "dev.env"
        with runs.registry(tmp_path) as registry:  # the first run lives: its claims hold
            assert registry.ports == set(chosen.all) and not registry.stale
            again = ports.choose({}, registry.ports, simulator=True)
            second = envfile.path_for(tmp_path, again.web, registry.env_files)
            with pytest.raises(ConfigError, match=r"^configuration error: PORT \d+ is already"):
                ports.choose({"PORT": str(chosen.web)}, registry.ports, simulator=True)
        assert not set(again.all) & set(chosen.all)
        assert second.name == f"dev-{again.web}.env"
    finally:
        entry.forget()


def test_a_record_stays_live_while_a_child_holds_it(tmp_path: Path) -> None:
    with runs.registry(tmp_path) as registry:
        entry = registry.add(runs.Record(1, (1234,)))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        pass_fds=(entry.fd,),
    )
    try:
        entry.close()  # the run is gone; its child is not
        with runs.registry(tmp_path) as registry:
            assert registry.ports == {1234} and not registry.stale
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    with runs.registry(tmp_path) as registry:
        assert registry.ports == set() and [e.record.ports for e in registry.stale] == [(1234,)]


async def test_the_next_run_cleans_up_after_a_crashed_one_and_only_what_it_created(
    tmp_path: Path, admin: asyncpg.Connection
) -> None:
    created, named = (demo.DATABASE_PREFIX + secrets.token_hex(4) for _ in range(2))
    for name in (created, named):
        await admin.execute(f'CREATE DATABASE "{name}"')
    prefix, other = (f"demo-{secrets.token_hex(4)}:" for _ in range(2))
    redis: Redis = Redis.from_url(redis_server_url())
    env_file = tmp_path / "dev.env"
    try:
        await redis.set(prefix + "stats", 1)
        await redis.set("arq:job:" + prefix + "job:x", 1)
        await redis.set(other + "stats", 1)
        env_file.write_text("PORT=1\n")
        server = server_url()
        with runs.registry(tmp_path) as registry:
            crashed = [
                registry.add(
                    runs.Record(
                        1, (1,), str(env_file), server, created, True, redis_server_url(), prefix
                    )
                ),
                # crashed before its CREATE DATABASE returned: the name is not known to be its own
                registry.add(runs.Record(2, (2,), None, server, named, False)),
            ]
        for entry in crashed:
            entry.close()
        with runs.registry(tmp_path) as registry:
            assert sorted(e.record.pid for e in registry.stale) == [1, 2]
            for stale in registry.stale:
                await asyncio.to_thread(demo.clean_up_after, stale, _found())
        assert not await _exists(admin, created)
        assert await _exists(admin, named)
        assert [k async for k in redis.scan_iter(match="*" + Keys(prefix).matching())] == []
        assert await redis.get(other + "stats") == b"1"
        assert not env_file.exists()
        assert list(tmp_path.glob("*.json")) == []
    finally:
        for name in (created, named):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await redis.delete(other + "stats")
        await redis.aclose()
