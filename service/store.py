"""Set-based writes into the mirror, and the lead views that decide what consumers see.

Every function takes a connection inside the caller's transaction and writes a whole batch with
one statement per table (arrays through ``unnest``). Rows never go backwards: an upsert applies
only when Kommo's ``updated_at`` is newer or equal and the object differs, and a tombstoned row
comes back only when Kommo says it was restored (or shows a change made after the deletion).

After the writes, :func:`refresh_leads` recomputes what each touched lead shows (``_REFRESH``
in SQL), and only where that really changed bumps the lead's ``version`` and returns the
``lead_update`` data to publish once the transaction has committed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.phones import normalize_phone

Entity = Mapping[str, Any]
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


@dataclass
class Written:
    """What an upsert actually changed: entity ids, and tags renamed on the way."""

    ids: list[int] = field(default_factory=list)
    renamed_tags: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LeadChange:
    """One ``lead_update``: the ``data`` object of the message, after its commit."""

    version: int
    action: str
    source: str
    lead: dict[str, Any]
    previous_updated_at: str | None = None  # what consumers were shown before (not sent)

    @property
    def edited(self) -> bool:
        """Did the lead itself change in Kommo (not only a contact, tag or link it shows)?"""
        return self.lead.get("updated_at") != self.previous_updated_at

    def envelope(self, account_id: int) -> dict[str, Any]:
        return {
            "event": "lead_update",
            "account_id": account_id,
            "data": {
                "action": self.action,
                "version": self.version,
                "source": self.source,
                "lead": self.lead,
            },
        }


async def lock_account(conn: Conn, account_id: int) -> None:
    """Serialise the mirror's write transactions for one account (held until commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(7001, $1::int)", account_id % (1 << 31))


def _strip_links(value: Any) -> Any:
    """Kommo's ``_links`` echo each request's query string: keep them out of the stored copy."""
    if isinstance(value, dict):
        return {k: _strip_links(v) for k, v in value.items() if k != "_links"}
    if isinstance(value, list):
        return [_strip_links(v) for v in value]
    return value


def _dedupe(entities: Iterable[Entity]) -> list[Entity]:
    """One row per id, the newest copy winning (ON CONFLICT refuses a row twice)."""
    best: dict[int, Entity] = {}
    for e in entities:
        prev = best.get(int(e["id"]))
        if prev is None or int(e.get("updated_at") or 0) >= int(prev.get("updated_at") or 0):
            best[int(e["id"])] = e
    return list(best.values())


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _embedded(e: Entity, key: str) -> list[Mapping[str, Any]]:
    items = (e.get("_embedded") or {}).get(key) or []
    return list(items)


_UPSERT_LEADS = """
INSERT INTO leads AS l (account_id, id, name, price, responsible_user_id, group_id, status_id,
    pipeline_id, loss_reason_id, created_by, updated_by, created_at, updated_at, closed_at,
    closest_task_at, score, custom_fields, raw, is_deleted, deleted_at, synced_at)
SELECT $1, u.id, u.name, u.price, u.responsible_user_id, u.group_id, u.status_id, u.pipeline_id,
    u.loss_reason_id, u.created_by, u.updated_by, to_timestamp(u.created_at),
    to_timestamp(u.updated_at), to_timestamp(u.closed_at), to_timestamp(u.closest_task_at),
    u.score, u.custom_fields::jsonb, u.raw::jsonb, false, NULL, now()
FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
    $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
    $14::bigint[], $15::bigint[], $16::int[], $17::text[], $18::text[])
    AS u(id, name, price, responsible_user_id, group_id, status_id, pipeline_id, loss_reason_id,
         created_by, updated_by, created_at, updated_at, closed_at, closest_task_at, score,
         custom_fields, raw)
ON CONFLICT (account_id, id) DO UPDATE SET
    name = EXCLUDED.name, price = EXCLUDED.price,
    responsible_user_id = EXCLUDED.responsible_user_id, group_id = EXCLUDED.group_id,
    status_id = EXCLUDED.status_id, pipeline_id = EXCLUDED.pipeline_id,
    loss_reason_id = EXCLUDED.loss_reason_id, created_by = EXCLUDED.created_by,
    updated_by = EXCLUDED.updated_by, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, closed_at = EXCLUDED.closed_at,
    closest_task_at = EXCLUDED.closest_task_at, score = EXCLUDED.score,
    custom_fields = EXCLUDED.custom_fields, raw = EXCLUDED.raw,
    is_deleted = false, deleted_at = NULL, synced_at = now()
WHERE EXCLUDED.updated_at >= l.updated_at
  AND (l.raw IS DISTINCT FROM EXCLUDED.raw OR l.is_deleted)
  AND (NOT l.is_deleted OR l.id = ANY($19::bigint[]) OR EXCLUDED.updated_at > l.deleted_at)
RETURNING l.id
"""


