"""The dictionaries leads point at: pipelines with their statuses, and users.

Each is replaced from a complete listing (the pipelines endpoint has no paging; the users list
is read to its end): rows Kommo lists are upserted, rows it no longer lists are tombstoned.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.records import Pipeline, User
from service.store import Conn


async def replace_pipelines(conn: Conn, account_id: int, pipelines: Sequence[Pipeline]) -> None:
    """Upsert every pipeline and its statuses; tombstone those Kommo no longer lists."""
    p_ids = [p.id for p in pipelines]
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


async def replace_users(conn: Conn, account_id: int, users: Sequence[User]) -> None:
    """Upsert every user; tombstone those no longer listed."""
    ids = [u.id for u in users]
    await conn.execute(
        """INSERT INTO users AS t (account_id, id, name, email, is_active, raw)
           SELECT $1, u.id, u.name, u.email, u.is_active, u.raw::jsonb
           FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bool[], $6::text[])
               AS u(id, name, email, is_active, raw)
           ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
               email = EXCLUDED.email, is_active = EXCLUDED.is_active, raw = EXCLUDED.raw,
               is_deleted = false, deleted_at = NULL, synced_at = now()
           WHERE t.raw IS DISTINCT FROM EXCLUDED.raw OR t.is_deleted""",
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
