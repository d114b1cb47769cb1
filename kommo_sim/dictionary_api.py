"""The account's dictionaries: account, pipelines, users, tags, custom field definitions,
loss reasons (API.md §1.4-1.8).

Custom fields answer at most 50 definitions per page whatever ``limit`` asks (the documented
quirk), with ``_total_items``, ``_page_count`` and ``_links`` ``self``, ``next`` (while more
follow) and ``last`` (when there are several pages). Loss reasons (``GET
/api/v4/leads/loss_reasons``, not in API.md; as third-party clients read it) answer
``{_total_items, _page, _links, _embedded: {loss_reasons: [...]}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.hal import JSON, base_of, hal, no_content, page_links, paged, path_id
from kommo_sim.query import ListQuery, parse
from kommo_sim.state import KINDS, CustomField, Kind

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

FIELDS_PER_PAGE = 50
Endpoint = Callable[[Request], Any]


class DictionaryApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[Route]:
        routes = [
            Route("/api/v4/account", self.account),
            Route("/api/v4/leads/pipelines", self.pipelines),
            Route("/api/v4/leads/pipelines/{id}", self.pipeline),
            Route("/api/v4/leads/loss_reasons", self.loss_reasons),
            Route("/api/v4/leads/loss_reasons/{id}", self.loss_reason),
            Route("/api/v4/users", self.users),
        ]
        for kind in KINDS:
            routes += [
                Route(f"/api/v4/{kind}/tags", self._tags(kind)),
                Route(f"/api/v4/{kind}/custom_fields", self._custom_fields(kind)),
                Route(f"/api/v4/{kind}/custom_fields/{{id}}", self._custom_field(kind)),
            ]
        return routes

    async def account(self, request: Request) -> Response:
        with_ = {w for v in request.query_params.getlist("with") for w in v.split(",")}
        return hal(
            self.sim.renderer.account(base_of(self.sim, request), "datetime_settings" in with_)
        )

    async def pipelines(self, request: Request) -> Response:
        base, pipelines = base_of(self.sim, request), self.sim.state.pipelines
        return hal(
            {
                "_total_items": len(pipelines),
                "_links": {"self": {"href": f"{base}/api/v4/leads/pipelines"}},
                "_embedded": {
                    "pipelines": [self.sim.renderer.pipeline(p, base) for p in pipelines]
                },
            }
        )

    async def pipeline(self, request: Request) -> Response:
        wanted = path_id(request)
        for p in self.sim.state.pipelines:
            if p.id == wanted:
                return hal(self.sim.renderer.pipeline(p, base_of(self.sim, request)))
        return no_content()

    async def users(self, request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250)
        users = self.sim.state.users
        found = paged([u.id for u in users], q)
        if found is None:
            return no_content()
        ids, _ = found
        base = base_of(self.sim, request)
        by_id = {u.id: u for u in users}
        return hal(
            {
                "_total_items": len(users),
                "_page": q.page,
                "_page_count": (len(users) + q.limit - 1) // q.limit,
                "_links": page_links(base, "/api/v4/users", q, False),
                "_embedded": {"users": [self.sim.renderer.user(by_id[i], base) for i in ids]},
            }
        )

    def _tags(self, kind: Kind) -> Endpoint:
        async def tags(request: Request) -> Response:
            q = parse(request.query_params.multi_items(), 250, ("id",))
            name = request.query_params.get("filter[name]")
            text = request.query_params.get("query", "").lower()
            rows = [
                t
                for t in self.sim.state.tags_of(kind).values()
                if (q.ids is None or t.id in q.ids)
                and name in (None, t.name)
                and text in t.name.lower()
            ]
            found = paged(rows, q)
            if found is None:
                return no_content()
            page, has_next = found
            base = base_of(self.sim, request)
            return hal(
                {
                    "_page": q.page,
                    "_links": page_links(base, f"/api/v4/{kind}/tags", q, has_next),
                    "_embedded": {
                        "tags": [{"id": t.id, "name": t.name, "color": t.color} for t in page]
                    },
                }
            )

        return tags

    def _custom_fields(self, kind: Kind) -> Endpoint:
        async def custom_fields(request: Request) -> Response:
            q = parse(request.query_params.multi_items(), FIELDS_PER_PAGE, ("sort", "id"))
            fields = _ordered(list(self.sim.state.fields_of(kind).values()), q)
            found = paged(fields, q)
            if found is None:
                return no_content()
            page, has_next = found
            base = base_of(self.sim, request)
            count = (len(fields) + q.limit - 1) // q.limit
            path = f"{base}/api/v4/{kind}/custom_fields?"
            links: JSON = {"self": {"href": path + q.query_string()}}
            if has_next:
                links["next"] = {"href": path + q.query_string(q.page + 1)}
            if count > 1:
                links["last"] = {"href": path + q.query_string(count)}
            return hal(
                {
                    "_total_items": len(fields),
                    "_page": q.page,
                    "_page_count": count,
                    "_links": links,
                    "_embedded": {
                        "custom_fields": [self.sim.renderer.custom_field(f, base) for f in page]
                    },
                }
            )

        return custom_fields

    def _custom_field(self, kind: Kind) -> Endpoint:
        async def custom_field(request: Request) -> Response:
            field = self.sim.state.fields_of(kind).get(path_id(request))
            if field is None:
                return no_content()
            return hal(self.sim.renderer.custom_field(field, base_of(self.sim, request)))

        return custom_field

    async def loss_reasons(self, request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250, ("sort", "id"))
        reasons = sorted(self.sim.state.loss_reasons.values(), key=lambda r: (r.sort, r.id))
        found = paged(reasons, q)
        if found is None:
            return no_content()
        page, has_next = found
        base = base_of(self.sim, request)
        return hal(
            {
                "_total_items": len(reasons),
                "_page": q.page,
                "_links": page_links(base, "/api/v4/leads/loss_reasons", q, has_next),
                "_embedded": {
                    "loss_reasons": [self.sim.renderer.loss_reason(r, base) for r in page]
                },
            }
        )

    async def loss_reason(self, request: Request) -> Response:
        reason = self.sim.state.loss_reasons.get(path_id(request))
        if reason is None:
            return no_content()
        return hal(self.sim.renderer.loss_reason(reason, base_of(self.sim, request)))


def _ordered(fields: list[CustomField], q: ListQuery) -> list[CustomField]:
    key, descending = q.order or ("sort", False)
    if key == "id":
        return sorted(fields, key=lambda f: f.id, reverse=descending)
    return sorted(fields, key=lambda f: (f.sort, f.id), reverse=descending)
