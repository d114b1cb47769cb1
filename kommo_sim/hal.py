"""What every API endpoint answers with: HAL bodies, 204s, page links, the base of hrefs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from kommo_sim.query import BadRequest, ListQuery

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

HAL = "application/hal+json"
JSON = dict[str, Any]


def hal(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(data, status_code=status, media_type=HAL)


def no_content() -> Response:
    return Response(status_code=204)


def base_of(sim: Simulator, request: Request) -> str:
    """Where hrefs point: the configured base, else the request's scheme, host and mount
    prefix (an account of a fleet is served under ``/<subdomain>``)."""
    root = request.scope.get("root_path", "")
    return sim.config.base_url or f"{request.url.scheme}://{request.url.netloc}{root}"


def page_links(base: str, path: str, q: ListQuery, has_next: bool) -> JSON:
    href = f"{base}{path}?"
    links: JSON = {"self": {"href": href + q.query_string()}}
    if has_next:
        links["next"] = {"href": href + q.query_string(q.page + 1)}
    if q.page > 1:
        links["first"] = {"href": href + q.query_string(1)}
        links["prev"] = {"href": href + q.query_string(q.page - 1)}
    return links


def paged(ids: list[Any], q: ListQuery) -> tuple[list[Any], bool] | None:
    """The page's slice and whether more follow; None past the end (answered with 204)."""
    start = (q.page - 1) * q.limit
    if start >= len(ids):
        return None
    return ids[start : start + q.limit], start + q.limit < len(ids)


def path_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not raw.isdigit():
        raise HTTPException(404)
    return int(raw)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("body", "Request data can not be empty") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "Request data can not be empty")
    return body
