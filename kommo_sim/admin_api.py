"""Webhook subscriptions (``/api/v4/webhooks``, API.md §7.8) and the OAuth token endpoint
(``POST /oauth2/access_token``, §5)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.gate import problem
from kommo_sim.hal import hal, json_body, no_content
from kommo_sim.oauth import OAuthError
from kommo_sim.query import BadRequest

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator


class AdminApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[Route]:
        return [
            Route("/api/v4/webhooks", self.webhooks_get, methods=["GET"]),
            Route("/api/v4/webhooks", self.webhooks_post, methods=["POST"]),
            Route("/api/v4/webhooks", self.webhooks_delete, methods=["DELETE"]),
            Route("/oauth2/access_token", self.access_token, methods=["POST"]),
        ]

    async def webhooks_get(self, request: Request) -> Response:
        wanted = request.query_params.get("filter[destination]")
        found = [
            d.to_json()
            for d in self.sim.webhooks.destinations.values()
            if wanted is None or d.destination == wanted
        ]
        if not found:
            return no_content()
        return hal({"_total_items": len(found), "_embedded": {"webhooks": found}})

    async def webhooks_post(self, request: Request) -> Response:
        """Subscribe (or update) a destination; only documented setting names are accepted."""
        body = await json_body(request)
        destination, settings = body.get("destination"), body.get("settings")
        if not isinstance(destination, str) or not destination.startswith(("http://", "https://")):
            raise BadRequest("destination", "This value is not a valid URL.")
        if not isinstance(settings, list) or not settings:
            raise BadRequest("settings", "This value should not be blank.")
        try:
            dest = self.sim.webhooks.subscribe(
                destination,
                [str(s) for s in settings],
                int(body.get("sort", 1)),
                self.sim.state.users[0].id,
            )
        except ValueError as exc:
            raise BadRequest("settings", str(exc)) from None
        return hal(dest.to_json(), status=201)

    async def webhooks_delete(self, request: Request) -> Response:
        body = await json_body(request)
        if self.sim.webhooks.unsubscribe(str(body.get("destination"))):
            return no_content()
        return problem(404, "Not Found", "Webhook not found")

    async def access_token(self, request: Request) -> Response:
        body = await json_body(request)
        try:
            answer = self.sim.tokens.grant(body)
        except OAuthError as exc:
            return Response(
                json.dumps(
                    {
                        "hint": exc.hint,
                        "title": "Некорректный запрос",
                        "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                        "status": 400,
                        "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
                    },
                    ensure_ascii=False,
                ),
                status_code=400,
                media_type="application/problem+json",
            )
        return Response(json.dumps(answer), media_type="application/json")
