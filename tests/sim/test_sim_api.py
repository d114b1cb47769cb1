"""Paging, 204s, filters, ordering, errors and headers of the API v4 endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kommo_sim import Simulator

JSON = dict[str, Any]


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[JSON]:
    """Follow ``_links.next`` until it is missing, then check the page after is a 204."""
    items: list[JSON] = []
    url: str | None = path
    query: dict[str, Any] | None = dict(params)
    page = 0
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200
        body = response.json()
        page += 1
        assert body["_page"] == page
        items += next(iter(body["_embedded"].values()))
        url, query = body["_links"].get("next", {}).get("href"), None
    past = await client.get(path, params={**params, "page": page + 1})
    assert past.status_code == 204
    assert past.content == b"" and "content-type" not in past.headers
    return items


async def test_pagination_ends_without_next_then_204(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    leads = await all_pages(client, "/api/v4/leads", limit=7, **{"with": "contacts"})
    assert [lead["id"] for lead in leads] == sorted(sim.state.leads.rows)
    assert len(sim.state.leads) % 8 == 0  # a last page that is exactly full has no next
    assert len(await all_pages(client, "/api/v4/leads", limit=8)) == len(sim.state.leads)
    contacts = await all_pages(client, "/api/v4/contacts", limit=250)
    assert len(contacts) == len(sim.state.contacts)


async def test_later_pages_link_first_and_prev(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v4/leads", params={"limit": 10, "page": 2})).json()
    assert set(body["_links"]) == {"self", "next", "first", "prev"}
    assert body["_links"]["prev"]["href"].endswith("page=1&limit=10")
    assert body["_embedded"]["leads"][0]["_links"]["self"]["href"].endswith("?page=2&limit=10")


async def test_limit_is_clamped_to_250(client: httpx.AsyncClient, sim: Simulator) -> None:
    for _ in range(300 - len(sim.state.leads)):
        sim.create_lead(name="more")
    body = (await client.get("/api/v4/leads", params={"limit": 1000})).json()
    assert len(body["_embedded"]["leads"]) == 250 and "next" in body["_links"]


async def test_missing_deleted_and_empty_give_204(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    lead_id = next(iter(sim.state.leads.rows))
    contact_id = next(iter(sim.state.contacts.rows))
    assert (await client.get(f"/api/v4/leads/{lead_id}")).status_code == 200
    sim.delete_lead(lead_id)
    sim.delete_contact(contact_id)
    cases: list[tuple[str, Any]] = [
        (f"/api/v4/leads/{lead_id}", {}),
        ("/api/v4/leads/1", {}),
        (f"/api/v4/contacts/{contact_id}", {}),
        ("/api/v4/contacts/99", {}),
        ("/api/v4/leads", {"filter[id][]": lead_id}),
        ("/api/v4/leads", {"filter[updated_at][from]": 2**31}),
        ("/api/v4/leads/tags", {"filter[name]": "no such tag"}),
        ("/api/v4/events", {"filter[type]": "lead_restored"}),
    ]
    for path, params in cases:
        response = await client.get(path, params=params)
        assert response.status_code == 204, path
        assert response.content == b""
    listed = await all_pages(client, "/api/v4/leads", limit=250)
    assert lead_id not in {lead["id"] for lead in listed}
    trash = (await client.get("/api/v4/leads", params={"with": "only_deleted"})).json()
    assert [row["id"] for row in trash["_embedded"]["leads"]] == [lead_id]


async def test_id_filter_forms(client: httpx.AsyncClient, sim: Simulator) -> None:
    ids = list(sim.state.leads.rows)[3:6]
    forms: list[Any] = [
        [("filter[id][]", i) for i in ids],
        [("filter[id]", ",".join(map(str, ids)))],
        [(f"filter[id][{n}]", i) for n, i in enumerate(ids)],
    ]
    for params in forms:
        body = (await client.get("/api/v4/leads", params=params)).json()
        assert [lead["id"] for lead in body["_embedded"]["leads"]] == ids
    single = (await client.get("/api/v4/leads", params={"filter[id]": ids[0]})).json()
    assert [lead["id"] for lead in single["_embedded"]["leads"]] == ids[:1]


async def test_updated_at_range_is_inclusive_and_ordered(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    ids = list(sim.state.leads.rows)[:4]
    sim.clock.advance(100)
    sim.update_lead(ids[2], price=1)
    sim.update_lead(ids[0], price=1)  # same second: ties break by id
    sim.clock.advance(1)
    sim.update_lead(ids[3], price=1)
    t = sim.clock.now_s()
    params: dict[str, Any] = {
        "filter[updated_at][from]": t - 1,
        "filter[updated_at][to]": t,
        "order[updated_at]": "asc",
    }
    body = (await client.get("/api/v4/leads", params=params)).json()
    assert [lead["id"] for lead in body["_embedded"]["leads"]] == [ids[0], ids[2], ids[3]]
    params["order[updated_at]"] = "desc"
    body = (await client.get("/api/v4/leads", params=params)).json()
    assert [lead["id"] for lead in body["_embedded"]["leads"]] == [ids[3], ids[2], ids[0]]
    only_to = {"filter[updated_at][from]": t, "filter[updated_at][to]": t}
    body = (await client.get("/api/v4/leads", params=only_to)).json()
    assert [lead["id"] for lead in body["_embedded"]["leads"]] == [ids[3]]


async def test_order_by_id_and_created_at(client: httpx.AsyncClient, sim: Simulator) -> None:
    body = (await client.get("/api/v4/leads", params={"order[id]": "desc", "limit": 5})).json()
    assert [lead["id"] for lead in body["_embedded"]["leads"]] == sorted(
        sim.state.leads.rows, reverse=True
    )[:5]
    body = (
        await client.get("/api/v4/leads", params={"order[created_at]": "asc", "limit": 250})
    ).json()
    created = [lead["created_at"] for lead in body["_embedded"]["leads"]]
    assert created == sorted(created)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "x"},
        {"page": "0"},
        {"filter[id][]": "abc"},
        {"order[price]": "asc"},
        {"order[id]": "sideways"},
        {"filter[updated_at][from]": "yesterday"},
    ],
)
async def test_malformed_parameters_get_400(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/v4/leads", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["validation-errors"][0]["errors"][0]["path"] in params


async def test_contacts_cannot_be_ordered_by_created_at(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v4/contacts", params={"order[created_at]": "asc"})
    assert response.status_code == 400


async def test_with_contacts_only_when_asked(client: httpx.AsyncClient, sim: Simulator) -> None:
    lead = next(lead for lead in sim.state.leads if lead.contacts)
    plain = (await client.get(f"/api/v4/leads/{lead.id}")).json()
    rich = (await client.get(f"/api/v4/leads/{lead.id}", params={"with": "contacts"})).json()
    assert "contacts" not in plain["_embedded"]
    assert [(c["id"], c["is_main"]) for c in rich["_embedded"]["contacts"]] == list(
        lead.contacts.items()
    )


async def test_request_id_and_bad_token(client: httpx.AsyncClient, sim: Simulator) -> None:
    ok = await client.get("/api/v4/account")
    assert len(ok.headers["x-request-id"]) == 36
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": ""}):
        denied = await client.get("/api/v4/account", headers=headers)
        assert denied.status_code == 401
        assert denied.headers["content-type"] == "application/problem+json"
    sim.tokens.revoke(sim.config.token)
    assert (await client.get("/api/v4/account")).status_code == 401


async def test_events_filters(client: httpx.AsyncClient, sim: Simulator) -> None:
    lead_id, other = list(sim.state.leads.rows)[:2]
    sim.delete_lead(lead_id)
    sim.clock.advance(10)
    sim.delete_lead(other)
    sim.delete_contact(next(iter(sim.state.contacts.rows)))
    t = sim.clock.now_s()
    both: list[Any] = [("filter[type][]", "lead_deleted"), ("filter[type][]", "contact_deleted")]
    body = (await client.get("/api/v4/events", params=both)).json()
    assert [e["type"] for e in body["_embedded"]["events"]] == [
        "contact_deleted",
        "lead_deleted",
        "lead_deleted",
    ]
    assert all(isinstance(e["id"], str) for e in body["_embedded"]["events"])
    since = (await client.get("/api/v4/events", params=both + [("filter[created_at]", t)])).json()
    assert len(since["_embedded"]["events"]) == 2
    ranged: list[Any] = both + [
        ("filter[created_at][from]", t - 10),
        ("filter[created_at][to]", t - 1),
        ("filter[entity][]", "lead"),
    ]
    body = (await client.get("/api/v4/events", params=ranged)).json()
    assert [e["entity_id"] for e in body["_embedded"]["events"]] == [lead_id]
    limited = (await client.get("/api/v4/events", params={"limit": 500})).json()
    assert "limit=100" in limited["_links"]["self"]["href"]
