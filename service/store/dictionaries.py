"""The dictionaries entities point at: pipelines and stages, users, loss reasons, custom field
definitions.

Each is replaced from a complete listing: rows Kommo lists are upserted, rows it no longer lists
are tombstoned. The functions return what leads show that changed (a name, or a row that was
missing), so that exactly the leads showing it are re-shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.records import CustomField, LossReason, Pipeline, User
from service.store import Conn


async def replace_pipelines(
    conn: Conn, account_id: int, pipelines: Sequence[Pipeline]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Upsert every pipeline and its statuses; tombstone those Kommo no longer lists. Returns the
    pipelines and the (pipeline, status) pairs whose name changed or that are new."""
    p_ids = [p.id for p in pipelines]
    renamed = await conn.fetch(
        """WITH old AS (SELECT id, name FROM pipelines WHERE account_id = $1),
           up AS (
               INSERT INTO pipelines AS p (account_id, id, name, sort, is_main, is_archive, raw)
               SELECT $1, u.id, u.name, u.sort, u.is_main, u.is_archive, u.raw::jsonb
               FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bool[], $6::bool[],
                           $7::text[]) AS u(id, name, sort, is_main, is_archive, raw)
               ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
                   sort = EXCLUDED.sort, is_main = EXCLUDED.is_main,
                   is_archive = EXCLUDED.is_archive, raw = EXCLUDED.raw, is_deleted = false,
                   deleted_at = NULL, synced_at = now()
               WHERE p.raw IS DISTINCT FROM EXCLUDED.raw OR p.is_deleted
               RETURNING p.id, p.name)
           SELECT up.id FROM up LEFT JOIN old ON old.id = up.id
           WHERE old.name IS DISTINCT FROM up.name""",
        account_id,
        p_ids,
        [p.name for p in pipelines],
        [p.sort for p in pipelines],
        [p.is_main for p in pipelines],
        [p.is_archive for p in pipelines],
        [p.raw for p in pipelines],
    )
    await conn.execute(
        """UPDATE pipelines SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted AND NOT id = ANY($2::bigint[])""",
        account_id,
        p_ids,
    )
    statuses = [s for p in pipelines for s in p.statuses]
    changed = await conn.fetch(
        """WITH old AS (SELECT pipeline_id, id, name FROM statuses WHERE account_id = $1),
           up AS (
               INSERT INTO statuses AS s (account_id, pipeline_id, id, name, sort, color, type,
                                          is_editable, raw)
               SELECT $1, u.p, u.id, u.name, u.sort, u.color, u.type, u.is_editable,
                      u.raw::jsonb
               FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::text[],
                           $7::int[], $8::bool[], $9::text[])
                   AS u(p, id, name, sort, color, type, is_editable, raw)
               ON CONFLICT (account_id, pipeline_id, id) DO UPDATE SET name = EXCLUDED.name,
                   sort = EXCLUDED.sort, color = EXCLUDED.color, type = EXCLUDED.type,
                   is_editable = EXCLUDED.is_editable, raw = EXCLUDED.raw, is_deleted = false,
                   deleted_at = NULL, synced_at = now()
               WHERE s.raw IS DISTINCT FROM EXCLUDED.raw OR s.is_deleted
               RETURNING s.pipeline_id, s.id, s.name)
           SELECT up.pipeline_id, up.id FROM up
           LEFT JOIN old ON old.pipeline_id = up.pipeline_id AND old.id = up.id
           WHERE old.name IS DISTINCT FROM up.name""",
        account_id,
        [s.pipeline_id for s in statuses],
        [s.id for s in statuses],
        [s.name for s in statuses],
        [s.sort for s in statuses],
        [s.color for s in statuses],
        [s.type for s in statuses],
        [s.is_editable for s in statuses],
        [s.raw for s in statuses],
    )
    await conn.execute(
        """UPDATE statuses s SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted
             AND NOT EXISTS (SELECT 1 FROM unnest($2::bigint[], $3::bigint[]) AS u(p, id)
                             WHERE u.p = s.pipeline_id AND u.id = s.id)""",
        account_id,
        [s.pipeline_id for s in statuses],
        [s.id for s in statuses],
    )
    return [r["id"] for r in renamed], [(r["pipeline_id"], r["id"]) for r in changed]


async def replace_users(conn: Conn, account_id: int, users: Sequence[User]) -> list[int]:
    """Upsert every user; tombstone those no longer listed. Returns users renamed or new."""
    ids = [u.id for u in users]
    changed = await conn.fetch(
        """WITH old AS (SELECT id, name FROM users WHERE account_id = $1),
           up AS (
               INSERT INTO users AS t (account_id, id, name, email, is_active, raw)
               SELECT $1, u.id, u.name, u.email, u.is_active, u.raw::jsonb
               FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[])
                   AS u(id, name, email, is_active, raw)
               ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
                   email = EXCLUDED.email, is_active = EXCLUDED.is_active, raw = EXCLUDED.raw,
                   is_deleted = false, deleted_at = NULL, synced_at = now()
               WHERE t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_deleted
               RETURNING t.id, t.name)
           SELECT up.id FROM up LEFT JOIN old ON old.id = up.id
           WHERE old.name IS DISTINCT FROM up.name""",
        account_id,
        ids,
        [u.name for u in users],
        [u.email for u in users],
        [u.is_active for u in users],
        [u.raw for u in users],
    )
    await conn.execute(
        """UPDATE users SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND NOT is_deleted AND NOT id = ANY($2::bigint[])""",
        account_id,
        ids,
    )
    return [r["id"] for r in changed]


