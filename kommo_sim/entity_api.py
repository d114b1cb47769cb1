"""``/api/v4/leads``, ``/contacts``, ``/companies``: lists and by id (API.md §1.1-1.3).

Lists page with ``page``/``limit`` (≤ 250), filter by ``filter[id]`` and
``filter[updated_at|created_at][from|to]``, order by ``order[updated_at|id]`` (leads also
``created_at``), and answer 204 when empty or past the end; by id, a missing or deleted entity
is a 204. ``with``: leads ``contacts``, ``loss_reason``, ``only_deleted``; contacts ``leads``;
companies ``leads``, ``contacts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.hal import base_of, hal, no_content, page_links, paged, path_id
from kommo_sim.query import ListQuery, parse, select
from kommo_sim.state import Kind

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

ORDER_FIELDS: dict[Kind, tuple[str, ...]] = {
    "leads": ("updated_at", "id", "created_at"),
    "contacts": ("updated_at", "id"),
    "companies": ("updated_at", "id"),
}


class EntityApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def lists(self) -> list[Route]:
        return [
            Route("/api/v4/leads", self.leads),
            Route("/api/v4/contacts", self.contacts),
            Route("/api/v4/companies", self.companies),
        ]

    def by_id(self) -> list[Route]:
        """Registered after the kinds' sub-resources (tags, custom_fields, …)."""
        return [
            Route("/api/v4/leads/{id}", self.lead),
            Route("/api/v4/contacts/{id}", self.contact),
            Route("/api/v4/companies/{id}", self.company),
        ]

    def _render(self, kind: Kind, shown: Any, base: str, qs: str, q: ListQuery) -> Any:
        """``shown``: the version this read shows (see ``Simulator.visible``)."""
        sim, with_ = self.sim, q.with_
        if kind == "leads":
            return sim.renderer.lead(shown, base, qs, "contacts" in with_, "loss_reason" in with_)
        if kind == "contacts":
            return sim.renderer.contact(shown, base, qs, "leads" in with_)
        return sim.renderer.company(shown, base, qs, "leads" in with_, "contacts" in with_)

    async def _list(self, kind: Kind, request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250, ORDER_FIELDS[kind])
        table = self.sim.state.table(kind)
        trash = kind == "leads" and "only_deleted" in q.with_
        found = paged(select(table, q, deleted=trash), q)
        if found is None:
            return no_content()
        ids, has_next = found
        base, qs = base_of(self.sim, request), q.query_string()
        if trash:
            items = [self.sim.renderer.trashed_lead(table.rows[i], base, qs) for i in ids]
        else:
            visible = self.sim.visible
            items = [self._render(kind, visible(kind, table.rows[i]), base, qs, q) for i in ids]
        return hal(
            {
                "_page": q.page,
                "_links": page_links(base, f"/api/v4/{kind}", q, has_next),
                "_embedded": {kind: items},
            }
        )

    async def _one(self, kind: Kind, request: Request) -> Response:
        q = parse(request.query_params.multi_items(), 250, ORDER_FIELDS[kind])
        found = self.sim.state.table(kind).get(path_id(request))
        if found is None or found.is_deleted:
            return no_content()
        shown = self.sim.visible(kind, found)
        if shown.is_deleted:
            return no_content()
        return hal(self._render(kind, shown, base_of(self.sim, request), "", q))

    async def leads(self, request: Request) -> Response:
        return await self._list("leads", request)

    async def contacts(self, request: Request) -> Response:
        return await self._list("contacts", request)

    async def companies(self, request: Request) -> Response:
        return await self._list("companies", request)

    async def lead(self, request: Request) -> Response:
        return await self._one("leads", request)

    async def contact(self, request: Request) -> Response:
        return await self._one("contacts", request)

    async def company(self, request: Request) -> Response:
        return await self._one("companies", request)
