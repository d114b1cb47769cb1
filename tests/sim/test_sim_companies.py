"""Companies: the endpoints, their shape against the contacts fixtures, links to leads and
contacts, mutations, events and webhooks."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from kommo_sim import NotFound, Simulator
from kommo_sim.fields import COMPANY_PHONE
from tests.sim.helpers import (
    HOOK_URL,
    Receiver,
    fixture_json,
    make_config,
    parse_php_form,
    shape_mismatches,
)
from tests.sim.scenarios import drain

CONTACT_ONLY = ("first_name", "last_name", "is_unsorted")  # not in companies [A companies-api]


def company_shape(contact: dict[str, Any], embedded: tuple[str, ...] = ("tags",)) -> Any:
    """A contact fixture object turned into the company object shape."""
    ref = copy.deepcopy(contact)
    for key in CONTACT_ONLY:
        del ref[key]
    ref["_embedded"] = {k: v for k, v in ref["_embedded"].items() if k in embedded}
    return ref


def linked_company(sim: Simulator) -> int:
    """A company with phones, tags, a lead and a contact."""
    company = sim.create_company(
        name="Acme Inc",
        phones=["+51 987 654 321"],
        tags=["vip"],
        custom_fields={736009: 40, 736011: "Mining"},
    )
    lead_id = next(iter(sim.state.leads.rows))
    contact_id = next(iter(sim.state.contacts.rows))
    sim.link_company(lead_id, company["id"])
    sim.link_contact_company(contact_id, company["id"])
    return int(company["id"])


async def test_company_list_and_detail_have_the_contact_shape(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    linked_company(sim)
    listed = (await client.get("/api/v4/companies", params={"limit": 250})).json()
    ref = fixture_json("contacts_list.json")
    ref["_embedded"]["contacts"] = [company_shape(c) for c in ref["_embedded"]["contacts"]]
    ref["_embedded"]["companies"] = ref["_embedded"].pop("contacts")
    assert shape_mismatches(listed, ref) == []
    company_id = linked_company(sim)
    detail = await client.get(f"/api/v4/companies/{company_id}", params={"with": "leads,contacts"})
    contact_ref = fixture_json("contact_35000501_with_leads.json")
    contact_ref["_embedded"]["contacts"] = contact_ref["_embedded"]["leads"]
    assert detail.headers["content-type"] == "application/hal+json"
    assert (
        shape_mismatches(detail.json(), company_shape(contact_ref, ("tags", "leads", "contacts")))
        == []
    )
    assert detail.json()["custom_fields_values"][0]["field_code"] == "PHONE"


async def test_filters_order_and_204s(client: httpx.AsyncClient, sim: Simulator) -> None:
    ids = list(sim.state.companies.rows)
    picked = (
        await client.get("/api/v4/companies", params=[("filter[id][]", i) for i in ids[:3]])
    ).json()
    assert [c["id"] for c in picked["_embedded"]["companies"]] == ids[:3]
    sim.clock.advance(50)
    sim.update_company(ids[5], name="renamed")
    since: dict[str, str | int] = {
        "filter[updated_at][from]": sim.clock.now_s(),
        "order[updated_at]": "asc",
    }
    body = (await client.get("/api/v4/companies", params=since)).json()
    assert [c["id"] for c in body["_embedded"]["companies"]] == [ids[5]]
    newest = (
        await client.get("/api/v4/companies", params={"order[id]": "desc", "limit": 2})
    ).json()
    assert [c["id"] for c in newest["_embedded"]["companies"]] == sorted(ids, reverse=True)[:2]
    bad = await client.get("/api/v4/companies", params={"order[created_at]": "asc"})
    assert bad.status_code == 400
    sim.delete_company(ids[0])
    for path, params in (
        (f"/api/v4/companies/{ids[0]}", {}),
        ("/api/v4/companies/1", {}),
        ("/api/v4/companies", {"filter[id][]": ids[0]}),
        ("/api/v4/companies", {"page": 99}),
        ("/api/v4/companies/tags", {"filter[name]": "nope"}),
    ):
        response = await client.get(path, params=params)
        assert (response.status_code, response.content) == (204, b""), path
    tags = (await client.get("/api/v4/companies/tags")).json()["_embedded"]["tags"]
    assert {t["id"] for t in tags} == set(sim.state.company_tags)
    assert not set(sim.state.company_tags) & set(sim.state.contact_tags)


async def test_leads_and_contacts_embed_real_company_links(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    company_id = linked_company(sim)
    lead_id, contact_id = next(iter(sim.state.leads.rows)), next(iter(sim.state.contacts.rows))
    lead = (await client.get(f"/api/v4/leads/{lead_id}")).json()
    contact = (await client.get(f"/api/v4/contacts/{contact_id}")).json()
    for body in (lead, contact):
        (only,) = body["_embedded"]["companies"]
        assert only["id"] == company_id
        assert (await client.get(only["_links"]["self"]["href"])).status_code == 200
    company = sim.companies[company_id]
    assert [x["id"] for x in company["_embedded"]["leads"]] == [lead_id]
    assert [x["id"] for x in company["_embedded"]["contacts"]] == [contact_id]
    everything = [*sim.leads.values(), *sim.contacts.values()]
    assert all(len(e["_embedded"]["companies"]) <= 1 for e in everything)
    assert any(e["_embedded"]["companies"] for e in sim.contacts.values())
    other = sim.create_company(name="Second")["id"]
    sim.link_company(lead_id, other)  # at most one: this replaces the first
    assert [c["id"] for c in sim.leads[lead_id]["_embedded"]["companies"]] == [other]
    assert lead_id not in {x["id"] for x in sim.companies[company_id]["_embedded"]["leads"]}
    sim.delete_company(other)
    assert sim.leads[lead_id]["_embedded"]["companies"] == []
    sim.restore_company(other)
    sim.unlink_company(lead_id)
    sim.unlink_contact_company(contact_id)
    assert sim.leads[lead_id]["_embedded"]["companies"] == []
    assert sim.contacts[contact_id]["_embedded"]["companies"] == []


def test_mutations_change_what_the_api_shows() -> None:
    sim = Simulator(make_config())
    company_id = int(sim.create_company(name="Andes", phones=["999 111 222"])["id"])
    sim.set_company_phones(company_id, ["+51 1 700 1000", "987654321"])
    sim.set_company_tags(company_id, ["vip", "b2b"])
    sim.update_company(
        company_id, responsible_user_id=sim.state.users[-1].id, custom_fields={736015: True}
    )
    shown = sim.companies[company_id]
    phones = next(f for f in shown["custom_fields_values"] if f["field_id"] == COMPANY_PHONE)
    assert [v["value"] for v in phones["values"]] == ["+51 1 700 1000", "987654321"]
    assert [t["name"] for t in shown["_embedded"]["tags"]] == ["vip", "b2b"]
    assert {
        "field_id": 736015,
        "field_name": "Verified",
        "field_code": None,
        "field_type": "checkbox",
        "values": [{"value": True}],
    } in shown["custom_fields_values"]
    sim.set_company_phones(company_id, [])
    assert all(
        f["field_id"] != COMPANY_PHONE
        for f in sim.companies[company_id]["custom_fields_values"] or []
    )
    sim.delete_company(company_id)
    with pytest.raises(NotFound):
        sim.update_company(company_id, name="x")
    with pytest.raises(ValueError):
        sim.update_company(next(iter(sim.state.companies.rows)), first_name="x")


def test_company_events() -> None:
    sim = Simulator(make_config())
    before = len(sim.events)
    lead_id = next(iter(sim.state.leads.rows))
    contact_id = next(c.id for c in sim.state.contacts if c.company_id is None)
    company_id = int(sim.create_company(name="Acme")["id"])
    sim.link_company(lead_id, company_id)
    sim.link_contact_company(contact_id, company_id)
    sim.unlink_company(lead_id)
    sim.delete_company(company_id)
    sim.restore_company(company_id)
    new = [
        (e.type, e.entity_type, e.entity_id, e.value_after, e.value_before)
        for e in sim.events.events[before:]
    ]
    link = {"link": {"entity": {"type": "company", "id": company_id}}}
    assert ("company_added", "company", company_id) in {x[:3] for x in new}
    assert ("entity_linked", "lead", lead_id, [link], []) in new
    assert ("entity_linked", "contact", contact_id, [link], []) in new
    assert (
        "company_linked",
        "company",
        company_id,
        [{"link": {"entity": {"type": "lead", "id": lead_id}}}],
        [],
    ) in new
    assert (
        "company_linked",
        "company",
        company_id,
        [{"link": {"entity": {"type": "contact", "id": contact_id}}}],
        [],
    ) in new
    assert ("entity_unlinked", "lead", lead_id, [], [link]) in new
    assert (
        "company_unlinked",
        "company",
        company_id,
        [],
        [{"link": {"entity": {"type": "lead", "id": lead_id}}}],
    ) in new
    assert ("company_deleted", "company", company_id, [], []) in new
    assert ("company_restored", "company", company_id, [], []) in new


async def test_company_webhooks(sim: Simulator, receiver: Receiver) -> None:
    settings = [
        "add_company",
        "update_company",
        "delete_company",
        "restore_company",
        "responsible_company",
    ]
    sim.webhooks.subscribe(HOOK_URL, settings)
    company_id = int(sim.create_company(name="Acme Inc", tags=["vip"])["id"])
    sim.update_company(company_id, responsible_user_id=sim.state.users[-1].id)
    sim.delete_company(company_id)
    sim.restore_company(company_id)
    await drain(sim)
    bodies = [parse_php_form(b)["contacts"] for b in receiver.bodies]
    assert [sorted(b) for b in bodies] == [
        ["add"],
        ["responsible", "update"],
        ["delete"],
        ["restore"],
    ]
    assert all(item["0"]["type"] == "company" for b in bodies for item in b.values())
    assert bodies[1]["update"]["0"]["old_responsible_user_id"] == str(sim.state.users[0].id)
    assert bodies[2]["delete"]["0"] == {"id": str(company_id), "type": "company"}


async def test_contact_webhook_names_its_company(sim: Simulator, receiver: Receiver) -> None:
    contact_id = int(sim.create_contact(name="Jane")["id"])
    company_id = int(sim.create_company(name="Acme Inc")["id"])
    sim.webhooks.subscribe(HOOK_URL, ["update_contact"])
    sim.link_contact_company(contact_id, company_id)
    await drain(sim)
    sent = parse_php_form(receiver.bodies[-1])["contacts"]["update"]["0"]
    assert (sent["company_name"], sent["linked_company_id"]) == ("Acme Inc", str(company_id))
