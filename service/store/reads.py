"""Reads for consumers and operators: the catch-up read API, the newest version, counts.

The read API's JSON is built by Postgres from ``leads.shown`` and returned as text, so a row is
never parsed and re-serialised on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.store import Conn

# The `data` object of a lead_update, in the message's key order.
_DATA = (
    "json_build_object('action', last_action, 'version', version,"
    " 'source', last_source, 'lead', shown)::text"
)
_LEAD_SQL = f"""
    SELECT {_DATA} FROM leads
    WHERE id = $1 AND shown IS NOT NULL AND ($2::bigint IS NULL OR account_id = $2)
    ORDER BY version DESC LIMIT 1"""
_CHANGES_SQL = f"""
    SELECT version, {_DATA} AS data FROM leads
    WHERE version > $1 AND shown IS NOT NULL AND ($3::bigint IS NULL OR account_id = $3)
    ORDER BY version LIMIT $2"""


async def latest_version(conn: Conn) -> int:
    """The newest version in the mirror (0 when empty); served by ``leads_version_idx``."""
    return int(await conn.fetchval("SELECT COALESCE(max(version), 0) FROM leads"))


async def lead_data(conn: Conn, lead_id: int, account_id: int | None) -> str | None:
    """The latest ``data`` object of one lead as JSON text, or ``None`` if never shown."""
    value = await conn.fetchval(_LEAD_SQL, lead_id, account_id)
    return str(value) if value is not None else None


async def changes_after(
    conn: Conn, after: int, limit: int, account_id: int | None
) -> tuple[list[str], int]:
    """Up to ``limit`` ``data`` objects (JSON text) after version ``after``, and the next cursor."""
    rows = await conn.fetch(_CHANGES_SQL, after, limit, account_id)
    return [str(r["data"]) for r in rows], int(rows[-1]["version"]) if rows else after


@dataclass(frozen=True)
class Counts:
    leads: int
    contacts: int
    companies: int
    latest_version: int | None


async def counts(conn: Conn) -> Counts:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM leads WHERE NOT is_deleted) AS leads,
                  (SELECT count(*) FROM contacts WHERE NOT is_deleted) AS contacts,
                  (SELECT count(*) FROM companies WHERE NOT is_deleted) AS companies,
                  (SELECT max(version) FROM leads) AS version"""
    )
    assert row is not None
    return Counts(row["leads"], row["contacts"], row["companies"], row["version"])


async def mirrored_accounts(conn: Conn) -> set[int]:
    """The accounts this deployment mirrors (every account has its cursors)."""
    rows = await conn.fetch("SELECT DISTINCT account_id FROM sync_cursors")
    return {int(r["account_id"]) for r in rows}
