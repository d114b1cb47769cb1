"""Compare the mirror in Postgres with the simulator's state, field by field."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg

from kommo_sim import Simulator
from service.emails import normalize_email
from service.kommo.parse import phones_of
from service.phones import normalize_phone
from service.store import Conn

NUMBER_TYPES = frozenset({"numeric", "price", "monetary"})
DATE_TYPES = frozenset({"date", "date_time", "birthday"})
OPTION_TYPES = frozenset({"select", "multiselect", "radiobutton", "category"})


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


async def differences(
    pool: asyncpg.Pool, sim: Simulator, limit: int = 10, *, history: bool = True
) -> list[str]:
    """The first differing rows (empty when the mirror equals the simulator). ``history``: the
    stage history must be complete too (False before the history import has run)."""
    async with pool.acquire() as conn:
        return await differences_on(conn, sim, limit, history=history)


async def differences_on(
    conn: Conn, sim: Simulator, limit: int = 10, *, history: bool = True
) -> list[str]:
    """:func:`differences` read on one connection (inside its transaction, if any)."""
    out = await _leads_and_contacts(conn, sim)
    out += await _companies(conn, sim)
    out += await _field_values(conn, sim)
    out += await _dictionaries(conn, sim)
    if history:
        out += await _stage_history(conn, sim)
    return out[:limit]


async def _leads_and_contacts(conn: Conn, sim: Simulator) -> list[str]:
    acc = sim.config.account_id
    out: list[str] = []
    leads = {r["id"]: r for r in await conn.fetch("SELECT * FROM leads WHERE account_id = $1", acc)}
    contacts = {
        r["id"]: r for r in await conn.fetch("SELECT * FROM contacts WHERE account_id = $1", acc)
    }
    lead_tags = _group(await conn.fetch("SELECT lead_id, tag_id FROM lead_tags"))
    contact_tags = _group(await conn.fetch("SELECT contact_id, tag_id FROM contact_tags"))
    links: dict[int, set[tuple[int, bool]]] = {}
    for r in await conn.fetch(
        """SELECT lead_id, contact_id, is_main FROM lead_contacts lc
           WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = lc.contact_id
                             AND c.is_deleted)"""
    ):
        links.setdefault(r["lead_id"], set()).add((r["contact_id"], r["is_main"]))
    phones: dict[int, list[str | None]] = {}
    for r in await conn.fetch(
        "SELECT contact_id, normalized FROM contact_phones ORDER BY contact_id, position"
    ):
        phones.setdefault(r["contact_id"], []).append(r["normalized"])
    emails: dict[int, list[tuple[str, str | None]]] = {}
    for r in await conn.fetch(
        "SELECT contact_id, raw, normalized FROM contact_emails ORDER BY contact_id, position"
    ):
        emails.setdefault(r["contact_id"], []).append((r["raw"], r["normalized"]))
    companies: dict[tuple[str, int], set[int]] = {}
    for r in await conn.fetch(
        """SELECT 'lead' AS owner, lead_id AS id, company_id FROM lead_companies
           UNION ALL SELECT 'contact', contact_id, company_id FROM contact_companies"""
    ):  # a deleted company is not shown on what it was linked to
        if r["company_id"] in sim.companies and not sim.companies[r["company_id"]]["is_deleted"]:
            companies.setdefault((r["owner"], r["id"]), set()).add(r["company_id"])
    tags = {(r["entity_type"], r["id"]): r["name"] for r in await conn.fetch("SELECT * FROM tags")}
    statuses = {
        (r["pipeline_id"], r["id"]): r["name"]
        for r in await conn.fetch("SELECT * FROM statuses WHERE NOT is_deleted")
    }

    for lid, lead in sim.leads.items():
        row = leads.get(lid)
        if lead.get("is_deleted"):
            if row is not None and not row["is_deleted"]:
                out.append(f"lead {lid}: deleted in Kommo, alive in the mirror")
            continue
        if row is None:
            out.append(f"lead {lid}: missing")
            continue
        want = {
            k: lead.get(k)
            for k in (
                "name",
                "price",
                "status_id",
                "pipeline_id",
                "responsible_user_id",
                "updated_at",
                "closed_at",
                "loss_reason_id",
            )
        }
        scalars = ("name", "price", "status_id", "pipeline_id", "responsible_user_id")
        got = {k: row[k] for k in (*scalars, "loss_reason_id")}
        got |= {"updated_at": _ts(row["updated_at"]), "closed_at": _ts(row["closed_at"])}
        if row["is_deleted"]:
            out.append(f"lead {lid}: alive in Kommo, tombstoned in the mirror")
        if want != got:
            out.append(f"lead {lid}: {got} != {want}")
        if json.loads(row["custom_fields"]) != (lead.get("custom_fields_values") or []):
            out.append(f"lead {lid}: custom fields differ")
        emb = lead.get("_embedded") or {}
        if lead_tags.get(lid, set()) != {t["id"] for t in emb.get("tags", [])}:
            out.append(f"lead {lid}: tags {lead_tags.get(lid)} != {emb.get('tags')}")
        want_links = {(c["id"], bool(c["is_main"])) for c in emb.get("contacts", [])}
        if links.get(lid, set()) != want_links:
            out.append(f"lead {lid}: contacts {links.get(lid)} != {want_links}")
        if companies.get(("lead", lid), set()) != {c["id"] for c in emb.get("companies", [])}:
            out.append(f"lead {lid}: companies {companies.get(('lead', lid))} differ")
    for cid, contact in sim.contacts.items():
        row = contacts.get(cid)
        if contact.get("is_deleted"):
            if row is not None and not row["is_deleted"]:
                out.append(f"contact {cid}: deleted in Kommo, alive in the mirror")
            continue
        if row is None:
            out.append(f"contact {cid}: missing")
            continue
        if row["is_deleted"]:
            out.append(f"contact {cid}: alive in Kommo, tombstoned in the mirror")
        if (row["name"], _ts(row["updated_at"])) != (contact["name"], contact["updated_at"]):
            out.append(
                f"contact {cid}: {row['name']!r}@{_ts(row['updated_at'])} != "
                f"{contact['name']!r}@{contact['updated_at']}"
            )
        emb = contact.get("_embedded") or {}
        if contact_tags.get(cid, set()) != {t["id"] for t in emb.get("tags", [])}:
            out.append(f"contact {cid}: tags differ")
        want_phones = [normalize_phone(raw) for raw, _ in phones_of(contact)]
        if phones.get(cid, []) != want_phones:
            out.append(f"contact {cid}: phones {phones.get(cid)} != {want_phones}")
        want_emails = [(raw, normalize_email(raw)) for raw in _multitext(contact, "EMAIL")]
        if emails.get(cid, []) != want_emails:
            out.append(f"contact {cid}: e-mails {emails.get(cid)} != {want_emails}")
        if companies.get(("contact", cid), set()) != {c["id"] for c in emb.get("companies", [])}:
            out.append(f"contact {cid}: companies {companies.get(('contact', cid))} differ")
    for kind, entity in (
        ("leads", sim.lead_tags_dict),
        ("contacts", sim.contact_tags_dict),
        ("companies", sim.company_tags_dict),
    ):
        for tid, tag in entity.items():
            if (kind, tid) in tags and tags[(kind, tid)] != tag["name"]:
                out.append(f"{kind} tag {tid}: {tags[(kind, tid)]!r} != {tag['name']!r}")
    want_statuses = {
        (s["pipeline_id"], s["id"]): s["name"]
        for p in sim.dump()["pipelines"]
        for s in p["_embedded"]["statuses"]
    }
    if statuses != want_statuses:
        out.append(f"statuses differ: {len(statuses)} != {len(want_statuses)}")
    return out


async def _companies(conn: Conn, sim: Simulator) -> list[str]:
    rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM companies")}
    tags = _group(await conn.fetch("SELECT company_id, tag_id FROM company_tags"))
    phones: dict[int, list[str | None]] = {}
    for r in await conn.fetch(
        "SELECT company_id, normalized FROM company_phones ORDER BY company_id, position"
    ):
        phones.setdefault(r["company_id"], []).append(r["normalized"])
    out: list[str] = []
    for cid, company in sim.companies.items():
        row = rows.get(cid)
        if company["is_deleted"]:
            if row is not None and not row["is_deleted"]:
                out.append(f"company {cid}: deleted in Kommo, alive in the mirror")
            continue
        if row is None or row["is_deleted"]:
            out.append(f"company {cid}: {'missing' if row is None else 'tombstoned'}")
            continue
        got = (row["name"], row["responsible_user_id"], _ts(row["updated_at"]))
        want = (company["name"], company["responsible_user_id"], company["updated_at"])
        if got != want:
            out.append(f"company {cid}: {got} != {want}")
        if tags.get(cid, set()) != {t["id"] for t in company["_embedded"]["tags"]}:
            out.append(f"company {cid}: tags differ")
        want_phones = [normalize_phone(raw) for raw, _ in phones_of(company)]
        if phones.get(cid, []) != want_phones:
            out.append(f"company {cid}: phones {phones.get(cid)} != {want_phones}")
    return out


async def _field_values(conn: Conn, sim: Simulator) -> list[str]:
    """``custom_field_values`` against what the API shows, typed here from the field's type."""
    got: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
    for r in await conn.fetch(
        """SELECT v.* FROM custom_field_values v
           JOIN (SELECT 'leads' AS kind, id FROM leads WHERE NOT is_deleted
                 UNION ALL SELECT 'contacts', id FROM contacts WHERE NOT is_deleted
                 UNION ALL SELECT 'companies', id FROM companies WHERE NOT is_deleted) alive
             ON alive.kind = v.entity_type AND alive.id = v.entity_id
           ORDER BY v.entity_type, v.entity_id, v.field_id, v.position"""
    ):
        typed = (
            r["field_id"],
            r["position"],
            r["value_text"],
            r["value_number"],
            r["value_bool"],
            _ts(r["value_at"]),
            r["enum_id"],
            r["enum_code"],
        )
        got.setdefault((r["entity_type"], r["entity_id"]), []).append(typed)
    alive = {
        (r["kind"], r["id"])
        for r in await conn.fetch(
            """SELECT 'leads' AS kind, id FROM leads WHERE NOT is_deleted
               UNION ALL SELECT 'contacts', id FROM contacts WHERE NOT is_deleted
               UNION ALL SELECT 'companies', id FROM companies WHERE NOT is_deleted"""
        )
    }
    out: list[str] = []
    for kind, entities in (
        ("leads", sim.leads),
        ("contacts", sim.contacts),
        ("companies", sim.companies),
    ):
        for eid, entity in entities.items():
            if entity.get("is_deleted") or (kind, eid) not in alive:
                continue  # a missing or tombstoned entity is reported as such
            want = sorted(_expected_values(entity))
            if got.get((kind, eid), []) != want:
                out.append(f"{kind} {eid}: field values {got.get((kind, eid))} != {want}")
    return out