async def upsert_loss_reasons(
    conn: Conn, account_id: int, reasons: Sequence[LossReason], *, complete: bool
) -> list[int]:
    """Upsert loss reasons (from the dictionary, or embedded in leads); with a ``complete``
    listing, tombstone those no longer listed. Returns reasons renamed or new."""
    unique = {r.id: r for r in reasons}
    changed = await conn.fetch(
        """WITH old AS (SELECT id, name FROM loss_reasons WHERE account_id = $1),
           up AS (
               INSERT INTO loss_reasons AS t (account_id, id, name, sort, raw)
               SELECT $1, u.id, u.name, u.sort, u.raw::jsonb
               FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[])
                   AS u(id, name, sort, raw)
               ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
                   sort = EXCLUDED.sort, raw = EXCLUDED.raw, is_deleted = false,
                   deleted_at = NULL, synced_at = now()
               WHERE t.name IS DISTINCT FROM EXCLUDED.name OR t.sort IS DISTINCT FROM
                   EXCLUDED.sort OR t.is_deleted
               RETURNING t.id, t.name)
           SELECT up.id FROM up LEFT JOIN old ON old.id = up.id
           WHERE old.name IS DISTINCT FROM up.name""",
        account_id,
        list(unique),
        [r.name for r in unique.values()],
        [r.sort for r in unique.values()],
        [r.raw for r in unique.values()],
    )
    if complete:
        await conn.execute(
            """UPDATE loss_reasons SET is_deleted = true, deleted_at = now()
               WHERE account_id = $1 AND NOT is_deleted AND NOT id = ANY($2::bigint[])""",
            account_id,
            list(unique),
        )
    return [r["id"] for r in changed]


async def replace_custom_fields(
    conn: Conn, account_id: int, entity_type: str, fields: Sequence[CustomField]
) -> None:
    """Upsert one entity type's field definitions and their options; tombstone fields no
    longer listed (their values stay, as Kommo keeps them in the entities' raw copies)."""
    ids = [f.id for f in fields]
    await conn.execute(
        """INSERT INTO custom_fields AS t (account_id, entity_type, id, name, type, code, sort,
                                           raw)
           SELECT $1, $2, u.id, u.name, u.type, u.code, u.sort, u.raw::jsonb
           FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[])
               AS u(id, name, type, code, sort, raw)
           ON CONFLICT (account_id, entity_type, id) DO UPDATE SET name = EXCLUDED.name,
               type = EXCLUDED.type, code = EXCLUDED.code, sort = EXCLUDED.sort,
               raw = EXCLUDED.raw, is_deleted = false, deleted_at = NULL, synced_at = now()
           WHERE t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_deleted""",
        account_id,
        entity_type,
        ids,
        [f.name for f in fields],
        [f.type for f in fields],
        [f.code for f in fields],
        [f.sort for f in fields],
        [f.raw for f in fields],
    )
    await conn.execute(
        """UPDATE custom_fields SET is_deleted = true, deleted_at = now()
           WHERE account_id = $1 AND entity_type = $2 AND NOT is_deleted
             AND NOT id = ANY($3::bigint[])""",
        account_id,
        entity_type,
        ids,
    )
    options = [(f.id, o) for f in fields for o in f.options]
    await conn.execute(
        "DELETE FROM custom_field_enums WHERE account_id = $1 AND field_id = ANY($2::bigint[])",
        account_id,
        ids,
    )
    if options:
        await conn.execute(
            """INSERT INTO custom_field_enums (account_id, field_id, id, value, sort)
               SELECT $1, u.f, u.id, u.value, u.sort
               FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::int[])
                   AS u(f, id, value, sort)
               ON CONFLICT DO NOTHING""",
            account_id,
            [f for f, _ in options],
            [o.id for _, o in options],
            [o.value for _, o in options],
            [o.sort for _, o in options],
        )


async def unknown_fields(
    conn: Conn, account_id: int, entity_type: str, field_ids: Sequence[int]
) -> bool:
    """Whether any of these field ids has no definition yet (time to read the definitions)."""
    if not field_ids:
        return False
    missing = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM unnest($3::bigint[]) AS u(id)
                          WHERE NOT EXISTS (SELECT 1 FROM custom_fields f
                                            WHERE f.account_id = $1 AND f.entity_type = $2
                                              AND f.id = u.id))""",
        account_id,
        entity_type,
        sorted(set(field_ids)),
    )
    return bool(missing)


async def missing_for_leads(conn: Conn, account_id: int, lead_ids: Sequence[int]) -> set[str]:
    """Which dictionaries lack an entry these leads point at: ``pipelines`` (a stage),
    ``users`` (a responsible user; only once users are mirrored at all: a token without admin
    rights never gets them) and ``loss_reasons``."""
    if not lead_ids:
        return set()
    row = await conn.fetchrow(
        """SELECT
             bool_or(NOT EXISTS (SELECT 1 FROM statuses s WHERE s.account_id = l.account_id
                                 AND s.pipeline_id = l.pipeline_id AND s.id = l.status_id))
                 AS pipelines,
             bool_or(l.responsible_user_id IS NOT NULL
                     AND EXISTS (SELECT 1 FROM users u WHERE u.account_id = l.account_id)
                     AND NOT EXISTS (SELECT 1 FROM users u WHERE u.account_id = l.account_id
                                     AND u.id = l.responsible_user_id)) AS users,
             bool_or(l.loss_reason_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM loss_reasons r
                                     WHERE r.account_id = l.account_id
                                       AND r.id = l.loss_reason_id)) AS loss_reasons
           FROM leads l WHERE l.account_id = $1 AND l.id = ANY($2::bigint[])""",
        account_id,
        list(lead_ids),
    )
    return {name for name in ("pipelines", "users", "loss_reasons") if row and row[name]}