async def upsert_leads(
    conn: Conn,
    account_id: int,
    leads: Iterable[Entity],
    *,
    restored: Collection[int] = (),
) -> Written:
    """Upsert leads with their tags and contact links; return what was actually written."""
    written, applied = await _upsert_rows(conn, _UPSERT_LEADS, account_id, _dedupe(leads),
                                          _lead_values, restored)
    result = Written(written)
    if applied:
        result.renamed_tags = await upsert_tags(conn, account_id, "leads", _tags_of(applied))
        await _replace_tags(conn, account_id, "lead_tags", "lead_id", applied)
        await _replace_lead_contacts(conn, account_id, applied)
    return result


_UPSERT_CONTACTS = """
INSERT INTO contacts AS c (account_id, id, name, first_name, last_name, responsible_user_id,
    group_id, created_by, updated_by, created_at, updated_at, closest_task_at, is_unsorted,
    custom_fields, raw, is_deleted, deleted_at, synced_at)
SELECT $1, u.id, u.name, u.first_name, u.last_name, u.responsible_user_id, u.group_id,
    u.created_by, u.updated_by, to_timestamp(u.created_at), to_timestamp(u.updated_at),
    to_timestamp(u.closest_task_at), u.is_unsorted, u.custom_fields::jsonb, u.raw::jsonb,
    false, NULL, now()
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
    $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bool[],
    $14::text[], $15::text[])
    AS u(id, name, first_name, last_name, responsible_user_id, group_id, created_by, updated_by,
         created_at, updated_at, closest_task_at, is_unsorted, custom_fields, raw)
ON CONFLICT (account_id, id) DO UPDATE SET
    name = EXCLUDED.name, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    responsible_user_id = EXCLUDED.responsible_user_id, group_id = EXCLUDED.group_id,
    created_by = EXCLUDED.created_by, updated_by = EXCLUDED.updated_by,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    closest_task_at = EXCLUDED.closest_task_at, is_unsorted = EXCLUDED.is_unsorted,
    custom_fields = EXCLUDED.custom_fields, raw = EXCLUDED.raw,
    is_deleted = false, deleted_at = NULL, synced_at = now()
WHERE EXCLUDED.updated_at >= c.updated_at
  AND (c.raw IS DISTINCT FROM EXCLUDED.raw OR c.is_deleted)
  AND (NOT c.is_deleted OR c.id = ANY($16::bigint[]) OR EXCLUDED.updated_at > c.deleted_at)
RETURNING c.id
"""


async def upsert_contacts(
    conn: Conn,
    account_id: int,
    contacts: Iterable[Entity],
    *,
    region: str,
    restored: Collection[int] = (),
) -> Written:
    """Upsert contacts with their tags and phones; return what was actually written."""
    written, applied = await _upsert_rows(conn, _UPSERT_CONTACTS, account_id,
                                          _dedupe(contacts), _contact_values, restored)
    if applied:
        await upsert_tags(conn, account_id, "contacts", _tags_of(applied))
        await _replace_tags(conn, account_id, "contact_tags", "contact_id", applied)
        await _replace_phones(conn, account_id, applied, region)
    return Written(written)


async def _upsert_rows(
    conn: Conn,
    sql: str,
    account_id: int,
    rows: Sequence[Entity],
    values: Callable[[Entity], tuple[Any, ...]],
    restored: Collection[int],
) -> tuple[list[int], list[Entity]]:
    """One statement for the batch (a column array per field); the ids written and their rows."""
    if not rows:
        return [], []
    columns = [list(column) for column in zip(*(values(e) for e in rows), strict=True)]
    written = [r["id"] for r in await conn.fetch(sql, account_id, *columns, list(restored))]
    chosen = {int(e["id"]): e for e in rows}
    return written, [chosen[i] for i in written]


def _lead_values(e: Entity) -> tuple[Any, ...]:
    return (
        int(e["id"]), e.get("name") or "", _int(e.get("price")),
        _int(e.get("responsible_user_id")), _int(e.get("group_id")), _int(e.get("status_id")),
        _int(e.get("pipeline_id")), _int(e.get("loss_reason_id")), _int(e.get("created_by")),
        _int(e.get("updated_by")), _int(e.get("created_at")), int(e["updated_at"]),
        _int(e.get("closed_at")), _int(e.get("closest_task_at")), _int(e.get("score")),
        json.dumps(e.get("custom_fields_values") or []), json.dumps(_strip_links(e)),
    )


