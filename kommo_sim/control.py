"""The ``/_sim`` control API: drive the simulator from another process.

All routes take the simulator's configured (long-lived) bearer token and JSON bodies.

| route | effect |
|---|---|
| ``GET /_sim/state`` | the whole state (``Simulator.dump()``) |
| ``GET /_sim/status_changes`` | every stage move (``Simulator.status_changes``) |
| ``GET /_sim/counters``, ``DELETE /_sim/counters`` | request counts by (endpoint, status); reset |
| ``GET /_sim/faults``, ``POST /_sim/faults`` | read or set fault switches (``{"reset": true}``) |
| ``GET/POST /_sim/clock`` | ``{"advance": s}``, ``{"set": ts}``, ``{"speed": f}`` |
| ``POST /_sim/mutations/{op}`` | call a mutation method with the body as keyword arguments |
| ``POST /_sim/random`` | ``{"seed": n, "count": k}``: k random mutations, their descriptions |
| ``POST /_sim/ratelimit/reset`` | forget the request window, 429 history and block |
| ``GET /_sim/webhooks``, ``POST /_sim/webhooks/drain`` | destinations, stats, attempts; drain |
| ``POST /_sim/webhooks/unsorted`` | ``{"destination": url, "enabled": bool}``: unsorted bodies |
| ``POST /_sim/oauth/code``, ``GET /_sim/oauth`` | issue an authorization code; OAuth counters |
| ``POST /_sim/tokens/revoke`` | ``{"token": t}``: later calls with it get 401 |
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.churn import random_mutation
from kommo_sim.gate import problem

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

Body = dict[str, Any]
Handler = Callable[["Simulator", Request, Body], Awaitable[Response]]

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
        "link_company",
        "unlink_company",
        "create_contact",
        "update_contact",
        "delete_contact",
        "restore_contact",
        "set_contact_phones",
        "set_contact_tags",
        "add_contact_tag",
        "remove_contact_tag",
        "link_contact_company",
        "unlink_contact_company",
        "create_company",
        "update_company",
        "delete_company",
        "restore_company",
        "set_company_phones",
        "set_company_tags",
        "set_custom_fields",
        "clear_custom_field",
        "add_custom_field",
        "rename_custom_field",
        "delete_custom_field",
        "add_enum",
        "rename_enum",
        "add_loss_reason",
        "rename_loss_reason",
        "rename_tag",
        "create_incoming_lead",
        "accept_incoming",
        "decline_incoming",
    }
)


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json"
    )


def _guarded(sim: Simulator, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Token check, JSON body, and errors as problems (404 not found, 400 bad input)."""

    async def endpoint(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {sim.config.token}":
            return problem(401, "Unauthorized", "Invalid user name or password")
        try:
            body: Body = {}
            if request.method in ("POST", "PUT", "PATCH"):
                raw = await request.body()
                body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            return await handler(sim, request, body)
        except LookupError as exc:
            return problem(404, "Not Found", str(exc))
        except (ValueError, TypeError) as exc:
            return problem(400, "Bad Request", str(exc))

    return endpoint


async def state(sim: Simulator, request: Request, body: Body) -> Response:
    return _json(sim.dump())


async def status_changes(sim: Simulator, request: Request, body: Body) -> Response:
    return _json(sim.status_changes)


async def counters(sim: Simulator, request: Request, body: Body) -> Response:
    if request.method == "DELETE":
        sim.counters.clear()
        return Response(status_code=204)
    return _json(
        [{"endpoint": e, "status": s, "count": n} for (e, s), n in sorted(sim.counters.items())]
    )


async def faults(sim: Simulator, request: Request, body: Body) -> Response:
    if request.method == "POST":
        if body.pop("reset", False):
            sim.faults.reset()
        sim.faults.update(sim.clock, **body)
    return _json(sim.faults.as_dict())


async def clock(sim: Simulator, request: Request, body: Body) -> Response:
    if "speed" in body:
        sim.clock.set_speed(float(body["speed"]))
    if "set" in body:
        sim.clock.set(float(body["set"]))
    if "advance" in body:
        sim.clock.advance(float(body["advance"]))
    return _json({"now": sim.clock.now(), "speed": sim.clock.speed})


async def mutate(sim: Simulator, request: Request, body: Body) -> Response:
    op = request.path_params["op"]
    if op not in MUTATIONS:
        raise LookupError(f"no mutation {op!r}")
    return _json({"result": getattr(sim, op)(**body)})


async def randomly(sim: Simulator, request: Request, body: Body) -> Response:
    rng = random.Random(body.get("seed"))
    done = [random_mutation(sim, rng) for _ in range(int(body.get("count", 1)))]
    return _json({"result": done})


async def ratelimit_reset(sim: Simulator, request: Request, body: Body) -> Response:
    sim.ratelimit.reset()
    return Response(status_code=204)


async def webhooks(sim: Simulator, request: Request, body: Body) -> Response:
    return _json(
        {
            "destinations": [
                {**d.to_json(), "unsorted": d.unsorted} for d in sim.webhooks.destinations.values()
            ],
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


async def drain(sim: Simulator, request: Request, body: Body) -> Response:
    await sim.webhooks.drain()
    return Response(status_code=204)


async def unsorted(sim: Simulator, request: Request, body: Body) -> Response:
    dest = sim.webhooks.destinations.get(str(body.get("destination")))
    if dest is None:
        raise LookupError("no such webhook destination")
    dest.unsorted = bool(body.get("enabled", True))
    return _json({**dest.to_json(), "unsorted": dest.unsorted})


async def oauth_code(sim: Simulator, request: Request, body: Body) -> Response:
    return _json({"code": sim.tokens.issue_code()})


async def oauth(sim: Simulator, request: Request, body: Body) -> Response:
    return _json({"refresh_calls": sim.tokens.refresh_calls, "code_grants": sim.tokens.code_grants})


async def revoke(sim: Simulator, request: Request, body: Body) -> Response:
    sim.tokens.revoke(str(body["token"]))
    return Response(status_code=204)


ROUTES: tuple[tuple[str, Handler, tuple[str, ...]], ...] = (
    ("/_sim/state", state, ("GET",)),
    ("/_sim/status_changes", status_changes, ("GET",)),
    ("/_sim/counters", counters, ("GET", "DELETE")),
    ("/_sim/faults", faults, ("GET", "POST")),
    ("/_sim/clock", clock, ("GET", "POST")),
    ("/_sim/mutations/{op}", mutate, ("POST",)),
    ("/_sim/random", randomly, ("POST",)),
    ("/_sim/ratelimit/reset", ratelimit_reset, ("POST",)),
    ("/_sim/webhooks", webhooks, ("GET",)),
    ("/_sim/webhooks/drain", drain, ("POST",)),
    ("/_sim/webhooks/unsorted", unsorted, ("POST",)),
    ("/_sim/oauth/code", oauth_code, ("POST",)),
    ("/_sim/oauth", oauth, ("GET",)),
    ("/_sim/tokens/revoke", revoke, ("POST",)),
)


def control_routes(sim: Simulator) -> list[Route]:
    return [
        Route(path, _guarded(sim, handler), methods=list(methods))
        for path, handler, methods in ROUTES
    ]
