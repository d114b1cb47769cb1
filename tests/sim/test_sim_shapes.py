"""Every API fixture is matched, key by key and type by type, by the simulator's answer."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable

import httpx
import pytest

from kommo_sim import RateLimitConfig, Simulator, random_mutation
from kommo_sim.seed import CONTACT_EMAIL, CONTACT_POSITION, LEAD_COMMENT, LEAD_MEETING
from tests.sim.helpers import FIXTURES, TOKEN, fixture_json, make_config, shape_mismatches

NOT_SIMULATED = {
    "errors/403_scope.json": "the token always carries admin rights",
    "errors/422_limit.json": "the simulator has no write endpoints for entities",
}

Scenario = Callable[[Simulator, httpx.AsyncClient], Awaitable[httpx.Response]]


def rich_lead(sim: Simulator) -> int:
    """A lead with tags, a company, two contacts and custom fields of every kind."""
    for lead in sim.state.leads:
        if lead.company_id and lead.tags:
            contact_ids = [c.id for c in sim.state.contacts if c.id not in lead.contacts][:2]
            for contact_id in contact_ids:
                sim.link_contact(lead.id, contact_id)
            sim.update_lead(
                lead.id,
                custom_fields={
                    752009: "Google",
                    LEAD_COMMENT: "Call after 5 pm",
                    LEAD_MEETING: 1748293200,
                    752015: True,
                    752017: 1500,
                },
            )
            return lead.id
    raise AssertionError("the seed has no lead with a company and tags")


def rich_contact(sim: Simulator) -> int:
    contact = sim.create_contact(
        first_name="Jane",
        last_name="Doe",
        phones=["+1 (555) 000-1111", "987 654 321"],
        tags=["website"],
        custom_fields={CONTACT_EMAIL: "jane@example.com", CONTACT_POSITION: "CTO"},
    )
    sim.link_contact(next(iter(sim.state.leads.rows)), contact["id"])
    return int(contact["id"])


async def leads_page1(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    first = rich_lead(sim)
    plain = next(lead.id for lead in sim.state.leads if not lead.tags and not lead.contacts)
    other = next(lead.id for lead in sim.state.leads if lead.id not in (first, plain))
    return await client.get(
        "/api/v4/leads",
        params=[
            ("with", "contacts"),
            ("filter[id][]", first),
            ("filter[id][]", plain),
            ("filter[id][]", other),
            ("limit", 2),
            ("page", 1),
        ],
    )


async def leads_last_page(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    ids = [lead.id for lead in sim.state.leads][:3]
    return await client.get(
        "/api/v4/leads",
        params=[
            ("with", "contacts"),
            ("filter[id]", ",".join(map(str, ids))),
            ("limit", 2),
            ("page", 2),
        ],
    )


async def lead_by_id(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(f"/api/v4/leads/{rich_lead(sim)}", params={"with": "contacts"})


async def only_deleted(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    sim.delete_lead(next(iter(sim.state.leads.rows)))
    return await client.get("/api/v4/leads", params={"with": "only_deleted", "limit": 250})


async def contacts_list(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    rich_contact(sim)
    return await client.get("/api/v4/contacts", params={"limit": 250})


async def contact_by_id(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    return await client.get(f"/api/v4/contacts/{rich_contact(sim)}", params={"with": "leads"})


async def events(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    lead_ids = [lead.id for lead in sim.state.leads][:3]
    sim.update_lead(lead_ids[0], status_id=142)
    sim.add_lead_tag(lead_ids[0], "website")
    sim.update_lead(lead_ids[1], responsible_user_id=sim.state.users[-1].id)
    sim.delete_lead(lead_ids[2])
    sim.restore_lead(lead_ids[2])
    sim.delete_contact(next(iter(sim.state.contacts.rows)))
    types = (
        "lead_deleted,lead_restored,contact_deleted,lead_status_changed,entity_tag_added,"
        "entity_responsible_changed"
    )
    return await client.get("/api/v4/events", params={"filter[type]": types, "limit": 100})


async def webhooks_list(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    subscribe = json.loads((FIXTURES / "api" / "webhook_subscribe_request.json").read_text())
    created = await client.post("/api/v4/webhooks", json=subscribe)
    assert created.status_code == 201
    assert not shape_mismatches(
        created.json(), fixture_json("webhooks_list.json")["_embedded"]["webhooks"][0]
    )
    return await client.get(
        "/api/v4/webhooks", params={"filter[destination]": subscribe["destination"]}
    )


async def oauth_ok(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    oauth = sim.config.oauth
    return await client.post(
        "/oauth2/access_token",
        json={
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
            "grant_type": "authorization_code",
            "code": sim.tokens.issue_code(),
            "redirect_uri": oauth.redirect_uri,
        },
    )


async def oauth_error(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    oauth = sim.config.oauth
    return await client.post(
        "/oauth2/access_token",
        json={
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": "spent",
            "redirect_uri": oauth.redirect_uri,
        },
    )


def get(path: str, **params: object) -> Scenario:
    async def call(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(path, params=params)  # type: ignore[arg-type]

    return call


async def unauthorized(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/api/v4/leads", headers={"Authorization": "Bearer wrong"})


async def payment(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    sim.faults.payment_required = True
    return await client.get("/api/v4/leads")


async def method(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    return await client.put("/api/v4/account")


async def too_many(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    sim.ratelimit.config.rate = 7
    answers = [await client.get("/api/v4/account") for _ in range(8)]
    return answers[-1]


async def internal(sim: Simulator, client: httpx.AsyncClient) -> httpx.Response:
    sim.faults.error_rate = 1.0
    return await client.get("/api/v4/leads")


SCENARIOS: dict[str, tuple[Scenario, int]] = {
    "account_with_datetime_settings.json": (
        get("/api/v4/account", **{"with": "datetime_settings"}),
        200,
    ),
    "contact_35000501_with_leads.json": (contact_by_id, 200),
    "contacts_list.json": (contacts_list, 200),
    "contacts_tags.json": (get("/api/v4/contacts/tags", limit=250), 200),
    "events_list.json": (events, 200),
    "lead_24000101_with_contacts.json": (lead_by_id, 200),
    "leads_custom_fields.json": (get("/api/v4/leads/custom_fields", limit=50), 200),
    "leads_list_last_page.json": (leads_last_page, 200),
    "leads_list_page1.json": (leads_page1, 200),
    "leads_only_deleted.json": (only_deleted, 200),
    "leads_tags.json": (get("/api/v4/leads/tags", limit=250), 200),
    "oauth_token_error_400.json": (oauth_error, 400),
    "oauth_token_response.json": (oauth_ok, 200),
    "pipelines.json": (get("/api/v4/leads/pipelines"), 200),
    "users.json": (get("/api/v4/users", limit=250), 200),
    "webhooks_list.json": (webhooks_list, 200),
    "errors/400_validation.json": (get("/api/v4/leads", limit="many"), 400),
    "errors/401_unauthorized.json": (unauthorized, 401),
    "errors/402_payment_required.json": (payment, 402),
    "errors/404_not_found.json": (get("/api/v4/example"), 404),
    "errors/405_method.json": (method, 405),
    "errors/429_too_many_requests.json": (too_many, 429),
    "errors/500_internal.json": (internal, 500),
}


def test_every_fixture_is_covered() -> None:
    on_disk = {str(p.relative_to(FIXTURES / "api")) for p in (FIXTURES / "api").rglob("*.json")}
    on_disk.discard("webhook_subscribe_request.json")  # a request body, used by webhooks_list
    assert on_disk == set(SCENARIOS) | set(NOT_SIMULATED)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_answer_matches_fixture_shape(
    name: str, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    scenario, status = SCENARIOS[name]
    sim = Simulator(make_config(rate_limit=RateLimitConfig(rate=0)))
    async with make_client(sim) as client:
        response = await scenario(sim, client)
    await sim.aclose()
    assert response.status_code == status, response.text
    expected_type = {200: "application/hal+json", 201: "application/hal+json"}.get(
        status, "application/problem+json"
    )
    if name.startswith("oauth_token_response"):
        expected_type = "application/json"
    assert response.headers["content-type"] == expected_type
    assert shape_mismatches(response.json(), fixture_json(name)) == []


@pytest.mark.parametrize(
    ("fault", "fixture"),
    [("block", "errors/403_ip_block_nginx.html"), ("html_429", "errors/429_gateway_html.html")],
)
async def test_html_error_bodies_match_fixtures(
    fault: str, fixture: str, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> None:
    sim = Simulator(make_config())
    if fault == "block":
        sim.faults.update(sim.clock, block_seconds=60)
    else:
        sim.faults.update(sim.clock, html_429=True, storm_seconds=60)
    async with make_client(sim) as client:
        response = await client.get("/api/v4/leads")
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == (FIXTURES / "api" / fixture).read_text()
    assert "retry-after" not in response.headers


def test_shape_helper_detects_differences() -> None:
    ref = {"a": 1, "b": [{"c": "x"}], "d": None}
    assert shape_mismatches({"a": 2, "b": [{"c": "y"}], "d": 5}, ref) == []
    assert shape_mismatches({"a": "2", "b": [{"c": "y"}], "d": 5}, ref)
    assert shape_mismatches({"a": 2, "b": [], "d": 5}, ref)
    assert shape_mismatches({"a": 2, "b": [{"c": "y", "e": 1}], "d": 5}, ref)
    assert shape_mismatches({"a": True, "b": [{"c": "y"}], "d": 5}, ref)
    assert TOKEN


async def test_every_event_the_simulator_writes_has_the_fixture_envelope(
    make_client: Callable[[Simulator], httpx.AsyncClient],
) -> None:
    """Events of every kind (companies, links, fields, stage moves …) against events_list.json:
    the envelope key by key; value_before/value_after per type are checked where they are made."""
    sim = Simulator(make_config())
    rng = random.Random(3)
    for _ in range(150):
        random_mutation(sim, rng)
    async with make_client(sim) as client:
        body = (await client.get("/api/v4/events", params={"limit": 100})).json()
    ref = fixture_json("events_list.json")
    envelope = [
        {k: v for k, v in e.items() if k not in ("value_after", "value_before")}
        for e in ref["_embedded"]["events"]
    ]
    events = body["_embedded"]["events"]
    types = {e["type"] for e in events}
    assert {"company_linked", "entity_linked", "lead_status_changed"} <= types
    for event in events:
        assert isinstance(event["value_after"], list) and isinstance(event["value_before"], list)
        shown = {k: v for k, v in event.items() if k not in ("value_after", "value_before")}
        assert shape_mismatches([shown], envelope) == []
        kind = {"lead": "leads", "contact": "contacts", "company": "companies"}[
            event["entity_type"]
        ]
        assert (
            f"/api/v4/{kind}/{event['entity_id']}"
            in event["_embedded"]["entity"]["_links"]["self"]["href"]
        )
