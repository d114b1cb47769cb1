"""What each lead shows consumers, and its versions.

After a batch's writes, :func:`refresh_leads` recomputes what each touched lead shows (the
``lead`` object of ``lead_update``, ``_REFRESH`` below, one statement for the batch), and only
where that really changed bumps the lead's ``version`` and returns the ``lead_update`` data to
publish once the transaction has committed. The other functions find which leads show a
contact, a tag, …, so that a change of those re-shows exactly them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from service.kinds import LEADS, EntityKind
from service.store import Conn


@dataclass(frozen=True)
class LeadChange:
    """One ``lead_update`` of a batch: its version, and the message as Postgres built it."""

    version: int
    action: str
    source: str
    payload: str  # the whole envelope, JSON text, as queued in lead_outbox
    updated_at: str | None = None  # the lead's updated_at as shown (ISO 8601)
    previous_updated_at: str | None = None  # what consumers were shown before (not sent)

    @property
    def edited(self) -> bool:
        """Did the lead itself change in Kommo (not only a contact, tag or link it shows)?"""
        return self.updated_at != self.previous_updated_at

    @property
    def lead(self) -> dict[str, Any]:
        """The ``lead`` object of the message (parsed on demand)."""
        return dict(json.loads(self.payload)["data"]["lead"])


async def lock_account(conn: Conn, account_id: int) -> None:
    """Serialise the mirror's write transactions for one account (held until commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(7001, $1::int)", account_id % (1 << 31))


async def leads_showing(
    conn: Conn, account_id: int, kind: EntityKind, ids: Collection[int]
) -> list[int]:
    """The leads linked to these entities of ``kind`` (through the leads' link tables)."""
    tables = [link.table for link in LEADS.links if link.target == kind.owner]
    if not ids or not tables:
        return []
    found: set[int] = set()
    for table in tables:
        rows = await conn.fetch(
            f"""SELECT DISTINCT lead_id FROM {table}
                WHERE account_id = $1 AND {kind.owner} = ANY($2::bigint[])""",
            account_id,
            list(ids),
        )
        found.update(r["lead_id"] for r in rows)
    return sorted(found)


async def leads_with_tags(conn: Conn, account_id: int, tag_ids: Collection[int]) -> list[int]:
    if not tag_ids:
        return []
    rows = await conn.fetch(
        "SELECT DISTINCT lead_id FROM lead_tags WHERE account_id = $1 AND tag_id = ANY($2)",
        account_id,
        list(tag_ids),
    )
    return [r["lead_id"] for r in rows]


async def leads_showing_names(
    conn: Conn,
    account_id: int,
    pipelines: Collection[int] = (),
    statuses: Collection[tuple[int, int]] = (),
    users: Collection[int] = (),
    loss_reasons: Collection[int] = (),
) -> list[int]:
    """The leads that show one of these dictionary entries by name (a rename re-shows them)."""
    if not (pipelines or statuses or users or loss_reasons):
        return []
    rows = await conn.fetch(
        """SELECT l.id FROM leads l
           WHERE l.account_id = $1 AND (
               l.pipeline_id = ANY($2::bigint[])
               OR EXISTS (SELECT 1 FROM unnest($3::bigint[], $4::bigint[]) AS s(p, id)
                          WHERE s.p = l.pipeline_id AND s.id = l.status_id)
               OR l.responsible_user_id = ANY($5::bigint[])
               OR l.loss_reason_id = ANY($6::bigint[]))
           ORDER BY l.id""",
        account_id,
        list(pipelines),
        [p for p, _ in statuses],
        [s for _, s in statuses],
        list(users),
        list(loss_reasons),
    )
    return [r["id"] for r in rows]


