"""What a lead shows consumers: names of its stage, user and loss reason, its companies, its
contacts' e-mails and unparsed phones, and custom field values as typed rows."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import asyncpg

from service.kinds import COMPANIES, CONTACTS, LEADS, EntityKind
from service.kommo import parse
from service.store import dictionaries, entities, leadview, links
from service.store.leadview import LeadChange

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "api"
ACCOUNT = 31000001


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def a_lead() -> dict[str, Any]:
    lead = copy.deepcopy(fixture("lead_24000101_with_contacts.json"))
    lead["_embedded"]["companies"] = [{"id": 41000001}]
    return dict(lead)


def a_contact() -> dict[str, Any]:
    contact = copy.deepcopy(fixture("contacts_list.json")["_embedded"]["contacts"][0])
    contact["custom_fields_values"][0]["values"].append({"value": "ext. 12", "enum_code": "WORK"})
    return dict(contact)


def a_company(name: str = "Acme") -> dict[str, Any]:
    return {
        "id": 41000001,
        "name": name,
        "responsible_user_id": 9000001,
        "group_id": 0,
        "created_by": 9000001,
        "updated_by": 9000001,
        "created_at": 1748289000,
        "updated_at": 1748289100,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": None,
        "account_id": ACCOUNT,
        "_embedded": {"tags": [{"id": 5, "name": "vip", "color": None}]},
    }


async def write(pool: asyncpg.Pool, kind: EntityKind, *objs: Any) -> list[LeadChange]:
    async with pool.acquire() as conn, conn.transaction():
        await leadview.lock_account(conn, ACCOUNT)
        rows = await entities.upsert(conn, ACCOUNT, kind, parse.records(kind, objs))
        await links.replace_all(conn, ACCOUNT, kind, rows, "PE")
        ids = (
            {r.id for r in rows}
            if kind is LEADS
            else set(await leadview.leads_showing(conn, ACCOUNT, kind, [r.id for r in rows]))
        )
        return await leadview.refresh_leads(conn, ACCOUNT, ids, "reconcile")


async def dictionaries_of_the_account(pool: asyncpg.Pool) -> None:
    pipelines = [parse.pipeline(p) for p in fixture("pipelines.json")["_embedded"]["pipelines"]]
    users = [parse.user(u) for u in fixture("users.json")["_embedded"]["users"]]
    async with pool.acquire() as conn, conn.transaction():
        await dictionaries.replace_pipelines(conn, ACCOUNT, pipelines)
        await dictionaries.replace_users(conn, ACCOUNT, users)
        await dictionaries.upsert_loss_reasons(
            conn, ACCOUNT, [parse.loss_reason({"id": 4, "name": "Too expensive"})], complete=True
        )


async def test_a_lead_shows_names_companies_emails_and_unparsed_phones(
    pool: asyncpg.Pool,
) -> None:
    await dictionaries_of_the_account(pool)
    await write(pool, COMPANIES, a_company())
    await write(pool, CONTACTS, a_contact())
    (change,) = await write(pool, LEADS, a_lead())
    shown = change.lead
    lead = a_lead()
    pipeline = next(
        p
        for p in fixture("pipelines.json")["_embedded"]["pipelines"]
        if p["id"] == lead["pipeline_id"]
    )
    status = next(s for s in pipeline["_embedded"]["statuses"] if s["id"] == lead["status_id"])
    assert (shown["pipeline_name"], shown["status_name"]) == (pipeline["name"], status["name"])
    assert shown["responsible_user_name"] == "Admin User"
    assert shown["companies"] == [{"id": 41000001, "name": "Acme"}]
    assert shown["loss_reason"] is None
    (contact,) = shown["contacts"]
    assert contact["emails"] == ["jane@example.com"]
    assert contact["phones"] == ["15550001111", "15550002222"]
    assert contact["unparsed_phones"] == ["ext. 12"]


async def test_a_company_rename_reshows_its_leads_and_nothing_else(pool: asyncpg.Pool) -> None:
    await write(pool, COMPANIES, a_company())
    await write(pool, LEADS, a_lead())
    renamed = a_company("Acme Corp")
    renamed["updated_at"] += 10
    (change,) = await write(pool, COMPANIES, renamed)
    assert change.lead["companies"] == [{"id": 41000001, "name": "Acme Corp"}]
    retagged = a_company("Acme Corp")
    retagged["updated_at"] += 20
    retagged["_embedded"]["tags"] = []  # no lead shows a company's tags
    assert await write(pool, COMPANIES, retagged) == []


async def test_custom_field_values_are_replaced_exactly(pool: asyncpg.Pool) -> None:
    lead = a_lead()
    lead["custom_fields_values"] = [
        {
            "field_id": 752009,
            "field_type": "select",
            "values": [{"value": "Google", "enum_id": 932073, "enum_code": None}],
        },
        {"field_id": 752011, "field_type": "numeric", "values": [{"value": "14012"}]},
    ]
    await write(pool, LEADS, lead)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT field_id, value_text, value_number, enum_id FROM custom_field_values"
            " ORDER BY field_id"
        )
    assert [tuple(r) for r in rows] == [
        (752009, "Google", None, 932073),
        (752011, "14012", 14012, None),
    ]
    lead["custom_fields_values"] = None
    lead["updated_at"] += 1
    await write(pool, LEADS, lead)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM custom_field_values") == 0


async def test_renames_find_the_leads_that_show_them(pool: asyncpg.Pool) -> None:
    await dictionaries_of_the_account(pool)
    await write(pool, LEADS, a_lead())
    lead = a_lead()
    async with pool.acquire() as conn, conn.transaction():
        pipelines = [parse.pipeline(p) for p in fixture("pipelines.json")["_embedded"]["pipelines"]]
        assert await dictionaries.replace_pipelines(conn, ACCOUNT, pipelines) == ([], [])
        moved = copy.deepcopy(fixture("pipelines.json")["_embedded"]["pipelines"])
        for p in moved:
            for s in p["_embedded"]["statuses"]:
                if (p["id"], s["id"]) == (lead["pipeline_id"], lead["status_id"]):
                    s["name"] = "Renamed stage"
        _, statuses = await dictionaries.replace_pipelines(
            conn, ACCOUNT, [parse.pipeline(p) for p in moved]
        )
        assert statuses == [(lead["pipeline_id"], lead["status_id"])]
        ids = await leadview.leads_showing_names(conn, ACCOUNT, statuses=statuses)
        assert ids == [lead["id"]]
        (change,) = await leadview.refresh_leads(conn, ACCOUNT, ids, "reconcile")
    assert change.lead["status_name"] == "Renamed stage"
