"""Custom fields as data: definitions (shape, paging at 50), values by type in answers and
webhooks, the quirks of real answers, and changes of definitions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kommo_sim import Simulator
from kommo_sim.fields import CONTACT_PHONE, LEAD_MEETING
from tests.sim.helpers import (
    HOOK_URL,
    Receiver,
    fixture_json,
    make_config,
    parse_php_form,
    shape_mismatches,
)
from tests.sim.scenarios import drain

KINDS = ("leads", "contacts", "companies")
LEAD_TYPES = {
    "text",
    "numeric",
    "checkbox",
    "select",
    "multiselect",
    "radiobutton",
    "date",
    "date_time",
    "birthday",
    "url",
    "textarea",
    "price",
    "monetary",
    "category",
}
# What the API's ``value`` is, by field type (API.md §1.1, §8).
VALUE_TYPES = {
    "text": str,
    "textarea": str,
    "url": str,
    "tracking_data": str,
    "numeric": str,
    "price": str,
    "monetary": str,
    "checkbox": bool,
    "date": int,
    "date_time": int,
    "birthday": int,
    "select": str,
    "multiselect": str,
    "radiobutton": str,
    "category": str,
    "multitext": str,
}
OPTION_TYPES = {"select", "multiselect", "radiobutton", "category", "multitext"}


def all_values(sim: Simulator) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind, field, value) for every value the API shows."""
    out = []
    for kind, entities in (
        ("leads", sim.leads),
        ("contacts", sim.contacts),
        ("companies", sim.companies),
    ):
        for entity in entities.values():
            for field in entity["custom_fields_values"] or []:
                out += [(kind, field, value) for value in field["values"]]
    return out


@pytest.mark.parametrize("kind", KINDS)
async def test_definitions_match_the_fixture(
    kind: str, client: httpx.AsyncClient, sim: Simulator
) -> None:
    response = await client.get(f"/api/v4/{kind}/custom_fields")
    body = response.json()
    assert response.status_code == 200
    assert shape_mismatches(body, fixture_json("leads_custom_fields.json")) == []
    fields = body["_embedded"]["custom_fields"]
    assert {f["entity_type"] for f in fields} == {kind}
    types = {f["type"] for f in fields}
    assert LEAD_TYPES <= types  # every type, for every kind
    assert ("multitext" in types) == (kind != "leads")  # PHONE and EMAIL: contacts, companies
    for field in fields:
        if field["type"] in OPTION_TYPES:
            assert field["enums"] and all(set(e) == {"id", "value", "sort"} for e in field["enums"])
        else:
            assert field["enums"] is None
    one = await client.get(fields[0]["_links"]["self"]["href"])
    assert one.json() == fields[0]
    if kind != "leads":
        codes = {f["code"] for f in fields if f["type"] == "multitext"}
        assert codes == {"PHONE", "EMAIL"}


async def test_definitions_page_at_50(client: httpx.AsyncClient, sim: Simulator) -> None:
    seeded = len(sim.state.fields_of("leads"))
    for i in range(60 - seeded):
        sim.add_custom_field("leads", f"Extra {i}", "text")
    first = (await client.get("/api/v4/leads/custom_fields", params={"limit": 250})).json()
    assert len(first["_embedded"]["custom_fields"]) == 50
    assert (first["_total_items"], first["_page"], first["_page_count"]) == (60, 1, 2)
    assert "limit=50" in first["_links"]["next"]["href"]
    second = (await client.get(first["_links"]["next"]["href"])).json()
    assert len(second["_embedded"]["custom_fields"]) == 10 and "next" not in second["_links"]
    assert second["_links"]["last"] == second["_links"]["self"]
    ids = [f["id"] for page in (first, second) for f in page["_embedded"]["custom_fields"]]
    assert sorted(ids) == sorted(sim.state.fields_of("leads")) and len(set(ids)) == 60
    past = await client.get("/api/v4/leads/custom_fields", params={"page": 3})
    assert past.status_code == 204
    small = (await client.get("/api/v4/leads/custom_fields", params={"limit": 7})).json()
    assert len(small["_embedded"]["custom_fields"]) == 7 and small["_page_count"] == 9


def test_values_come_as_real_answers_send_them() -> None:
    sim = Simulator(make_config(leads=200, contacts=150, companies=40))
    values = all_values(sim)
    seen_types = {field["field_type"] for _, field, _ in values}
    assert LEAD_TYPES <= seen_types
    for _, field, value in values:
        assert isinstance(value["value"], VALUE_TYPES[field["field_type"]]), (field, value)
        if field["field_type"] in OPTION_TYPES:
            assert isinstance(value["enum_id"], int)
            code_key = "enum" if "enum" in value else "enum_code"
            assert set(value) == {"value", "enum_id", code_key}
        else:
            assert set(value) == {"value"}
    timezone_offset = -5 * 3600  # America/Lima
    for _, field, value in values:
        if field["field_type"] in ("date", "birthday"):
            assert (value["value"] + timezone_offset) % 86400 == 0, (field, value)
    numeric = [
        v["value"] for _, f, v in values if f["field_type"] in ("numeric", "price", "monetary")
    ]
    assert numeric and all(float(n) >= 0 for n in numeric)
    selects = [
        v
        for _, f, v in values
        if f["field_type"] in ("select", "multiselect", "radiobutton", "category")
    ]
    assert any(v["enum_code"] is None for v in selects) and any(v["enum_code"] for v in selects)