def _contact_values(e: Entity) -> tuple[Any, ...]:
    return (
        int(e["id"]), e.get("name") or "", e.get("first_name") or "",
        e.get("last_name") or "", _int(e.get("responsible_user_id")),
        _int(e.get("group_id")), _int(e.get("created_by")), _int(e.get("updated_by")),
        _int(e.get("created_at")), int(e["updated_at"]), _int(e.get("closest_task_at")),
        bool(e.get("is_unsorted", False)), json.dumps(e.get("custom_fields_values") or []),
        json.dumps(_strip_links(e)),
    )


def _tags_of(entities: Iterable[Entity]) -> list[Entity]:
    return [t for e in entities for t in _embedded(e, "tags")]


async def upsert_tags(
    conn: Conn, account_id: int, entity_type: str, tags: Iterable[Entity]
) -> list[int]:
    """Upsert tag dictionary entries by (account, entity type, id); renames apply in place.

    Returns the ids of tags that changed (their leads must be re-shown).
    """
    unique: dict[int, Entity] = {int(t["id"]): t for t in tags}
    if not unique:
        return []
    ids = list(unique)
    names = [str(unique[i].get("name") or "") for i in ids]
    colors = [unique[i].get("color") for i in ids]
    rows = await conn.fetch(
        """INSERT INTO tags AS t (account_id, entity_type, id, name, color)
           SELECT $1, $2, u.id, u.name, u.color
           FROM unnest($3::bigint[], $4::text[], $5::text[]) AS u(id, name, color)
           ON CONFLICT (account_id, entity_type, id) DO UPDATE
               SET name = EXCLUDED.name, color = COALESCE(EXCLUDED.color, t.color),
                   synced_at = now()
           WHERE t.name IS DISTINCT FROM EXCLUDED.name
              OR (EXCLUDED.color IS NOT NULL AND t.color IS DISTINCT FROM EXCLUDED.color)
           RETURNING t.id""",
        account_id, entity_type, ids, names, colors,
    )
    return [r["id"] for r in rows]


async def _replace_tags(
    conn: Conn, account_id: int, table: str, column: str, applied: Sequence[Entity]
) -> None:
    owners = [int(e["id"]) for e in applied]
    pairs = [(int(e["id"]), int(t["id"])) for e in applied for t in _embedded(e, "tags")]
    await conn.execute(
        f"DELETE FROM {table} WHERE account_id = $1 AND {column} = ANY($2::bigint[])",
        account_id, owners,
    )
    if pairs:
        await conn.execute(
            f"""INSERT INTO {table} (account_id, {column}, tag_id)
                SELECT $1, u.o, u.t FROM unnest($2::bigint[], $3::bigint[]) AS u(o, t)
                ON CONFLICT DO NOTHING""",
            account_id, [p[0] for p in pairs], [p[1] for p in pairs],
        )


async def _replace_lead_contacts(
    conn: Conn, account_id: int, applied: Sequence[Entity]
) -> None:
    with_links = [e for e in applied if "contacts" in (e.get("_embedded") or {})]
    if not with_links:
        return  # fetched without with=contacts: the links are unknown, keep them
    links = {
        (int(e["id"]), int(c["id"])): bool(c.get("is_main"))
        for e in with_links
        for c in _embedded(e, "contacts")
    }
    await conn.execute(
        "DELETE FROM lead_contacts WHERE account_id = $1 AND lead_id = ANY($2::bigint[])",
        account_id, [int(e["id"]) for e in with_links],
    )
    if links:
        await conn.execute(
            """INSERT INTO lead_contacts (account_id, lead_id, contact_id, is_main)
               SELECT $1, u.l, u.c, u.m
               FROM unnest($2::bigint[], $3::bigint[], $4::bool[]) AS u(l, c, m)""",
            account_id, [k[0] for k in links], [k[1] for k in links], list(links.values()),
        )


def phones_of(contact: Entity) -> list[tuple[str, str | None]]:
    """The (raw value, enum code) of every PHONE value of a contact, in Kommo's order."""
    found = []
    for cf in contact.get("custom_fields_values") or []:
        if cf.get("field_code") != "PHONE":
            continue
        for v in cf.get("values") or []:
            if v.get("value") not in (None, ""):
                found.append((str(v["value"]), v.get("enum_code") or v.get("enum")))
    return found


