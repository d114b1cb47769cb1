"""The web process: ``create_app(settings)`` declares the whole Starlette app in one call."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.resources import Resources, open_resources
from service.settings import Settings


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


def create_app(settings: Settings) -> Starlette:
    web = Web(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_resources(settings) as res:
            web._resources = res
            try:
                yield
            finally:
                web._resources = None

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [Route("/healthz", healthz)]
    return Starlette(routes=routes, lifespan=lifespan)