def test_quirks_null_legacy_enum_and_empty_values() -> None:
    sim = Simulator(make_config(leads=200, contacts=150, companies=40))
    entities = [*sim.leads.values(), *sim.contacts.values(), *sim.companies.values()]
    assert any(e["custom_fields_values"] is None for e in entities)
    assert all(e["custom_fields_values"] != [] for e in entities)
    empty = [f for e in entities for f in e["custom_fields_values"] or [] if f["values"] == []]
    assert empty, "some entity shows a field with an empty values list"
    phones = [
        v
        for c in sim.contacts.values()
        for f in c["custom_fields_values"] or []
        if f["field_code"] == "PHONE"
        for v in f["values"]
    ]
    legacy = [v for v in phones if "enum" in v]
    modern = [v for v in phones if "enum_code" in v]
    assert legacy and modern and len(legacy) + len(modern) == len(phones)
    assert {v["enum"] for v in legacy} <= {"WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"}


async def test_webhook_custom_fields_by_type(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["update_lead", "update_contact"])
    lead_id = int(sim.create_lead(name="typed")["id"])
    sim.update_lead(
        lead_id,
        custom_fields={
            752009: "Google",
            752013: 1748293200,
            752015: False,
            752017: 14012,
            752019: ["Hardware", "Support"],
            752023: 1748293201,
            752025: 631152000,
            752033: "2500.50",
        },
    )
    contact_id = int(sim.create_contact(name="Jane", phones=["+15550001111"])["id"])
    sim.clear_custom_field("contacts", contact_id, CONTACT_PHONE, keep_empty=True)
    await drain(sim)
    lead = parse_php_form(receiver.bodies[0])["leads"]["update"]["0"]["custom_fields"]
    by_id = {f["id"]: f for f in lead.values()}
    assert by_id["752009"]["values"]["0"] == {"value": "Google", "enum": "932073"}
    assert by_id["752013"]["values"] == {"0": str(sim.state.account.midnight(1748293200))}
    assert by_id["752015"]["values"]["0"] == {"value": "0"}
    assert by_id["752017"]["values"]["0"] == {"value": "14012"}
    assert [v["enum"] for v in by_id["752019"]["values"].values()] == ["932101", "932105"]
    assert by_id["752023"]["values"] == {"0": "1748293201"}
    assert by_id["752025"]["values"] == {"0": str(sim.state.account.midnight(631152000))}
    assert by_id["752033"]["values"]["0"] == {"value": "2500.50"}
    contact = parse_php_form(receiver.bodies[-1])["contacts"]["update"]["0"]["custom_fields"]
    assert {"id": str(CONTACT_PHONE), "name": "Phone", "code": "PHONE"} in contact.values()
    shown = next(
        f
        for f in sim.contacts[contact_id]["custom_fields_values"]
        if f["field_id"] == CONTACT_PHONE
    )
    assert shown["values"] == []


def test_set_and_clear_values_and_bad_input() -> None:
    sim = Simulator(make_config())
    lead_id = next(iter(sim.state.leads.rows))
    sim.set_custom_fields("leads", lead_id, {"752021": "High", str(LEAD_MEETING): 1748293200})
    shown = {f["field_id"]: f["values"] for f in sim.leads[lead_id]["custom_fields_values"]}
    assert shown[752021] == [
        {"value": "High", "enum_id": shown[752021][0]["enum_id"], "enum_code": None}
    ]
    before = sim.leads[lead_id]
    for bad in ({752017: "lots"}, {752021: "Urgent"}, {1: "x"}):
        with pytest.raises(ValueError):
            sim.set_custom_fields("leads", lead_id, bad)
    assert sim.leads[lead_id] == before  # a failed change changes nothing
    sim.set_custom_fields("leads", lead_id, {752021: None, LEAD_MEETING: []})
    after = {f["field_id"] for f in sim.leads[lead_id]["custom_fields_values"] or []}
    assert not {752021, LEAD_MEETING} & after
    with pytest.raises(ValueError):
        sim.set_custom_fields("tasks", lead_id, {})


async def test_definition_changes_show_on_entities(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    lead_id = next(iter(sim.state.leads.rows))
    sim.set_custom_fields("leads", lead_id, {752009: "Google"})
    stamp = sim.leads[lead_id]["updated_at"]
    sim.rename_custom_field("leads", 752009, "Lead source")
    sim.rename_enum("leads", 752009, 932073, "Google Ads")
    field = next(f for f in sim.leads[lead_id]["custom_fields_values"] if f["field_id"] == 752009)
    assert field["field_name"] == "Lead source" and field["values"][0]["value"] == "Google Ads"
    assert sim.leads[lead_id]["updated_at"] == stamp  # definitions change silently
    listed = (await client.get("/api/v4/leads/custom_fields/752009")).json()
    assert listed["name"] == "Lead source" and listed["enums"][0]["value"] == "Google Ads"
    added = sim.add_custom_field("leads", "Channel", "select", options=["Web", "Phone"])
    option = sim.add_enum("leads", added["id"], "Walk-in")
    assert [
        e["value"] for e in (await client.get(added["_links"]["self"]["href"])).json()["enums"]
    ] == ["Web", "Phone", "Walk-in"]
    sim.set_custom_fields("leads", lead_id, {added["id"]: option["id"]})
    assert added["id"] in {f["field_id"] for f in sim.leads[lead_id]["custom_fields_values"]}
    sim.delete_custom_field("leads", added["id"])
    assert (await client.get(added["_links"]["self"]["href"])).status_code == 204
    assert added["id"] not in {f["field_id"] for f in sim.leads[lead_id]["custom_fields_values"]}
    with pytest.raises(ValueError):
        sim.delete_custom_field("contacts", CONTACT_PHONE)
    with pytest.raises(ValueError):
        sim.add_custom_field("leads", "Broken", "select")
