"""``GET /api/v4/events`` and ``/api/v4/events/{id}`` (API.md §1.9, §6).

Filters: ``filter[type]`` (array or comma list; ``custom_field_<ID>_value_changed`` too),
``filter[created_at]`` (a bare value means "from"), ``filter[created_at][from|to]`` (both
inclusive), ``filter[entity]``, ``filter[entity_id]`` (at most 10, with exactly one entity, as
documented; otherwise 400), ``filter[created_by]`` (at most 10). At most 100 per page, with
``_links.next`` while more follow.

Order: Kommo documents none. The simulator answers newest first (``created_at`` descending,
later writes first within a second); ``order[created_at]=asc`` or ``order[id]=asc`` gives the
reverse. A client should window by ``created_at`` rather than rely on either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim.events import EventQuery
from kommo_sim.hal import base_of, hal, no_content, page_links
from kommo_sim.query import BadRequest, ListQuery, parse

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

EVENT_ENTITIES = {
    "lead": "lead",
    "leads": "lead",
    "contact": "contact",
    "contacts": "contact",
    "company": "company",
    "companies": "company",
}
PER_PAGE = 100


class EventApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[Route]:
        return [
            Route("/api/v4/events", self.events),
            Route("/api/v4/events/{id}", self.event),
        ]

    async def events(self, request: Request) -> Response:
        q = parse(request.query_params.multi_items(), PER_PAGE, ("created_at", "id"))
        found = self.sim.events.query(_event_query(q))
        start = (q.page - 1) * q.limit
        if start >= len(found):
            return no_content()
        base = base_of(self.sim, request)
        account_id = self.sim.state.account.id
        chunk = found[start : start + q.limit]
        return hal(
            {
                "_page": q.page,
                "_links": page_links(base, "/api/v4/events", q, start + q.limit < len(found)),
                "_embedded": {"events": [e.to_json(account_id, base) for e in chunk]},
            }
        )

    async def event(self, request: Request) -> Response:
        found = self.sim.events.get(request.path_params["id"])
        if found is None:
            return no_content()
        return hal(found.to_json(self.sim.state.account.id, base_of(self.sim, request)))


def _ints(key: str, raws: list[str]) -> frozenset[int] | None:
    if not raws:
        return None
    if not all(r.isdigit() for r in raws):
        raise BadRequest(key, "This value should be of type int.")
    if len(raws) > 10:
        raise BadRequest(key, "This collection should contain 10 elements or less.")
    return frozenset(int(r) for r in raws)


def _event_query(q: ListQuery) -> EventQuery:
    entities = {EVENT_ENTITIES.get(e, e) for e in q.lists.get("entity", [])}
    entity_ids = _ints("filter[entity_id]", q.lists.get("entity_id", []))
    if entity_ids is not None and len(entities) != 1:
        raise BadRequest("filter[entity]", "filter[entity_id] needs exactly one filter[entity].")
    return EventQuery(
        types=frozenset(q.lists["type"]) if "type" in q.lists else None,
        entities=frozenset(entities) if entities else None,
        entity_ids=entity_ids,
        created_from=q.created[0],
        created_to=q.created[1],
        created_by=_ints("filter[created_by]", q.lists.get("created_by", [])),
        ascending=q.order is not None and not q.order[1],
    )
