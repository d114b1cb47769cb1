"""The read API: where a consumer that (re)connects catches up.

``GET /api/leads/{id}`` answers the ``data`` object of the lead's latest ``lead_update``;
``GET /api/leads?changed_after=V&limit=N`` answers ``{"items": [...], "next_after": V'}``, the
changes after version ``V`` in ascending order, tombstones included (``action: "deleted"``).
Both take the WebSocket token (``Authorization: Bearer`` or ``?token=``).

The JSON is built by Postgres from ``leads.shown`` and spliced as text: a row is never parsed
and re-serialised here.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import asyncpg
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.settings import Settings

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_BIGINT = (1 << 63) - 1

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


def presented_token(conn: HTTPConnection) -> str | None:
    """The token presented: an ``Authorization: Bearer`` header first, then ``?token=``."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get("token") or None


def authorized(settings: Settings, conn: HTTPConnection) -> bool:
    """Whether ``conn`` presents one of ``settings.ws_tokens``, compared in constant time."""
    token = presented_token(conn)
    if token is None:
        return False
    given = token.encode()
    ok = False
    for known in settings.ws_tokens:  # no early exit: every token is compared
        ok |= hmac.compare_digest(given, known.encode())
    return ok


async def latest_version(pool: asyncpg.Pool) -> int:
    """The newest version in the mirror (0 when empty); served by ``leads_version_idx``."""
    value = await pool.fetchval("SELECT COALESCE(max(version), 0) FROM leads")
    return int(value)


async def fetch_lead(pool: asyncpg.Pool, lead_id: int, account_id: int | None) -> str | None:
    """The latest ``data`` object of one lead as JSON text, or ``None`` if never shown."""
    value = await pool.fetchval(_LEAD_SQL, lead_id, account_id)
    return str(value) if value is not None else None


async def fetch_changes(
    pool: asyncpg.Pool, after: int, limit: int, account_id: int | None
) -> tuple[list[str], int]:
    """Up to ``limit`` ``data`` objects (JSON text) after version ``after``, and the next cursor."""
    rows = await pool.fetch(_CHANGES_SQL, after, limit, account_id)
    items = [str(r["data"]) for r in rows]
    return items, int(rows[-1]["version"]) if rows else after


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _integer(raw: str | None, default: int, low: int, high: int) -> int | None:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if low <= value <= high else None


def _json(body: str) -> Response:
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def routes(settings: Settings, pool: Callable[[], asyncpg.Pool]) -> list[BaseRoute]:
    """The read API's routes; ``pool`` returns the process's pool once the lifespan opened it."""
    account = settings.kommo_account_id

    async def lead(request: Request) -> Response:
        if not authorized(settings, request):
            return _error(401, "missing or invalid token")
        lead_id = _integer(request.path_params["lead_id"], 0, 1, _MAX_BIGINT)
        if lead_id is None:
            return _error(400, "lead id must be a positive integer")
        body = await fetch_lead(pool(), lead_id, account)
        if body is None:
            return _error(404, f"lead {lead_id} not found")
        return _json(body)

    async def changes(request: Request) -> Response:
        if not authorized(settings, request):
            return _error(401, "missing or invalid token")
        after = _integer(request.query_params.get("changed_after"), 0, 0, _MAX_BIGINT)
        if after is None:
            return _error(400, "changed_after must be a non-negative integer (a version)")
        limit = _integer(request.query_params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        if limit is None:
            return _error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        items, next_after = await fetch_changes(pool(), after, limit, account)
        return _json(f'{{"items":[{",".join(items)}],"next_after":{next_after}}}')

    return [
        Route("/api/leads", changes, methods=["GET"]),
        Route("/api/leads/{lead_id}", lead, methods=["GET"]),
    ]
