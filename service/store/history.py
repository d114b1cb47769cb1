"""The stage history: ``lead_status_changes``, one row per Kommo ``lead_status_changed`` event.

Rows come from the events the reconcile already reads and from the history import; both may
bring the same event, and the key (account, event id) keeps it once.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.records import Event
from service.store import Conn


async def record_status_changes(conn: Conn, account_id: int, events: Sequence[Event]) -> int:
    """Insert the status changes among ``events`` not recorded yet; how many were new."""
    moves = [e for e in events if e.type == "lead_status_changed" and e.status_after]
    if not moves:
        return 0
    rows = await conn.fetch(
        """INSERT INTO lead_status_changes (account_id, event_id, lead_id, changed_at, changed_by,
               pipeline_id_before, status_id_before, pipeline_id, status_id)
           SELECT $1, u.e, u.l, to_timestamp(u.at), u.by, u.pb, u.sb, u.p, u.s
           FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                       $7::bigint[], $8::bigint[], $9::bigint[]) AS u(e, l, at, by, pb, sb, p, s)
           ON CONFLICT (account_id, event_id) DO NOTHING
           RETURNING event_id""",
        account_id,
        [e.id for e in moves],
        [e.entity_id for e in moves],
        [e.created_at for e in moves],
        [e.created_by for e in moves],
        [e.status_before[0] if e.status_before else None for e in moves],
        [e.status_before[1] if e.status_before else None for e in moves],
        [e.status_after[0] for e in moves if e.status_after],
        [e.status_after[1] for e in moves if e.status_after],
    )
    return len(rows)
