"""The Starlette app: ``/api/v4/...`` and ``/oauth2/access_token`` as Kommo answers them,
plus the ``/_sim`` control routes (see control.py), all behind the gate (gate.py).

The endpoints live by subject: entity_api.py (leads, contacts, companies), dictionary_api.py
(account, pipelines, users, tags, custom fields, loss reasons), event_api.py, admin_api.py
(webhooks, OAuth).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.admin_api import AdminApi
from kommo_sim.dictionary_api import DictionaryApi
from kommo_sim.entity_api import EntityApi
from kommo_sim.event_api import EventApi
from kommo_sim.gate import Gate, problem, route_path
from kommo_sim.hal import base_of, hal, no_content
from kommo_sim.query import BadRequest

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

__all__ = ["create_app", "hal", "no_content", "routes"]


def routes(sim: Simulator) -> list[Route]:
    entities = EntityApi(sim)
    return [
        *entities.lists(),
        *DictionaryApi(sim).routes(),
        *entities.by_id(),  # after /leads/tags, /leads/pipelines, …: they would match {id}
        *EventApi(sim).routes(),
        *AdminApi(sim).routes(),
    ]


def create_app(sim: Simulator) -> Gate:
    """The whole simulator app: API, OAuth and control routes behind the gate."""
    from kommo_sim.control import control_routes

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return problem(
            400,
            "Bad Request",
            "Request validation failed",
            {
                "validation-errors": [
                    {
                        "request_id": "0",
                        "errors": [{"code": "InvalidType", "path": exc.path, "detail": exc.detail}],
                    }
                ]
            },
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return problem(405, "Method Not Allowed", "Method Not Allowed")
        return problem(
            exc.status_code,
            "Not Found",
            f"Cannot {request.method} {base_of(sim, request)}{route_path(request.scope)}",
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.webhooks.start()
        yield
        await sim.aclose()

    app = Starlette(
        routes=routes(sim) + control_routes(sim),
        lifespan=lifespan,
        exception_handlers={BadRequest: bad_request, HTTPException: http_error},
    )
    return Gate(app, sim)
