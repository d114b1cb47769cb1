"""Seeded data, mutations, events, snapshots and random changes."""

from __future__ import annotations

import random
import re

import httpx
import pytest

from kommo_sim import NotFound, Simulator, random_mutation
from kommo_sim.seed import CONTACT_PHONE
from tests.sim.helpers import make_config


def test_seed_is_deterministic_and_realistic() -> None:
    one, two = Simulator(make_config(seed=5)), Simulator(make_config(seed=5))
    assert one.leads == two.leads and one.contacts == two.contacts
    assert Simulator(make_config(seed=6)).leads != one.leads
    big = Simulator(make_config(leads=400, contacts=300))
    for pipeline in big.state.pipelines:
        ids = [s.id for s in pipeline.statuses]
        assert pipeline.statuses[0].type == 1 and ids[-2:] == [142, 143]
    assert min(big.state.leads.rows) == 24000001 and min(big.state.contacts.rows) == 35000001
    assert not set(big.lead_tags_dict) & set(big.contact_tags_dict)
    phones = [
        v["value"] for c in big.state.contacts for v in c.custom_fields.get(CONTACT_PHONE, [])
    ]
    assert any(re.fullmatch(r"9\d\d \d{3} \d{3}", p) for p in phones)
    assert any(p.startswith("'9") for p in phones) and any(p.startswith("0051") for p in phones)
    assert any(p.startswith("+1 (555)") for p in phones)
    assert any(p.startswith("+44") for p in phones)
    counts = [len(c.custom_fields.get(CONTACT_PHONE, [])) for c in big.state.contacts]
    assert 0 in counts and max(counts) >= 2
    assert any(c["custom_fields_values"] is None for c in big.contacts.values())
    types = {
        f["field_type"] for lead in big.leads.values() for f in lead["custom_fields_values"] or []
    }
    assert types == {
        "select",
        "text",
        "date",
        "checkbox",
        "numeric",
        "multiselect",
        "radiobutton",
        "date_time",
        "birthday",
        "url",
        "textarea",
        "price",
        "monetary",
        "category",
        "tracking_data",
    }
    assert any(lead["_embedded"]["contacts"] for lead in big.leads.values())


def test_changes_in_one_second_share_updated_at() -> None:
    sim = Simulator(make_config())
    a, b = list(sim.state.leads.rows)[:2]
    sim.clock.advance(0.3)
    sim.update_lead(a, price=1)
    sim.clock.advance(0.3)
    sim.update_lead(b, price=2)
    assert sim.leads[a]["updated_at"] == sim.leads[b]["updated_at"] == sim.clock.now_s()


def test_events_for_each_kind_of_change() -> None:
    sim = Simulator(make_config())
    lead = next(
        lead for lead in sim.state.leads if lead.status_id not in (142, 143) and lead.contacts
    )
    contact_id = next(iter(lead.contacts))
    before = len(sim.events)
    sim.update_lead(
        lead.id,
        status_id=142,
        responsible_user_id=sim.state.users[-1].id
        if lead.responsible_user_id != sim.state.users[-1].id
        else sim.state.users[0].id,
        name="new name",
        price=lead.price + 1,
    )
    sim.set_lead_tags(lead.id, ["fresh"])
    sim.set_lead_tags(lead.id, [])
    sim.unlink_contact(lead.id, contact_id)
    sim.set_contact_phones(contact_id, ["987654321"])
    sim.delete_lead(lead.id, by=0)
    sim.restore_lead(lead.id)
    new = sim.events.events[before:]
    types = [e.type for e in new]
    for expected in (
        "lead_status_changed",
        "entity_responsible_changed",
        "name_field_changed",
        "sale_field_changed",
        "entity_tag_added",
        "entity_tag_deleted",
        "entity_unlinked",
        "custom_field_value_changed",
        "lead_deleted",
        "lead_restored",
    ):
        assert expected in types
    status = next(e for e in new if e.type == "lead_status_changed")
    assert status.value_after == [{"lead_status": {"id": 142, "pipeline_id": lead.pipeline_id}}]
    tag_added = next(e for e in new if e.type == "entity_tag_added")
    assert tag_added.value_after == [{"tag": {"name": "fresh"}}]
    unlinked = [e for e in new if e.type == "entity_unlinked"]
    assert {(e.entity_type, e.value_before[0]["link"]["entity"]["type"]) for e in unlinked} == {
        ("lead", "contact"),
        ("contact", "lead"),
    }
    deleted = next(e for e in new if e.type == "lead_deleted")
    assert deleted.created_by == 0 and deleted.value_before == deleted.value_after == []
    assert len({e.id for e in sim.events.events}) == len(sim.events)


