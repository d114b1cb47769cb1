"""The Starlette app: ``/api/v4/...`` and ``/oauth2/access_token`` as Kommo answers them,
plus the ``/_sim`` control routes (see control.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.events import EventQuery
from kommo_sim.gate import Gate, problem
from kommo_sim.oauth import OAuthError
from kommo_sim.query import BadRequest, ListQuery, parse, select
from kommo_sim.render import JSON
from kommo_sim.state import Kind

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

HAL = "application/hal+json"
EVENT_ENTITIES = {
    "lead": "lead",
    "leads": "lead",
    "contact": "contact",
    "contacts": "contact",
    "company": "company",
    "companies": "company",
}


def hal(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(data, status_code=status, media_type=HAL)


def no_content() -> Response:
    return Response(status_code=204)


def base_of(sim: Simulator, request: Request) -> str:
    return sim.config.base_url or f"{request.url.scheme}://{request.url.netloc}"


def page_links(base: str, path: str, q: ListQuery, has_next: bool) -> JSON:
    href = f"{base}{path}?"
    links: JSON = {"self": {"href": href + q.query_string()}}
    if has_next:
        links["next"] = {"href": href + q.query_string(q.page + 1)}
    if q.page > 1:
        links["first"] = {"href": href + q.query_string(1)}
        links["prev"] = {"href": href + q.query_string(q.page - 1)}
    return links


def paged(ids: list[int], q: ListQuery) -> tuple[list[int], bool] | None:
    start = (q.page - 1) * q.limit
    if start >= len(ids):
        return None
    return ids[start : start + q.limit], start + q.limit < len(ids)


def routes(sim: Simulator) -> list[Route]:
    renderer, state = sim.renderer, sim.state

    async def leads(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250)
        base = base_of(sim, request)
        trash = "only_deleted" in q.with_
        found = paged(select(state.leads, q, deleted=trash), q)
        if found is None:
            return no_content()
        ids, has_next = found
        qs = q.query_string()
        rows = state.leads.rows
        if trash:
            items = [renderer.trashed_lead(rows[i], base, qs) for i in ids]
        else:
            contacts = "contacts" in q.with_
            items = [renderer.lead(sim.visible_lead(rows[i]), base, qs, contacts) for i in ids]
        return hal(
            {
                "_page": q.page,
                "_links": page_links(base, "/api/v4/leads", q, has_next),
                "_embedded": {"leads": items},
            }
        )

    async def lead(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250)
        found = state.leads.get(_path_id(request))
        if found is None or found.is_deleted:
            return no_content()
        shown = sim.visible_lead(found)
        if shown.is_deleted:
            return no_content()
        return hal(renderer.lead(shown, base_of(sim, request), "", "contacts" in q.with_))

    async def contacts(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250, ("updated_at", "id"))
        base = base_of(sim, request)
        found = paged(select(state.contacts, q), q)
        if found is None:
            return no_content()
        ids, has_next = found
        qs, rows, with_leads = q.query_string(), state.contacts.rows, "leads" in q.with_
        items = [renderer.contact(sim.visible_contact(rows[i]), base, qs, with_leads) for i in ids]
        return hal(
            {
                "_page": q.page,
                "_links": page_links(base, "/api/v4/contacts", q, has_next),
                "_embedded": {"contacts": items},
            }
        )

    async def contact(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250)
        found = state.contacts.get(_path_id(request))
        if found is None or found.is_deleted:
            return no_content()
        shown = sim.visible_contact(found)
        if shown.is_deleted:
            return no_content()
        return hal(renderer.contact(shown, base_of(sim, request), "", "leads" in q.with_))

    def tags_endpoint(kind: Kind) -> Callable[[Request], Any]:
        async def tags(request: Request) -> Response:
            q = parse(request.query_params.multi_items(), 250, ("id",))
            rows = [
                t
                for t in state.tags_of(kind).values()
                if (q.ids is None or t.id in q.ids)
                and request.query_params.get("filter[name]", t.name) == t.name
                and request.query_params.get("query", "").lower() in t.name.lower()
            ]
            found = paged([t.id for t in rows], q)
            if found is None:
                return no_content()
            ids, has_next = found
            by_id = {t.id: t for t in rows}
            base = base_of(sim, request)
            return hal(
                {
                    "_page": q.page,
                    "_links": page_links(base, f"/api/v4/{kind}/tags", q, has_next),
                    "_embedded": {
                        "tags": [
                            {"id": i, "name": by_id[i].name, "color": by_id[i].color} for i in ids
                        ]
                    },
                }
            )

        return tags

    async def pipelines(request: Request) -> Response:
        base = base_of(sim, request)
        return hal(
            {
                "_total_items": len(state.pipelines),
                "_links": {"self": {"href": f"{base}/api/v4/leads/pipelines"}},
                "_embedded": {"pipelines": [renderer.pipeline(p, base) for p in state.pipelines]},
            }
        )

    async def pipeline(request: Request) -> Response:
        wanted = _path_id(request)
        for p in state.pipelines:
            if p.id == wanted:
                return hal(renderer.pipeline(p, base_of(sim, request)))
        return no_content()

    async def users(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250)
        found = paged([u.id for u in state.users], q)
        if found is None:
            return no_content()
        ids, _ = found
        base = base_of(sim, request)
        by_id = {u.id: u for u in state.users}
        count = (len(state.users) + q.limit - 1) // q.limit
        return hal(
            {
                "_total_items": len(state.users),
                "_page": q.page,
                "_page_count": count,
                "_links": page_links(base, "/api/v4/users", q, False),
                "_embedded": {"users": [renderer.user(by_id[i], base) for i in ids]},
            }
        )

    def custom_fields_endpoint(kind: Kind) -> Callable[[Request], Any]:
        async def custom_fields(request: Request) -> Response:
            q = parse(request.query_params.multi_items(), 50, ("sort", "id"))
            fields = list(state.fields_of(kind).values())
            found = paged(list(range(len(fields))), q)
            if found is None:
                return no_content()
            idx, has_next = found
            base = base_of(sim, request)
            return hal(
                {
                    "_total_items": len(fields),
                    "_page": q.page,
                    "_page_count": (len(fields) + q.limit - 1) // q.limit,
                    "_links": page_links(base, f"/api/v4/{kind}/custom_fields", q, has_next),
                    "_embedded": {
                        "custom_fields": [renderer.custom_field(fields[i], base) for i in idx]
                    },
                }
            )

        return custom_fields

    async def account(request: Request) -> Response:
        with_ = {w for v in request.query_params.getlist("with") for w in v.split(",")}
        return hal(renderer.account(base_of(sim, request), "datetime_settings" in with_))

    async def events(request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 100, ("created_at", "id"))
        entities = {EVENT_ENTITIES.get(e, e) for e in q.lists.get("entity", [])}
        entity_ids = {int(i) for i in q.lists.get("entity_id", []) if i.isdigit()}
        found = sim.events.query(
            EventQuery(
                types=frozenset(q.lists["type"]) if "type" in q.lists else None,
                entities=frozenset(entities) if entities else None,
                entity_ids=frozenset(entity_ids) if entity_ids else None,
                created_from=q.created[0],
                created_to=q.created[1],
                ascending=q.order is not None and not q.order[1],
            )
        )
        start = (q.page - 1) * q.limit
        if start >= len(found):
            return no_content()
        base = base_of(sim, request)
        chunk = found[start : start + q.limit]
        return hal(
            {
                "_page": q.page,
                "_links": page_links(base, "/api/v4/events", q, start + q.limit < len(found)),
                "_embedded": {"events": [e.to_json(state.account.id, base) for e in chunk]},
            }
        )

    async def webhooks_get(request: Request) -> Response:
        wanted = request.query_params.get("filter[destination]")
        found = [
            d.to_json()
            for d in sim.webhooks.destinations.values()
            if wanted is None or d.destination == wanted
        ]
        if not found:
            return no_content()
        return hal({"_total_items": len(found), "_embedded": {"webhooks": found}})

    async def webhooks_post(request: Request) -> Response:
        body = await _json_body(request)
        destination, settings = body.get("destination"), body.get("settings")
        if not isinstance(destination, str) or not destination.startswith(("http://", "https://")):
            raise BadRequest("destination", "This value is not a valid URL.")
        if not isinstance(settings, list) or not settings:
            raise BadRequest("settings", "This value should not be blank.")
        dest = sim.webhooks.subscribe(
            destination, [str(s) for s in settings], int(body.get("sort", 1)), state.users[0].id
        )
        return hal(dest.to_json(), status=201)

    async def webhooks_delete(request: Request) -> Response:
        body = await _json_body(request)
        if sim.webhooks.unsubscribe(str(body.get("destination"))):
            return no_content()
        return problem(404, "Not Found", "Webhook not found")

    async def access_token(request: Request) -> Response:
        body = await _json_body(request)
        try:
            answer = sim.tokens.grant(body)
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

    return [
        Route("/api/v4/account", account),
        Route("/api/v4/leads", leads),
        Route("/api/v4/leads/tags", tags_endpoint("leads")),
        Route("/api/v4/leads/custom_fields", custom_fields_endpoint("leads")),
        Route("/api/v4/leads/pipelines", pipelines),
        Route("/api/v4/leads/pipelines/{id}", pipeline),
        Route("/api/v4/leads/{id}", lead),
        Route("/api/v4/contacts", contacts),
        Route("/api/v4/contacts/tags", tags_endpoint("contacts")),
        Route("/api/v4/contacts/custom_fields", custom_fields_endpoint("contacts")),
        Route("/api/v4/contacts/{id}", contact),
        Route("/api/v4/users", users),
        Route("/api/v4/events", events),
        Route("/api/v4/webhooks", webhooks_get, methods=["GET"]),
        Route("/api/v4/webhooks", webhooks_post, methods=["POST"]),
        Route("/api/v4/webhooks", webhooks_delete, methods=["DELETE"]),
        Route("/oauth2/access_token", access_token, methods=["POST"]),
    ]


def _path_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not raw.isdigit():
        raise HTTPException(404)
    return int(raw)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("body", "Request data can not be empty") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "Request data can not be empty")
    return body


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
            f"Cannot {request.method} {base_of(sim, request)}{request.url.path}",
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
