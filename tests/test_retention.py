"""Retention: the personal data of entities deleted long ago is removed; the tombstone stays."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from service.kinds import CONTACTS, LEADS
from service.kommo import parse
from service.resources import open_resources
from service.settings import Settings
from service.store import entities, leadview, links
from service.sync.retention import purge

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "api"
ACCOUNT = 31000001


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


async def _mirror_and_delete(pool: asyncpg.Pool, deleted_at: float) -> None:
    lead = fixture("lead_24000101_with_contacts.json")
    contact = fixture("contacts_list.json")["_embedded"]["contacts"][0]
    async with pool.acquire() as conn, conn.transaction():
        await leadview.lock_account(conn, ACCOUNT)
        for kind, obj in ((LEADS, lead), (CONTACTS, contact)):
            rows = await entities.upsert(conn, ACCOUNT, kind, parse.records(kind, [obj]))
            await links.replace_all(conn, ACCOUNT, kind, rows, "PE")
        await conn.execute(
            "INSERT INTO sync_cursors (account_id, name, value) VALUES ($1, 'leads', 0)", ACCOUNT
        )
        await leadview.refresh_leads(conn, ACCOUNT, [lead["id"]], "backfill")
        for kind, ident in ((LEADS, lead["id"]), (CONTACTS, contact["id"])):
            await entities.tombstone(conn, ACCOUNT, kind, [ident], deleted_at)
        await leadview.refresh_leads(conn, ACCOUNT, [lead["id"]], "webhook")


async def test_purge_removes_personal_data_and_keeps_the_tombstone(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    long_ago = time.time() - 90 * 86400
    await _mirror_and_delete(pool, long_ago)
    async with open_resources(settings) as res:
        assert await purge(res, long_ago - 1) == {
            "leads": 0,
            "contacts": 0,
            "companies": 0,
        }  # not yet
        assert await purge(res, time.time()) == {"leads": 1, "contacts": 1, "companies": 0}
        assert await purge(res, time.time()) == {
            "leads": 0,
            "contacts": 0,
            "companies": 0,
        }  # once each
    async with pool.acquire() as conn:
        lead = await conn.fetchrow("SELECT * FROM leads")
        contact = await conn.fetchrow("SELECT * FROM contacts")
        assert lead is not None and contact is not None
        assert lead["is_deleted"] and lead["deleted_at"] is not None and lead["version"]
        assert (lead["name"], json.loads(lead["raw"]), json.loads(lead["custom_fields"])) == (
            "",
            {},
            [],
        )
        assert json.loads(lead["shown"]) == {"id": lead["id"], "is_deleted": True}
        assert (contact["name"], contact["first_name"], json.loads(contact["raw"])) == ("", "", {})
        for table in ("contact_phones", "contact_tags", "lead_tags", "lead_contacts"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        raw = await conn.fetchval("SELECT string_agg(raw::text || name, '') FROM contacts")
        assert "Jane" not in raw


def test_the_command_says_what_it_removed(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "purge", "--deleted-before", "2001-01-01"],
        env={**env, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "purged the personal data of 0 leads, 0 contacts, 0 companies deleted before 2001-01-01"
        in (done.stdout)
    )
    bad = subprocess.run(
        [sys.executable, "-m", "service", "purge", "--deleted-before", "yesterday"],
        env={**env, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a date" in bad.stderr
