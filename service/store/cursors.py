"""Durable sync cursors (``sync_cursors``): reconcile streams, the events window, backfill
progress, the id sweep. A cursor moves only inside, or after, the commit of its rows."""

from __future__ import annotations

import json
from typing import Any

from service.store import Conn


def json_state(value: Any) -> dict[str, Any]:
    """A jsonb value as asyncpg returns it (text) made into a dict."""
    if value is None:
        return {}
    data = json.loads(value) if isinstance(value, str) else value
    return dict(data or {})


async def get_cursor_state(
    conn: Conn, account_id: int, name: str
) -> tuple[int, dict[str, Any]] | None:
    row = await conn.fetchrow(
        "SELECT value, state FROM sync_cursors WHERE account_id = $1 AND name = $2",
        account_id,
        name,
    )
    return None if row is None else (int(row["value"]), json_state(row["state"]))


async def get_cursor(conn: Conn, account_id: int, name: str) -> int | None:
    value = await conn.fetchval(
        "SELECT value FROM sync_cursors WHERE account_id = $1 AND name = $2", account_id, name
    )
    return None if value is None else int(value)


async def set_cursor(conn: Conn, account_id: int, name: str, value: int, state: Any = None) -> None:
    await conn.execute(
        """INSERT INTO sync_cursors (account_id, name, value, state, updated_at)
           VALUES ($1, $2, $3, COALESCE($4::jsonb, '{}'), now())
           ON CONFLICT (account_id, name) DO UPDATE
               SET value = EXCLUDED.value, state = EXCLUDED.state, updated_at = now()""",
        account_id,
        name,
        value,
        None if state is None else json.dumps(state),
    )


async def set_cursor_if_absent(conn: Conn, account_id: int, name: str, value: int) -> None:
    await conn.execute(
        """INSERT INTO sync_cursors (account_id, name, value) VALUES ($1, $2, $3)
           ON CONFLICT (account_id, name) DO NOTHING""",
        account_id,
        name,
        value,
    )


async def all_cursors(conn: Conn) -> list[tuple[int, str, int, dict[str, Any], Any]]:
    """Every cursor: (account, name, value, state, saved at)."""
    rows = await conn.fetch(
        "SELECT account_id, name, value, state, updated_at FROM sync_cursors"
        " ORDER BY account_id, name"
    )
    return [
        (r["account_id"], r["name"], r["value"], json_state(r["state"]), r["updated_at"])
        for r in rows
    ]