async def _replace_phones(
    conn: Conn, account_id: int, applied: Sequence[Entity], region: str
) -> None:
    ids, positions, raws, normalized, codes = [], [], [], [], []
    for e in applied:
        for pos, (raw, code) in enumerate(phones_of(e)):
            ids.append(int(e["id"]))
            positions.append(pos)
            raws.append(raw)
            normalized.append(normalize_phone(raw, region))
            codes.append(None if code is None else str(code))
    await conn.execute(
        "DELETE FROM contact_phones WHERE account_id = $1 AND contact_id = ANY($2::bigint[])",
        account_id, [int(e["id"]) for e in applied],
    )
    if ids:
        await conn.execute(
            """INSERT INTO contact_phones (account_id, contact_id, position, raw, normalized,
                                           enum_code)
               SELECT $1, u.c, u.p, u.r, u.n, u.e
               FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[])
                   AS u(c, p, r, n, e)""",
            account_id, ids, positions, raws, normalized, codes,
        )


async def tombstone(
    conn: Conn, account_id: int, table: str, ids: Collection[int], deleted_at: float
) -> list[int]:
    """Mark leads or contacts deleted (``table`` is 'leads' or 'contacts'); return those marked."""
    if table not in ("leads", "contacts"):
        raise ValueError(table)
    rows = await conn.fetch(
        f"""UPDATE {table} SET is_deleted = true, deleted_at = to_timestamp($3), synced_at = now()
            WHERE account_id = $1 AND id = ANY($2::bigint[]) AND NOT is_deleted
            RETURNING id""",
        account_id, list(ids), deleted_at,
    )
    return [r["id"] for r in rows]


async def leads_showing_contacts(
    conn: Conn, account_id: int, contact_ids: Collection[int]
) -> list[int]:
    rows = await conn.fetch(
        """SELECT DISTINCT lead_id FROM lead_contacts
           WHERE account_id = $1 AND contact_id = ANY($2::bigint[])""",
        account_id, list(contact_ids),
    )
    return [r["lead_id"] for r in rows]


async def leads_with_tags(
    conn: Conn, account_id: int, tag_ids: Collection[int]
) -> list[int]:
    rows = await conn.fetch(
        "SELECT DISTINCT lead_id FROM lead_tags WHERE account_id = $1 AND tag_id = ANY($2)",
        account_id, list(tag_ids),
    )
    return [r["lead_id"] for r in rows]


async def missing_contacts(
    conn: Conn, account_id: int, lead_ids: Collection[int]
) -> list[int]:
    """Contacts linked to these leads that the mirror has never seen."""
    rows = await conn.fetch(
        """SELECT DISTINCT lc.contact_id FROM lead_contacts lc
           LEFT JOIN contacts c ON c.account_id = lc.account_id AND c.id = lc.contact_id
           WHERE lc.account_id = $1 AND lc.lead_id = ANY($2::bigint[]) AND c.id IS NULL""",
        account_id, list(lead_ids),
    )
    return [r["contact_id"] for r in rows]


