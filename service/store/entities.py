"""Set-based upserts of any entity kind, and tombstones.

Every function takes a connection inside the caller's transaction and writes a whole batch with
one statement per table (arrays through ``unnest``). Rows never go backwards: an upsert applies
only when Kommo's ``updated_at`` is newer or equal and the object differs, and a tombstoned row
comes back only when Kommo says it was restored (or shows a change made after the deletion).
The statements are built once per kind from its declaration (:mod:`service.kinds`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence

from service.kinds import Column, EntityKind
from service.records import Record
from service.store import Conn

_ARRAY = {"text": "text", "bigint": "bigint", "int": "int", "bool": "bool", "ts": "bigint"}


def _select(column: Column) -> str:
    return f"to_timestamp(u.{column.name})" if column.type == "ts" else f"u.{column.name}"


@functools.cache
def upsert_sql(kind: EntityKind, rewrite: bool = False) -> str:
    """``INSERT … ON CONFLICT DO UPDATE … WHERE`` for a batch of ``kind`` (one array a column).
    ``rewrite``: write a row even when Kommo's object is the one stored (an upgrade fills side
    tables an earlier release did not have from the same object)."""
    unchanged = "" if rewrite else "\n  AND (t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_deleted)"
    names = [c.name for c in kind.columns]
    arrays = [f"${i + 3}::{_ARRAY[c.type]}[]" for i, c in enumerate(kind.columns)]
    n = len(kind.columns) + 3
    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
    return f"""
INSERT INTO {kind.name} AS t (account_id, id, {", ".join(names)}, custom_fields, raw,
    is_deleted, deleted_at, synced_at)
SELECT $1, u.id, {", ".join(_select(c) for c in kind.columns)}, u.custom_fields::jsonb,
    u.raw::jsonb, false, NULL, now()
FROM unnest($2::bigint[], {", ".join(arrays)}, ${n}::text[], ${n + 1}::text[])
    AS u(id, {", ".join(names)}, custom_fields, raw)
ON CONFLICT (account_id, id) DO UPDATE SET {sets},
    custom_fields = EXCLUDED.custom_fields, raw = EXCLUDED.raw,
    is_deleted = false, deleted_at = NULL, synced_at = now()
WHERE EXCLUDED.updated_at >= t.updated_at{unchanged}
  AND (NOT t.is_deleted OR t.id = ANY(${n + 2}::bigint[]) OR EXCLUDED.updated_at > t.deleted_at)
RETURNING t.id"""


def dedupe(records: Iterable[Record]) -> list[Record]:
    """One row per id, the newest copy winning (ON CONFLICT refuses a row twice)."""
    best: dict[int, Record] = {}
    for r in records:
        prev = best.get(r.id)
        if prev is None or r.updated_at >= prev.updated_at:
            best[r.id] = r
    return list(best.values())


async def upsert(
    conn: Conn,
    account_id: int,
    kind: EntityKind,
    records: Sequence[Record],
    *,
    restored: Collection[int] = (),
    rewrite: bool = False,
) -> list[Record]:
    """Upsert the entity rows; return the records actually written (their side tables are the
    caller's next step: :mod:`service.store.links`). ``rewrite``: see :func:`upsert_sql`."""
    rows = dedupe(records)
    if not rows:
        return []
    columns = [list(column) for column in zip(*(r.row for r in rows), strict=True)]
    written = await conn.fetch(
        upsert_sql(kind, rewrite),
        account_id,
        [r.id for r in rows],
        *columns,
        [r.custom_fields for r in rows],
        [r.raw for r in rows],
        list(restored),
    )
    chosen = {r.id: r for r in rows}
    return [chosen[w["id"]] for w in written]


async def tombstone(
    conn: Conn, account_id: int, kind: EntityKind, ids: Collection[int], deleted_at: float
) -> list[int]:
    """Mark entities deleted; return the ids marked (those alive until now)."""
    if not ids:
        return []
    rows = await conn.fetch(
        f"""UPDATE {kind.name} SET is_deleted = true, deleted_at = to_timestamp($3),
                synced_at = now()
            WHERE account_id = $1 AND id = ANY($2::bigint[]) AND NOT is_deleted
            RETURNING id""",
        account_id,
        list(ids),
        deleted_at,
    )
    return [r["id"] for r in rows]


async def known_ids(
    conn: Conn, account_id: int, kind: EntityKind, ids: Collection[int]
) -> set[int]:
    """Those of ``ids`` the mirror holds (alive or tombstoned)."""
    rows = await conn.fetch(
        f"SELECT id FROM {kind.name} WHERE account_id = $1 AND id = ANY($2::bigint[])",
        account_id,
        list(ids),
    )
    return {r["id"] for r in rows}


async def alive_ids_between(
    conn: Conn, account_id: int, kind: EntityKind, low: int, high: int | None
) -> set[int]:
    """Ids of live rows from ``low`` to ``high`` inclusive (``None``: to the end)."""
    rows = await conn.fetch(
        f"""SELECT id FROM {kind.name} WHERE account_id = $1 AND NOT is_deleted
            AND id >= $2 AND ($3::bigint IS NULL OR id <= $3)""",
        account_id,
        low,
        high,
    )
    return {r["id"] for r in rows}


async def analyze(conn: Conn) -> None:
    """Refresh the planner's statistics (a backfill grows the tables from nothing quickly)."""
    await conn.execute(
        "ANALYZE leads, contacts, companies, tags, lead_tags, contact_tags, company_tags,"
        " lead_contacts, lead_companies, contact_companies, contact_phones, company_phones,"
        " contact_emails, custom_field_values"
    )


async def scrub_deleted(conn: Conn, account_id: int, kind: EntityKind, before: float) -> list[int]:
    """Remove the personal data of entities tombstoned before ``before`` (Unix s): their raw
    copy, custom fields and text columns, and what hangs off them (phones, tags, links). The
    tombstone itself stays (id, deleted_at, version), so a late update can't resurrect the row.
    Returns the ids scrubbed now (each once)."""
    texts = [c.name for c in kind.columns if c.type == "text"]
    blank = "".join(f", {name} = ''" for name in texts)
    shown = (
        ", shown = jsonb_build_object('id', id, 'is_deleted', true)" if kind.name == "leads" else ""
    )
    rows = await conn.fetch(
        f"""UPDATE {kind.name} SET raw = '{{}}'::jsonb, custom_fields = '[]'::jsonb{blank}{shown}
            WHERE account_id = $1 AND is_deleted AND deleted_at < to_timestamp($2)
              AND raw <> '{{}}'::jsonb
            RETURNING id""",
        account_id,
        before,
    )
    ids = [r["id"] for r in rows]
    if ids:
        tables = [kind.tag_table, kind.phones_table, *(link.table for link in kind.links)]
        for table in filter(None, tables):
            await conn.execute(
                f"DELETE FROM {table} WHERE account_id = $1 AND {kind.owner} = ANY($2::bigint[])",
                account_id,
                ids,
            )
    return ids
