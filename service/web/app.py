"""The web process: ``create_app(settings)`` declares the whole Starlette app in one call.

The lifespan opens the process's resources and yields them as the app's state
(:mod:`service.web.state`); the gateway's hub starts and stops with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from service.gateway.hub import Hub
from service.resources import open_resources
from service.settings import Settings
from service.web import readapi
from service.web.health import health_routes
from service.web.page import page_routes
from service.web.webhooks import webhook_routes


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, *, hub: Hub | None = None) -> Starlette:
    """``hub``: the WebSocket gateway's hub, injected by tests and by the server."""
    hub = Hub(settings) if hub is None else hub

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with open_resources(settings) as res:
            await hub.start(res.pool)
            try:
                yield {"resources": res}
            finally:
                await hub.stop()

    routes = [
        Route("/healthz", healthz),
        *health_routes(settings),
        *page_routes(),
        *webhook_routes(settings),
        *readapi.routes(settings),
        WebSocketRoute("/ws", hub.endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
