"""What a demo run owns on the shared servers: a database and a Redis namespace of its own.

The database is ``kommo_sync_demo_<8 hex>``. ``CREATE DATABASE`` fails rather than reuse a
database that exists, so a name is ours only once our ``CREATE`` succeeded, and the run's record
(:mod:`devenv.runs`) says so; only such a database is ever dropped: by name, when its run stops
or, after a crash, by the next run. The Redis prefix is ``demo-<8 hex>:``, so every key that
contains it is the run's own. A database named ``kommo_sync_demo`` (what ``make run`` used
before) is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devenv import envfile
from devenv.runs import Entry, Record
from devenv.services import STATE, Services
from service.keys import Keys

log = logging.getLogger(__name__)

DATABASE_PREFIX = "kommo_sync_demo_"
EMBEDDED = "embedded"  # Record.server of a database on this checkout's embedded server
CONNECT_TIMEOUT_S = 5.0
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, RedisError, ValueError)


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointed at the database ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


def create_own_database(entry: Entry, found: Services) -> tuple[str, str]:
    """A new database for the run of ``entry``, recorded there: its name and URL."""
    server = found.database_url
    for _ in range(5):
        name = DATABASE_PREFIX + secrets.token_hex(4)
        entry.update(server=EMBEDDED if "postgres" in found.embedded else server, database=name)
        if asyncio.run(_create(server, name)):
            entry.update(created=True)
            return name, database_url(server, name)
    raise RuntimeError("could not find a free name for the demo database")


def own_redis_prefix(entry: Entry, found: Services) -> str:
    """A new Redis prefix for the run of ``entry``, recorded there (with the server, unless
    it is an embedded one, whose keys go with it)."""
    prefix = f"demo-{secrets.token_hex(4)}:"
    kept = None if "redis" in found.embedded else found.redis_url
    entry.update(redis_url=kept, redis_prefix=prefix)
    return prefix


def release_own(entry: Entry, found: Services) -> None:
    """At the end of a run: drop what it created; on failure the record stays for the next."""
    record = entry.record
    try:
        done = asyncio.run(_release(record, found))
    except _ERRORS as exc:
        log.warning(
            "could not drop %s (%s); the next make run retries",
            record.database or "the demo's Redis keys",
            type(exc).__name__,
        )
        done = False
    if done and record.database and record.created:
        log.info("dropped database %s", record.database)
    if done:
        entry.forget()
    else:
        entry.close()


def clean_up_after(stale: Entry, found: Services) -> None:
    """A crashed run's record (under the registry lock): drop its database and keys, remove
    its env file, forget it. What cannot be reached now is left for a later run."""
    record = stale.record
    if record.env_file:
        envfile.remove(Path(record.env_file))
        stale.rewrite(env_file=None)  # the name may be claimed again now
    if record.server == EMBEDDED and not (STATE / "pgdata").exists():
        stale.forget()  # its embedded server's data is gone (make clean)
        return
    try:
        done = asyncio.run(_release(record, found))
    except _ERRORS as exc:
        log.warning("could not clean up after make run %d (%s)", record.pid, type(exc).__name__)
        return
    if done:
        dropped = record.database if record.database and record.created else "no database"
        log.info("cleaned up after make run %d, which did not stop: %s", record.pid, dropped)
        stale.forget()


async def ensure_database(server_url: str, name: str) -> str:
    """Create ``name`` unless it exists (kept between runs, never dropped); its URL."""
    conn = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


async def _create(server_url: str, name: str) -> bool:
    """Create ``name``; False when a database of that name exists (it is not ours)."""
    conn = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await conn.close()
    return True


async def _release(record: Record, found: Services) -> bool:
    """Drop what ``record`` says its run created; False when its server is not at hand now
    (its embedded server while a local one is in use)."""
    if record.database and record.created:
        if record.server == EMBEDDED:
            if "postgres" not in found.embedded:
                return False
            server = found.database_url
        else:
            assert record.server is not None
            server = record.server
        await _drop(server, record.database)
    if record.redis_url and record.redis_prefix:
        await _delete_keys(record.redis_url, record.redis_prefix)
    return True


async def _drop(server_url: str, name: str) -> None:
    if not name.startswith(DATABASE_PREFIX):  # a last guard: never anything but a demo's
        raise ValueError(f"{name} is not a demo database")
    conn = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key containing ``prefix`` (arq's own keys carry it after ``arq:...:``)."""
    client: Redis = Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match="*" + Keys(prefix).matching(), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
