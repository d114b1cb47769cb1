"""Compare the mirror in Postgres with the simulator's state, field by field."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from kommo_sim import Simulator
from service.kommo.parse import phones_of
from service.phones import normalize_phone


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


async def differences(pool: asyncpg.Pool, sim: Simulator, limit: int = 10) -> list[str]:
    """The first differing rows (empty when the mirror equals the simulator)."""
    acc = sim.config.account_id
    out: list[str] = []
    async with pool.acquire() as conn:
        leads = {
            r["id"]: r for r in await conn.fetch("SELECT * FROM leads WHERE account_id = $1", acc)
        }
        contacts = {
            r["id"]: r
            for r in await conn.fetch("SELECT * FROM contacts WHERE account_id = $1", acc)
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
        tags = {
            (r["entity_type"], r["id"]): r["name"] for r in await conn.fetch("SELECT * FROM tags")
        }
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
            )
        }
        got = {
            k: row[k] for k in ("name", "price", "status_id", "pipeline_id", "responsible_user_id")
        }
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
    for kind, entity in (("leads", sim.lead_tags_dict), ("contacts", sim.contact_tags_dict)):
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
    return out[:limit]


def _group(rows: list[asyncpg.Record]) -> dict[int, set[int]]:
    grouped: dict[int, set[int]] = {}
    for owner, tag in rows:
        grouped.setdefault(owner, set()).add(tag)
    return grouped
