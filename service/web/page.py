"""The live page at ``GET /``: one self-contained HTML file (``service/web/static/index.html``).

The page is public (it holds no data); it asks for a token (from the URL fragment
``#token=…`` or a small form) and then reads ``/ws``, ``/api/leads`` and ``/api/status`` with
it. No build step, no CDN: inline CSS and vanilla JavaScript, so it works offline.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def page_routes() -> list[BaseRoute]:
    html = resources.files("service.web").joinpath("static/index.html").read_text("utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(html, headers=_HEADERS)

    return [Route("/", index, methods=["GET"])]