_REFRESH = """
WITH tag_lists AS (
    SELECT lt.lead_id,
           jsonb_agg(jsonb_build_object('id', t.id, 'name', t.name) ORDER BY t.id) AS tags
    FROM lead_tags lt
    JOIN tags t ON t.account_id = lt.account_id AND t.entity_type = 'leads' AND t.id = lt.tag_id
    WHERE lt.account_id = $1 AND lt.lead_id = ANY($2::bigint[])
    GROUP BY lt.lead_id
), links AS (
    SELECT lc.lead_id, lc.contact_id, lc.is_main, c.name
    FROM lead_contacts lc
    JOIN contacts c ON c.account_id = lc.account_id AND c.id = lc.contact_id
    WHERE lc.account_id = $1 AND lc.lead_id = ANY($2::bigint[]) AND NOT c.is_deleted
), phone_lists AS (
    SELECT p.contact_id, jsonb_agg(p.normalized ORDER BY p.position) AS phones
    FROM contact_phones p
    WHERE p.account_id = $1 AND p.normalized IS NOT NULL
      AND p.contact_id IN (SELECT contact_id FROM links)
    GROUP BY p.contact_id
), contact_lists AS (
    SELECT k.lead_id,
           jsonb_agg(jsonb_build_object('id', k.contact_id, 'is_main', k.is_main, 'name', k.name,
                                        'phones', COALESCE(pl.phones, '[]'::jsonb))
                     ORDER BY k.is_main DESC, k.contact_id) AS contacts
    FROM links k LEFT JOIN phone_lists pl ON pl.contact_id = k.contact_id
    GROUP BY k.lead_id
), fresh AS (
    SELECT l.id, l.shown AS old, jsonb_build_object(
        'id', l.id,
        'name', l.name,
        'price', l.price,
        'pipeline_id', l.pipeline_id,
        'status_id', l.status_id,
        'responsible_user_id', l.responsible_user_id,
        'created_at', kommo_iso(l.created_at),
        'updated_at', kommo_iso(l.updated_at),
        'closed_at', kommo_iso(l.closed_at),
        'is_deleted', l.is_deleted,
        'tags', COALESCE(tl.tags, '[]'::jsonb),
        'contacts', COALESCE(cl.contacts, '[]'::jsonb),
        'custom_fields', l.custom_fields) AS shown
    FROM leads l
    LEFT JOIN tag_lists tl ON tl.lead_id = l.id
    LEFT JOIN contact_lists cl ON cl.lead_id = l.id
    WHERE l.account_id = $1 AND l.id = ANY($2::bigint[])
), changed AS (
    SELECT id, shown, old FROM fresh WHERE old IS DISTINCT FROM shown ORDER BY id
)
UPDATE leads l SET
    shown = c.shown,
    version = nextval('lead_version_seq'),
    last_source = $3,
    last_action = CASE
        WHEN c.old IS NULL THEN
            CASE WHEN (c.shown->>'is_deleted')::bool THEN 'deleted' ELSE 'created' END
        WHEN (c.shown->>'is_deleted')::bool AND NOT (c.old->>'is_deleted')::bool THEN 'deleted'
        WHEN NOT (c.shown->>'is_deleted')::bool AND (c.old->>'is_deleted')::bool THEN 'restored'
        ELSE 'updated' END
FROM changed c
WHERE l.account_id = $1 AND l.id = c.id
RETURNING l.version, l.last_action, l.shown::text AS shown,
    c.old->>'updated_at' AS previous_updated_at
"""
"""What a batch of leads shows (the ``lead`` object of lead_update), computed for the batch in
one statement; where it differs from what was last shown, a new version."""


async def refresh_leads(
    conn: Conn, account_id: int, lead_ids: Collection[int], source: str
) -> list[LeadChange]:
    """Recompute what these leads show; bump versions where it changed; return the changes.

    Call it inside the transaction that holds :func:`lock_account`: writers are serialised per
    account, so what a lead shows is computed from a state no other writer is changing.
    """
    if not lead_ids:
        return []
    rows = await conn.fetch(_REFRESH, account_id, sorted(set(lead_ids)), source)
    changes = [
        LeadChange(r["version"], r["last_action"], source, json.loads(r["shown"]),
                   r["previous_updated_at"])
        for r in rows
    ]
    changes.sort(key=lambda c: c.version)
    return changes


def json_state(value: Any) -> dict[str, Any]:
    """A jsonb value as asyncpg returns it (text) made into a dict."""
    if value is None:
        return {}
    data = json.loads(value) if isinstance(value, str) else value
    return dict(data or {})


async def analyze(conn: Conn) -> None:
    """Refresh the planner's statistics (a backfill grows the tables from nothing quickly)."""
    await conn.execute(
        "ANALYZE leads, contacts, tags, lead_tags, contact_tags, lead_contacts, contact_phones"
    )


async def get_cursor_state(
    conn: Conn, account_id: int, name: str
) -> tuple[int, dict[str, Any]] | None:
    row = await conn.fetchrow(
        "SELECT value, state FROM sync_cursors WHERE account_id = $1 AND name = $2",
        account_id, name,
    )
    return None if row is None else (int(row["value"]), json_state(row["state"]))


async def get_cursor(conn: Conn, account_id: int, name: str) -> int | None:
    value = await conn.fetchval(
        "SELECT value FROM sync_cursors WHERE account_id = $1 AND name = $2", account_id, name
    )
    return None if value is None else int(value)


async def set_cursor(
    conn: Conn, account_id: int, name: str, value: int, state: Any = None
) -> None:
    await conn.execute(
        """INSERT INTO sync_cursors (account_id, name, value, state, updated_at)
           VALUES ($1, $2, $3, COALESCE($4::jsonb, '{}'), now())
           ON CONFLICT (account_id, name) DO UPDATE
               SET value = EXCLUDED.value, state = EXCLUDED.state, updated_at = now()""",
        account_id, name, value, None if state is None else json.dumps(state),
    )


