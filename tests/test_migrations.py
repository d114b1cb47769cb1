import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.store.migrations import MigrationError, discover, migrate
from tests.session import with_database


@pytest.fixture
async def blank_db(database_url: str) -> AsyncIterator[str]:
    name = f"kommo_mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(database_url, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_second_run_is_a_no_op(blank_db: str) -> None:
    conn = await asyncpg.connect(blank_db)
    try:
        first = await migrate(conn)
        assert first == [m.name for m in discover()]
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_two_runs_at_once_apply_each_file_once(blank_db: str) -> None:
    conns = [await asyncpg.connect(blank_db) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(results, key=len)
        assert applied[0] == [] and applied[1] == [m.name for m in discover()]
        rows = await conns[0].fetch("SELECT version FROM schema_migrations")
        assert len(rows) == len(discover())
    finally:
        for c in conns:
            await c.close()


async def test_a_failing_migration_leaves_nothing_behind(blank_db: str, tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE b (x int); SELECT no_such_function();")
    conn = await asyncpg.connect(blank_db)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await conn.close()


def test_bad_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1-oops.sql").write_text("")
    with pytest.raises(MigrationError):
        discover(tmp_path)
