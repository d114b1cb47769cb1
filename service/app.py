"""The web process: ``create_app(settings)`` declares the whole Starlette app in one call."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from service import readapi
from service.gateway import Hub
from service.health import health_routes
from service.page import page_routes
from service.resources import Resources, open_resources
from service.settings import Settings
from service.webhooks import webhook_routes


@dataclasses.dataclass
class Web:
    """What handlers share: the settings, and the resources once the lifespan opened them."""

    settings: Settings
    _resources: Resources | None = None

    @property
    def res(self) -> Resources:
        if self._resources is None:
            raise RuntimeError("resources are not open (outside the app's lifespan)")
        return self._resources


def create_app(settings: Settings, *, hub: Hub | None = None) -> Starlette:
    """``hub``: the WebSocket gateway's hub, injected by tests and by ``gateway.Server``."""
    web = Web(settings)
    hub = Hub(settings) if hub is None else hub

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_resources(settings) as res:
            web._resources = res
            await hub.start(res.pool)
            try:
                yield
            finally:
                await hub.stop()
                web._resources = None

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/healthz", healthz),
        *health_routes(web),
        *page_routes(),
        *webhook_routes(web),
        *readapi.routes(settings, lambda: web.res.pool),
        WebSocketRoute("/ws", hub.endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