async def replace_pipelines(
    conn: Conn, account_id: int, pipelines: Sequence[Entity]
) -> None:
    """Upsert every pipeline and its statuses; tombstone those Kommo no longer lists.

    Only call with a complete listing (the pipelines endpoint has no paging).
    """
    p_ids = [int(p["id"]) for p in pipelines]
    await conn.execute(
        """INSERT INTO pipelines AS p (account_id, id, name, sort, is_main, is_archive, raw)
           SELECT $1, u.id, u.name, u.sort, u.is_main, u.is_archive, u.raw::jsonb
           FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bool[], $6::bool[], $7::text[])
               AS u(id, name, sort, is_main, is_archive, raw)
           ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
               sort = EXCLUDED.sort, is_main = EXCLUDED.is_main,
               is_archive = EXCLUDED.is_archive, raw = EXCLUDED.raw, is_deleted = false,
               deleted_at = NULL, synced_at = now()
           WHERE p.raw IS DISTINCT FROM EXCLUDED.raw OR p.is_deleted""",
        account_id, p_ids, [str(p.get("name") or "") for p in pipelines],
        [int(p.get("sort") or 0) for p in pipelines],
        [bool(p.get("is_main")) for p in pipelines],
        [bool(p.get("is_archive")) for p in pipelines],
        [json.dumps(_strip_links(p)) for p in pipelines],
    )
    await conn.execute(
        """UPDATE pipelines SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted AND NOT id = ANY($2::bigint[])""",
        account_id, p_ids,
    )
    statuses = [(int(p["id"]), s) for p in pipelines for s in _embedded(p, "statuses")]
    await conn.execute(
        """INSERT INTO statuses AS s (account_id, pipeline_id, id, name, sort, color, type,
                                      is_editable, raw)
           SELECT $1, u.p, u.id, u.name, u.sort, u.color, u.type, u.is_editable, u.raw::jsonb
           FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::int[],
                       $8::bool[], $9::text[])
               AS u(p, id, name, sort, color, type, is_editable, raw)
           ON CONFLICT (account_id, pipeline_id, id) DO UPDATE SET name = EXCLUDED.name,
               sort = EXCLUDED.sort, color = EXCLUDED.color, type = EXCLUDED.type,
               is_editable = EXCLUDED.is_editable, raw = EXCLUDED.raw, is_deleted = false,
               deleted_at = NULL, synced_at = now()
           WHERE s.raw IS DISTINCT FROM EXCLUDED.raw OR s.is_deleted""",
        account_id, [p for p, _ in statuses], [int(s["id"]) for _, s in statuses],
        [str(s.get("name") or "") for _, s in statuses],
        [int(s.get("sort") or 0) for _, s in statuses],
        [s.get("color") for _, s in statuses], [int(s.get("type") or 0) for _, s in statuses],
        [bool(s.get("is_editable", True)) for _, s in statuses],
        [json.dumps(_strip_links(s)) for _, s in statuses],
    )
    await conn.execute(
        """UPDATE statuses s SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted
             AND NOT EXISTS (SELECT 1 FROM unnest($2::bigint[], $3::bigint[]) AS u(p, id)
                             WHERE u.p = s.pipeline_id AND u.id = s.id)""",
        account_id, [p for p, _ in statuses], [int(s["id"]) for _, s in statuses],
    )


async def replace_users(conn: Conn, account_id: int, users: Sequence[Entity]) -> None:
    """Upsert every user; tombstone those no longer listed (call with a complete listing)."""
    ids = [int(u["id"]) for u in users]
    await conn.execute(
        """INSERT INTO users AS t (account_id, id, name, email, is_active, raw)
           SELECT $1, u.id, u.name, u.email, u.is_active, u.raw::jsonb
           FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[])
               AS u(id, name, email, is_active, raw)
           ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
               email = EXCLUDED.email, is_active = EXCLUDED.is_active, raw = EXCLUDED.raw,
               is_deleted = false, deleted_at = NULL, synced_at = now()
           WHERE t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_deleted""",
        account_id, ids, [str(u.get("name") or "") for u in users],
        [u.get("email") for u in users],
        [bool((u.get("rights") or {}).get("is_active", True)) for u in users],
        [json.dumps(_strip_links(u)) for u in users],
    )
    await conn.execute(
        """UPDATE users SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted AND NOT id = ANY($2::bigint[])""",
        account_id, ids,
    )