_SHOWN = """
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
    SELECT p.contact_id,
           COALESCE(jsonb_agg(p.normalized ORDER BY p.position)
                        FILTER (WHERE p.normalized IS NOT NULL), '[]'::jsonb) AS phones,
           COALESCE(jsonb_agg(p.raw ORDER BY p.position)
                        FILTER (WHERE p.normalized IS NULL), '[]'::jsonb) AS unparsed
    FROM contact_phones p
    WHERE p.account_id = $1 AND p.contact_id IN (SELECT contact_id FROM links)
    GROUP BY p.contact_id
), email_lists AS (
    SELECT e.contact_id, jsonb_agg(e.normalized ORDER BY e.position) AS emails
    FROM contact_emails e
    WHERE e.account_id = $1 AND e.normalized IS NOT NULL
      AND e.contact_id IN (SELECT contact_id FROM links)
    GROUP BY e.contact_id
), contact_lists AS (
    SELECT k.lead_id,
           jsonb_agg(jsonb_build_object('id', k.contact_id, 'is_main', k.is_main, 'name', k.name,
                                        'phones', COALESCE(pl.phones, '[]'::jsonb),
                                        'emails', COALESCE(el.emails, '[]'::jsonb),
                                        'unparsed_phones', COALESCE(pl.unparsed, '[]'::jsonb))
                     ORDER BY k.is_main DESC, k.contact_id) AS contacts
    FROM links k
    LEFT JOIN phone_lists pl ON pl.contact_id = k.contact_id
    LEFT JOIN email_lists el ON el.contact_id = k.contact_id
    GROUP BY k.lead_id
), company_lists AS (
    SELECT lc.lead_id,
           jsonb_agg(jsonb_build_object('id', co.id, 'name', co.name) ORDER BY co.id) AS companies
    FROM lead_companies lc
    JOIN companies co ON co.account_id = lc.account_id AND co.id = lc.company_id
    WHERE lc.account_id = $1 AND lc.lead_id = ANY($2::bigint[]) AND NOT co.is_deleted
    GROUP BY lc.lead_id
), fresh AS (
    SELECT l.id, l.shown AS old, jsonb_build_object(
        'id', l.id,
        'name', l.name,
        'price', l.price,
        'pipeline_id', l.pipeline_id,
        'pipeline_name', p.name,
        'status_id', l.status_id,
        'status_name', s.name,
        'responsible_user_id', l.responsible_user_id,
        'responsible_user_name', u.name,
        'created_at', kommo_iso(l.created_at),
        'updated_at', kommo_iso(l.updated_at),
        'closed_at', kommo_iso(l.closed_at),
        'is_deleted', l.is_deleted,
        'tags', COALESCE(tl.tags, '[]'::jsonb),
        'contacts', COALESCE(cl.contacts, '[]'::jsonb),
        'companies', COALESCE(col.companies, '[]'::jsonb),
        'loss_reason', CASE WHEN r.id IS NULL THEN NULL
                            ELSE jsonb_build_object('id', r.id, 'name', r.name) END,
        'custom_fields', l.custom_fields) AS shown
    FROM leads l
    LEFT JOIN tag_lists tl ON tl.lead_id = l.id
    LEFT JOIN contact_lists cl ON cl.lead_id = l.id
    LEFT JOIN company_lists col ON col.lead_id = l.id
    LEFT JOIN pipelines p ON p.account_id = l.account_id AND p.id = l.pipeline_id
    LEFT JOIN statuses s ON s.account_id = l.account_id AND s.pipeline_id = l.pipeline_id
                        AND s.id = l.status_id
    LEFT JOIN users u ON u.account_id = l.account_id AND u.id = l.responsible_user_id
    LEFT JOIN loss_reasons r ON r.account_id = l.account_id AND r.id = l.loss_reason_id
    WHERE l.account_id = $1 AND l.id = ANY($2::bigint[])
), changed AS (
    SELECT id, shown, old FROM fresh WHERE old IS DISTINCT FROM shown ORDER BY id
)
"""
"""What a batch of leads shows (the ``lead`` object of lead_update), computed for the batch in
one statement; ``changed`` holds the leads where it differs from what was last shown."""

_REFRESH = (
    _SHOWN
    + """
UPDATE leads l SET
    shown = c.shown,
    last_source = $3,
    last_action = CASE
        WHEN c.old IS NULL THEN
            CASE WHEN (c.shown->>'is_deleted')::bool THEN 'deleted' ELSE 'created' END
        WHEN (c.shown->>'is_deleted')::bool AND NOT (c.old->>'is_deleted')::bool THEN 'deleted'
        WHEN NOT (c.shown->>'is_deleted')::bool AND (c.old->>'is_deleted')::bool THEN 'restored'
        ELSE 'updated' END
FROM changed c
WHERE l.account_id = $1 AND l.id = c.id
RETURNING l.id, l.last_action, c.shown->>'updated_at' AS updated_at,
    c.old->>'updated_at' AS previous_updated_at
"""
)
"""Store what changed; the versions come next, under the version lock."""

_QUIET = (
    _SHOWN
    + """
UPDATE leads l SET shown = c.shown
FROM changed c
WHERE l.account_id = $1 AND l.id = c.id AND c.old IS NOT NULL
  AND lead_shown_before_004(c.old) = lead_shown_before_004(c.shown)
RETURNING l.id
"""
)
"""Store, without a new version, what changed only in the fields sql/004 added (consumers see
them on each lead's next change); a lead that changed in what it showed before is left."""


async def refresh_leads(
    conn: Conn, account_id: int, lead_ids: Collection[int], source: str
) -> list[LeadChange]:
    """Recompute what these leads show; where it changed, a new version and a ``lead_update``
    in the outbox (sql/003_outbox.sql). Returns the changes, ascending by version.

    Call it inside the transaction that holds :func:`lock_account`: writers are serialised per
    account, so what a lead shows is computed from a state no other writer is changing. The
    versions are taken last, under a deployment-wide lock held until commit, so that they
    become visible in order across accounts.
    """
    if not lead_ids:
        return []
    shown = await conn.fetch(_REFRESH, account_id, sorted(set(lead_ids)), source)
    if not shown:
        return []
    rows = await conn.fetch(
        "SELECT lead_id, version, payload FROM lead_assign_versions($1, $2::bigint[])",
        account_id,
        [r["id"] for r in shown],
    )
    by_id = {r["id"]: r for r in shown}
    changes = [
        LeadChange(
            r["version"],
            by_id[r["lead_id"]]["last_action"],
            source,
            r["payload"],
            by_id[r["lead_id"]]["updated_at"],
            by_id[r["lead_id"]]["previous_updated_at"],
        )
        for r in rows
    ]
    changes.sort(key=lambda c: c.version)
    return changes


async def refresh_quietly(conn: Conn, account_id: int, lead_ids: Collection[int]) -> list[int]:
    """Recompute what these leads show, storing it without a new version or a message where only
    the fields this release added changed (a schema upgrade, see CHANGELOG.md). Returns the
    other leads: never shown before, or really changed; those need :func:`refresh_leads`
    (consumers must hear of them)."""
    if not lead_ids:
        return []
    wanted = sorted(set(lead_ids))
    quiet = {r["id"] for r in await conn.fetch(_QUIET, account_id, wanted)}
    return [i for i in wanted if i not in quiet]
