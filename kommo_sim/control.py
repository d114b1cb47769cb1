"""The ``/_sim`` control API: drive the simulator from another process.

All routes take the simulator's configured (long-lived) bearer token and JSON bodies.

| route | effect |
|---|---|
| ``GET /_sim/state`` | the whole state (``Simulator.dump()``) |
| ``GET /_sim/counters``, ``DELETE /_sim/counters`` | request counts by (endpoint, status); reset |
| ``GET /_sim/faults``, ``POST /_sim/faults`` | read or set fault switches (``{"reset": true}``) |
| ``GET/POST /_sim/clock`` | ``{"advance": s}``, ``{"set": ts}``, ``{"speed": f}`` |
| ``POST /_sim/mutations/{op}`` | call a mutation method with the body as keyword arguments |
| ``POST /_sim/random`` | ``{"seed": n, "count": k}``: k random mutations, their descriptions |
| ``POST /_sim/ratelimit/reset`` | forget the request window, 429 history and block |
| ``GET /_sim/webhooks``, ``POST /_sim/webhooks/drain`` | destinations, stats, attempts; drain |
| ``POST /_sim/oauth/code``, ``GET /_sim/oauth`` | issue an authorization code; OAuth counters |
| ``POST /_sim/tokens/revoke`` | ``{"token": t}``: later calls with it get 401 |
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.churn import random_mutation
from kommo_sim.gate import problem

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

MUTATIONS = frozenset(
    {
        "create_lead",
        "update_lead",
        "bulk_update_leads",
        "delete_lead",
        "restore_lead",
        "set_lead_tags",
        "add_lead_tag",
        "remove_lead_tag",
        "link_contact",
        "unlink_contact",
        "create_contact",
        "update_contact",
        "delete_contact",
        "restore_contact",
        "set_contact_phones",
        "set_contact_tags",
        "add_contact_tag",
        "remove_contact_tag",
        "rename_tag",
    }
)


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json"
    )


def control_routes(sim: Simulator) -> list[Route]:
    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {sim.config.token}":
                return problem(401, "Unauthorized", "Invalid user name or password")
            try:
                body: dict[str, Any] = {}
                if request.method in ("POST", "PUT", "PATCH"):
                    raw = await request.body()
                    body = json.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                result: Response = await handler(request, body)
                return result
            except LookupError as exc:
                return problem(404, "Not Found", str(exc))
            except (ValueError, TypeError) as exc:
                return problem(400, "Bad Request", str(exc))

        return endpoint

    async def state(request: Request, body: dict[str, Any]) -> Response:
        return _json(sim.dump())

    async def counters(request: Request, body: dict[str, Any]) -> Response:
        if request.method == "DELETE":
            sim.counters.clear()
            return Response(status_code=204)
        return _json(
            [{"endpoint": e, "status": s, "count": n} for (e, s), n in sorted(sim.counters.items())]
        )

    async def faults(request: Request, body: dict[str, Any]) -> Response:
        if request.method == "POST":
            if body.pop("reset", False):
                sim.faults.reset()
            sim.faults.update(sim.clock, **body)
        return _json(sim.faults.as_dict())

    async def clock(request: Request, body: dict[str, Any]) -> Response:
        if "speed" in body:
            sim.clock.set_speed(float(body["speed"]))
        if "set" in body:
            sim.clock.set(float(body["set"]))
        if "advance" in body:
            sim.clock.advance(float(body["advance"]))
        return _json({"now": sim.clock.now(), "speed": sim.clock.speed})

    async def mutate(request: Request, body: dict[str, Any]) -> Response:
        op = request.path_params["op"]
        if op not in MUTATIONS:
            raise LookupError(f"no mutation {op!r}")
        return _json({"result": getattr(sim, op)(**body)})

    async def randomly(request: Request, body: dict[str, Any]) -> Response:
        rng = random.Random(body.get("seed"))
        done = [random_mutation(sim, rng) for _ in range(int(body.get("count", 1)))]
        return _json({"result": done})

    async def ratelimit_reset(request: Request, body: dict[str, Any]) -> Response:
        sim.ratelimit.reset()
        return Response(status_code=204)

    async def webhooks(request: Request, body: dict[str, Any]) -> Response:
        return _json(
            {
                "destinations": [d.to_json() for d in sim.webhooks.destinations.values()],
                "stats": sim.webhooks.stats,
                "pending": sim.webhooks.pending(),
                "attempts": [
                    {
                        "url": a.url,
                        "attempt": a.attempt,
                        "status": a.status,
                        "at": a.at,
                        "request_id": a.request_id,
                    }
                    for a in sim.webhooks.attempts
                ],
            }
        )

    async def drain(request: Request, body: dict[str, Any]) -> Response:
        await sim.webhooks.drain()
        return Response(status_code=204)

    async def oauth_code(request: Request, body: dict[str, Any]) -> Response:
        return _json({"code": sim.tokens.issue_code()})

    async def oauth(request: Request, body: dict[str, Any]) -> Response:
        return _json(
            {"refresh_calls": sim.tokens.refresh_calls, "code_grants": sim.tokens.code_grants}
        )

    async def revoke(request: Request, body: dict[str, Any]) -> Response:
        sim.tokens.revoke(str(body["token"]))
        return Response(status_code=204)

    return [
        Route("/_sim/state", guarded(state)),
        Route("/_sim/counters", guarded(counters), methods=["GET", "DELETE"]),
        Route("/_sim/faults", guarded(faults), methods=["GET", "POST"]),
        Route("/_sim/clock", guarded(clock), methods=["GET", "POST"]),
        Route("/_sim/mutations/{op}", guarded(mutate), methods=["POST"]),
        Route("/_sim/random", guarded(randomly), methods=["POST"]),
        Route("/_sim/ratelimit/reset", guarded(ratelimit_reset), methods=["POST"]),
        Route("/_sim/webhooks", guarded(webhooks)),
        Route("/_sim/webhooks/drain", guarded(drain), methods=["POST"]),
        Route("/_sim/oauth/code", guarded(oauth_code), methods=["POST"]),
        Route("/_sim/oauth", guarded(oauth)),
        Route("/_sim/tokens/revoke", guarded(revoke), methods=["POST"]),
    ]
