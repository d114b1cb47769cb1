import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from service.kinds import CONTACTS, LEADS
from service.kommo import parse
from service.store import dictionaries, entities, leadview, links
from service.store.leadview import LeadChange

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "api"
ACCOUNT = 31000001


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def lead() -> dict[str, Any]:
    return copy.deepcopy(fixture("lead_24000101_with_contacts.json"))


def contact() -> dict[str, Any]:
    return copy.deepcopy(fixture("contacts_list.json")["_embedded"]["contacts"][0])


async def write(
    pool: asyncpg.Pool,
    leads: Sequence[Any] = (),
    contacts: Sequence[Any] = (),
    restored: Sequence[int] = (),
) -> list[LeadChange]:
    async with pool.acquire() as conn, conn.transaction():
        await leadview.lock_account(conn, ACCOUNT)
        lead_rows = await entities.upsert(
            conn, ACCOUNT, LEADS, parse.records(LEADS, leads), restored=restored
        )
        await links.replace_all(conn, ACCOUNT, LEADS, lead_rows, "PE")
        contact_rows = await entities.upsert(
            conn, ACCOUNT, CONTACTS, parse.records(CONTACTS, contacts)
        )
        await links.replace_all(conn, ACCOUNT, CONTACTS, contact_rows, "PE")
        touched = {r.id for r in lead_rows}
        touched |= set(
            await leadview.leads_showing(conn, ACCOUNT, CONTACTS, [r.id for r in contact_rows])
        )
        return await leadview.refresh_leads(conn, ACCOUNT, touched, "reconcile")


async def test_lead_with_contact_is_shown_completely(pool: asyncpg.Pool) -> None:
    first = await write(pool, [lead()])
    assert [c.action for c in first] == ["created"]
    assert first[0].lead["contacts"] == []  # the contact itself is not mirrored yet
    second = await write(pool, contacts=[contact()])
    assert len(second) == 1 and second[0].action == "updated"
    shown = second[0].lead
    assert shown["tags"] == [{"id": 482205, "name": "website"}]
    assert shown["contacts"] == [
        {
            "id": 35000501,
            "is_main": True,
            "name": "Jane Doe",
            "phones": ["15550001111", "15550002222"],
            "emails": ["jane@example.com"],
            "unparsed_phones": [],
        }
    ]
    assert shown["updated_at"] == "2025-05-26T14:13:32Z" and shown["closed_at"] is None
    assert second[0].version > first[0].version


async def test_rereading_the_same_data_changes_nothing(pool: asyncpg.Pool) -> None:
    await write(pool, [lead()], [contact()])
    again = lead()
    again["_links"] = {"self": {"href": "https://x/api/v4/leads/24000101?page=3"}}
    assert await write(pool, [again], [contact()]) == []


async def test_same_second_update_applies_and_older_is_ignored(pool: asyncpg.Pool) -> None:
    await write(pool, [lead()])
    same = lead()
    same["name"] = "renamed in the same second"
    changes = await write(pool, [same])
    assert [c.lead["name"] for c in changes] == ["renamed in the same second"]
    old = lead()
    old["updated_at"] -= 10
    old["name"] = "stale"
    assert await write(pool, [old]) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT name FROM leads") == "renamed in the same second"


async def test_tags_and_links_are_replaced_exactly_down_to_empty(pool: asyncpg.Pool) -> None:
    await write(pool, [lead()], [contact()])
    bare = lead()
    bare["updated_at"] += 1
    bare["_embedded"]["tags"] = []
    bare["_embedded"]["contacts"] = []
    (change,) = await write(pool, [bare])
    assert change.lead["tags"] == [] and change.lead["contacts"] == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM lead_tags") == 0
        assert await conn.fetchval("SELECT count(*) FROM lead_contacts") == 0


async def test_delete_then_stale_update_does_not_resurrect(pool: asyncpg.Pool) -> None:
    await write(pool, [lead()])
    deleted_at = lead()["updated_at"] + 5
    async with pool.acquire() as conn, conn.transaction():
        ids = await entities.tombstone(conn, ACCOUNT, LEADS, [24000101], deleted_at)
        (gone,) = await leadview.refresh_leads(conn, ACCOUNT, ids, "webhook")
    assert gone.action == "deleted" and gone.lead["is_deleted"] is True
    stale = lead()
    stale["name"] = "lagging copy"
    assert await write(pool, [stale]) == []
    restored = lead()
    (back,) = await write(pool, [restored], restored=[24000101])
    assert back.action == "restored" and back.lead["is_deleted"] is False


async def test_tag_rename_reshows_the_leads(pool: asyncpg.Pool) -> None:
    await write(pool, [lead()])
    async with pool.acquire() as conn, conn.transaction():
        changed = await links.upsert_tags(
            conn, ACCOUNT, LEADS, [parse.tag({"id": 482205, "name": "web", "color": "DDEBB5"})]
        )
        ids = await leadview.leads_with_tags(conn, ACCOUNT, changed)
        (change,) = await leadview.refresh_leads(conn, ACCOUNT, ids, "reconcile")
    assert change.lead["tags"] == [{"id": 482205, "name": "web"}]


async def test_phones_are_stored_raw_and_normalised(pool: asyncpg.Pool) -> None:
    c = contact()
    c["custom_fields_values"][0]["values"] = [
        {"value": "987 654 321", "enum_id": 1, "enum_code": "MOB"},
        {"value": "not a phone", "enum_id": 2, "enum_code": "WORK"},
    ]
    await write(pool, contacts=[c])
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT raw, normalized, enum_code FROM contact_phones ORDER BY position"
        )
    assert [tuple(r) for r in rows] == [
        ("987 654 321", "51987654321", "MOB"),
        ("not a phone", None, "WORK"),
    ]


async def test_versions_strictly_increase(pool: asyncpg.Pool) -> None:
    versions = []
    for i in range(5):
        e = lead()
        e["updated_at"] += i
        e["price"] = i
        versions += [c.version for c in await write(pool, [e])]
    assert versions == sorted(versions) and len(set(versions)) == 5


async def test_pipelines_and_users(pool: asyncpg.Pool) -> None:
    pipelines = fixture("pipelines.json")["_embedded"]["pipelines"]
    users = fixture("users.json")["_embedded"]["users"]
    async with pool.acquire() as conn, conn.transaction():
        await dictionaries.replace_pipelines(conn, ACCOUNT, [parse.pipeline(p) for p in pipelines])
        await dictionaries.replace_users(conn, ACCOUNT, [parse.user(u) for u in users])
    async with pool.acquire() as conn:
        won = await conn.fetch("SELECT pipeline_id FROM statuses WHERE id = 142")
        assert [r["pipeline_id"] for r in won] == [p["id"] for p in pipelines]
        assert await conn.fetchval("SELECT name FROM users") == "Admin User"
    async with pool.acquire() as conn, conn.transaction():
        await dictionaries.replace_users(conn, ACCOUNT, [])
        assert await conn.fetchval("SELECT is_deleted FROM users") is True