def _expected_values(entity: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for cf in entity.get("custom_fields_values") or []:
        kind = cf["field_type"]
        for position, v in enumerate(cf["values"]):
            raw = v["value"]
            text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
            number = Decimal(raw) if kind in NUMBER_TYPES else None
            flag = bool(raw) if kind == "checkbox" else None
            at = int(raw) if kind in DATE_TYPES else None
            enum_id = v.get("enum_id") if kind in OPTION_TYPES | {"multitext"} else None
            code = v.get("enum_code") or v.get("enum") if enum_id is not None else None
            rows.append((cf["field_id"], position, text, number, flag, at, enum_id, code))
    return rows


async def _dictionaries(conn: Conn, sim: Simulator) -> list[str]:
    out: list[str] = []
    fields = {
        (r["entity_type"], r["id"]): (r["name"], r["type"], r["code"])
        for r in await conn.fetch("SELECT * FROM custom_fields WHERE NOT is_deleted")
    }
    want_fields = {
        (kind, f["id"]): (f["name"], f["type"], f["code"])
        for kind, defs in sim.custom_fields.items()
        for f in defs
    }
    if fields != want_fields:
        out.append(f"custom fields: {sorted(set(fields.items()) ^ set(want_fields.items()))}")
    enums = {
        (r["field_id"], r["id"]): r["value"]
        for r in await conn.fetch("SELECT * FROM custom_field_enums")
    }
    want_enums = {
        (f["id"], e["id"]): e["value"]
        for defs in sim.custom_fields.values()
        for f in defs
        for e in f.get("enums") or []
    }
    if {k: v for k, v in enums.items() if k[0] in {f for f, _ in want_enums}} != want_enums:
        out.append("custom field options differ")
    reasons = {
        r["id"]: r["name"]
        for r in await conn.fetch("SELECT id, name FROM loss_reasons WHERE NOT is_deleted")
    }
    if reasons != {i: r["name"] for i, r in sim.loss_reasons.items()}:
        out.append(f"loss reasons {reasons} != {sim.loss_reasons}")
    return out


async def _stage_history(conn: Conn, sim: Simulator) -> list[str]:
    got = {
        r["event_id"]: (
            r["lead_id"],
            _ts(r["changed_at"]),
            r["pipeline_id_before"],
            r["status_id_before"],
            r["pipeline_id"],
            r["status_id"],
        )
        for r in await conn.fetch("SELECT * FROM lead_status_changes")
    }
    want = {
        c["event_id"]: (
            c["lead_id"],
            c["changed_at"],
            c["pipeline_id_before"],
            c["status_id_before"],
            c["pipeline_id"],
            c["status_id"],
        )
        for c in sim.status_changes
    }
    if got == want:
        return []
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    wrong = [e for e in want.keys() & got.keys() if want[e] != got[e]]
    return [f"stage history: {len(missing)} missing, {len(extra)} extra, {len(wrong)} differ"]


def _multitext(obj: dict[str, Any], code: str) -> list[str]:
    return [
        str(v["value"])
        for cf in obj.get("custom_fields_values") or []
        if cf.get("field_code") == code
        for v in cf["values"]
        if v.get("value") not in (None, "")
    ]


def _group(rows: list[asyncpg.Record]) -> dict[int, set[int]]:
    grouped: dict[int, set[int]] = {}
    for owner, tag in rows:
        grouped.setdefault(owner, set()).add(tag)
    return grouped
