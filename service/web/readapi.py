"""The read API: where a consumer that (re)connects catches up.

``GET /api/leads/{id}`` answers the ``data`` object of the lead's latest ``lead_update``;
``GET /api/leads?changed_after=V&limit=N`` answers ``{"items": [...], "next_after": V'}``, the
changes after version ``V`` in ascending order, tombstones included (``action: "deleted"``).
Both take the WebSocket token (``Authorization: Bearer`` or ``?token=``). The JSON comes from
Postgres as text (:mod:`service.store.reads`) and is spliced, never re-serialised.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.settings import Settings
from service.store import reads
from service.web.auth import authorized
from service.web.state import resources

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_BIGINT = (1 << 63) - 1


def error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _integer(raw: str | None, default: int, low: int, high: int) -> int | None:
    """``raw`` as an integer from ``low`` to ``high``; None for anything else. The length is
    checked first: Python refuses ``int()`` of more than 4,300 digits (and it would be slow)."""
    if raw is None:
        return default
    if len(raw) > len(str(high)) or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if low <= value <= high else None


def json_text(body: str) -> Response:
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


def routes(settings: Settings) -> list[BaseRoute]:
    account = settings.kommo_account_id

    async def lead(request: Request) -> Response:
        if not authorized(settings, request):
            return error(401, "missing or invalid token")
        lead_id = _integer(request.path_params["lead_id"], 0, 1, _MAX_BIGINT)
        if lead_id is None:
            return error(400, f"lead id must be a positive integer up to {_MAX_BIGINT}")
        async with resources(request).pool.acquire() as conn:
            body = await reads.lead_data(conn, lead_id, account)
        if body is None:
            return error(404, f"lead {lead_id} not found")
        return json_text(body)

    async def changes(request: Request) -> Response:
        if not authorized(settings, request):
            return error(401, "missing or invalid token")
        after = _integer(request.query_params.get("changed_after"), 0, 0, _MAX_BIGINT)
        if after is None:
            return error(
                400, f"changed_after must be a non-negative integer (a version) up to {_MAX_BIGINT}"
            )
        limit = _integer(request.query_params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        if limit is None:
            return error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        async with resources(request).pool.acquire() as conn:
            items, next_after = await reads.changes_after(conn, after, limit, account)
        return json_text(f'{{"items":[{",".join(items)}],"next_after":{next_after}}}')

    return [
        Route("/api/leads", changes, methods=["GET"]),
        Route("/api/leads/{lead_id}", lead, methods=["GET"]),
    ]
