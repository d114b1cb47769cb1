"""The web process: ``create_app(settings)`` declares the whole Starlette app in one call.

The lifespan opens the process's resources and yields them as the app's state
(:mod:`service.web.state`); the gateway's hub starts and stops with it. A request that meets
PostgreSQL or Redis down (a lost connection, a refused one, a timeout) is answered 503
``{"error": "..."}`` with ``Retry-After``, in one place: the app's exception handlers. The
process logs one line when a dependency goes and one when ``/readyz`` finds it back. Every HTTP
request is counted by route template and status (:mod:`service.web.traffic`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket

from service import setting_gauges
from service.gateway.hub import Hub
from service.resources import POSTGRES_DOWN, REDIS_DOWN, Outages, failure_of, open_resources
from service.settings import Settings
from service.web import readapi
from service.web.health import health_routes
from service.web.page import page_routes
from service.web.traffic import TrafficMetrics
from service.web.webhooks import webhook_routes

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
WS_TRY_AGAIN_LATER = 1013


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def unavailable_handler(
    settings: Settings, outages: Outages
) -> Callable[[HTTPConnection, Exception], Awaitable[Response | None]]:
    """The handler of every "a dependency is down" exception: 503 and ``Retry-After``."""

    async def unavailable(conn: HTTPConnection, exc: Exception) -> Response | None:
        failure = failure_of(exc, settings)
        if failure is None:  # an OSError of our own making is a bug, not an outage
            raise exc
        outages.lost(failure, "answering 503 until it is back")
        if isinstance(conn, WebSocket):
            with contextlib.suppress(RuntimeError, OSError):
                await conn.close(WS_TRY_AGAIN_LATER)
            return None
        return JSONResponse(
            {"error": f"{failure.service} is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
        )

    return unavailable


def create_app(settings: Settings, *, hub: Hub | None = None) -> Starlette:
    """``hub``: the WebSocket gateway's hub, injected by tests and by the server."""
    hub = Hub(settings) if hub is None else hub
    outages = Outages(log)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        setting_gauges.export(settings)
        async with open_resources(settings) as res:
            await hub.start(res.pool)
            try:
                yield {"resources": res}
            finally:
                await hub.stop()

    routes = [
        Route("/healthz", healthz),
        *health_routes(settings, outages),
        *page_routes(),
        *webhook_routes(settings),
        *readapi.routes(settings),
        WebSocketRoute("/ws", hub.endpoint),
    ]
    unavailable = unavailable_handler(settings, outages)  # for requests and sockets alike
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrafficMetrics)],  # http_requests_total, by route template
        lifespan=lifespan,
        exception_handlers=dict.fromkeys(
            (*POSTGRES_DOWN, *REDIS_DOWN), cast(ExceptionHandler, unavailable)
        ),
    )