def test_links_tags_and_snapshots() -> None:
    sim = Simulator(make_config())
    lead_id = int(sim.create_lead(name="x", tags=["a", "b"])["id"])
    c1, c2 = list(sim.state.contacts.rows)[:2]
    sim.link_contact(lead_id, c1)
    sim.link_contact(lead_id, c2, is_main=True)
    assert [(c["id"], c["is_main"]) for c in sim.leads[lead_id]["_embedded"]["contacts"]] == [
        (c1, False),
        (c2, True),
    ]
    assert lead_id in {x["id"] for x in sim.contacts[c2]["_embedded"]["leads"]}
    sim.unlink_contact(lead_id, c2)
    assert [(c["id"], c["is_main"]) for c in sim.leads[lead_id]["_embedded"]["contacts"]] == [
        (c1, True)
    ]
    sim.remove_lead_tag(lead_id, "a")
    sim.add_lead_tag(lead_id, "c")
    assert [t["name"] for t in sim.leads[lead_id]["_embedded"]["tags"]] == ["b", "c"]
    tag_id = sim.leads[lead_id]["_embedded"]["tags"][0]["id"]
    sim.rename_tag("leads", tag_id, "bee")
    assert sim.lead_tags_dict[tag_id]["name"] == "bee"
    sim.delete_contact(c1)
    assert sim.contacts[c1]["is_deleted"] is True
    assert sim.leads[lead_id]["_embedded"]["contacts"] == []
    sim.restore_contact(c1)
    sim.delete_lead(lead_id)
    assert sim.leads[lead_id]["is_deleted"] is True
    with pytest.raises(NotFound):
        sim.update_lead(lead_id, price=1)
    with pytest.raises(ValueError):
        sim.update_lead(next(iter(sim.state.leads.rows)), colour="red")


def test_random_mutations_are_deterministic_and_varied() -> None:
    runs = []
    for _ in range(2):
        sim = Simulator(make_config())
        rng = random.Random(42)
        runs.append(([random_mutation(sim, rng) for _ in range(300)], sim.leads, sim.contacts))
    (done, leads, contacts), (done2, leads2, contacts2) = runs
    assert done == done2 and leads == leads2 and contacts == contacts2
    verbs = {d.split()[0] for d in done}
    assert {
        "update",
        "status",
        "tags",
        "phones",
        "delete",
        "restore",
        "create_lead",
        "link",
        "unlink",
        "bulk",
        "create_contact",
        "edit",
        "create_company",
    } <= verbs
    companies = [d for d in done if "compan" in d]
    assert 0.05 < len(companies) / len(done) < 0.25  # a modest rate
    assert {"link", "unlink"} <= {d.split()[0] for d in companies}


async def test_control_api_drives_the_simulator(sim: Simulator, client: httpx.AsyncClient) -> None:
    lead_id = next(iter(sim.state.leads.rows))
    updated = await client.post(
        "/_sim/mutations/update_lead",
        json={"lead_id": lead_id, "name": "via http", "custom_fields": {"752017": 77}},
    )
    assert updated.status_code == 200 and updated.json()["result"]["name"] == "via http"
    assert sim.leads[lead_id]["name"] == "via http"
    missing = await client.post("/_sim/mutations/delete_lead", json={"lead_id": 1})
    bad = await client.post("/_sim/mutations/update_lead", json={"lead_id": lead_id, "x": 1})
    unknown = await client.post("/_sim/mutations/drop_database", json={})
    assert (missing.status_code, bad.status_code, unknown.status_code) == (404, 400, 404)
    denied = await client.get("/_sim/state", headers={"Authorization": "Bearer no"})
    assert denied.status_code == 401
    t0 = (await client.get("/_sim/clock")).json()["now"]
    moved = await client.post("/_sim/clock", json={"advance": 90})
    assert moved.json()["now"] == pytest.approx(t0 + 90)
    faults = await client.post("/_sim/faults", json={"error_rate": 1.0})
    assert faults.json()["error_rate"] == 1.0
    assert (await client.get("/api/v4/account")).status_code == 500
    assert (await client.post("/_sim/faults", json={"reset": True})).json()["error_rate"] == 0
    assert (await client.post("/_sim/faults", json={"nonsense": 1})).status_code == 400
    counters = (await client.get("/_sim/counters")).json()
    assert {"endpoint": "GET /api/v4/account", "status": 500, "count": 1} in counters
    assert (await client.request("DELETE", "/_sim/counters")).status_code == 204
    assert not sim.counters
    state = (await client.get("/_sim/state")).json()
    assert len(state["leads"]) == len(sim.state.leads)
    assert {lead["id"]: lead for lead in state["leads"]}[lead_id]["name"] == "via http"
    done = (await client.post("/_sim/random", json={"seed": 1, "count": 5})).json()["result"]
    assert len(done) == 5
    code = (await client.post("/_sim/oauth/code")).json()["code"]
    assert code.startswith("def50200")
    company = await client.post(
        "/_sim/mutations/create_company", json={"name": "Via HTTP", "leads": [lead_id]}
    )
    company_id = company.json()["result"]["id"]
    assert sim.leads[lead_id]["_embedded"]["companies"][0]["id"] == company_id
    typed = await client.post(
        "/_sim/mutations/set_custom_fields",
        json={"kind": "companies", "entity_id": company_id, "values": {"736009": "12"}},
    )
    assert typed.status_code == 200
    moves = (await client.get("/_sim/status_changes")).json()
    assert moves == sim.status_changes and moves
