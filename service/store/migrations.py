"""Forward-only migrations: numbered ``sql/NNN_name.sql`` files, each applied once.

The top-level ``sql/`` folder ships inside the wheel as the package ``kommo_sync_sql`` and is
read with :mod:`importlib.resources`, so an installed service finds its migrations wherever it
is installed. Finding none is an error, never "up to date".

The runner takes a Postgres advisory lock, so two ``release`` steps started at once apply every
file exactly once; each file runs in its own transaction together with its record in
``schema_migrations``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

PACKAGE = "kommo_sync_sql"
_LOCK_KEY = 0x6B6F6D6D6F  # "kommo": one advisory lock shared by every runner
_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    """The migrations are missing or inconsistent (duplicate numbers, a bad file name)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    file: Traversable

    def sql(self) -> str:
        return self.file.read_text("utf-8")


def shipped() -> Traversable:
    """The folder of the migrations shipped with this installation."""
    return resources.files(PACKAGE)


def discover(folder: Traversable | None = None) -> list[Migration]:
    folder = shipped() if folder is None else folder
    found: dict[int, Migration] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"bad migration file name: {entry.name} (want NNN_name.sql)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version}")
        found[version] = Migration(version, entry.name, entry)
    if not found:
        raise MigrationError(f"no migration found in {folder} (a broken installation?)")
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, folder: Traversable | None = None) -> list[str]:
    """Apply every pending migration; return the names applied (empty when up to date)."""
    migrations = discover(folder)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for m in migrations:
            if m.version in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    m.version,
                    m.name,
                )
            log.info("applied migration %s", m.name)
            applied.append(m.name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
