"""Incoming leads (unsorted): created in the Incoming stage, ``unsorted[add]`` bodies in the
amoCRM doc layout, accept and decline as ``unsorted[delete]`` with their results."""

from __future__ import annotations

import httpx
import pytest

from kommo_sim import DOCUMENTED_SETTINGS, Simulator
from tests.sim.helpers import HOOK_URL, Receiver, form_paths, parse_php_form
from tests.sim.scenarios import drain

ADD_PATHS = {  # the keys of the doc's "Добавление неразобранного" example we send
    "unsorted.add.*.uid",
    "unsorted.add.*.category",
    "unsorted.add.*.account_id",
    "unsorted.add.*.user_id",
    "unsorted.add.*.source",
    "unsorted.add.*.pipeline_id",
    "unsorted.add.*.source_data.form_id",
    "unsorted.add.*.source_data.form_type",
    "unsorted.add.*.source_data.date",
    "unsorted.add.*.source_data.from",
    "unsorted.add.*.source_data.origin.ip",
    "unsorted.add.*.source_data.origin.referer",
    "unsorted.add.*.data.leads.*.date_create",
    "unsorted.add.*.data.leads.*.created_user_id",
    "unsorted.add.*.data.leads.*.modified_user_id",
    "unsorted.add.*.data.leads.*.main_user_id",
    "unsorted.add.*.data.contacts.*.name",
    "unsorted.add.*.data.contacts.*.custom_fields.*.id",
    "unsorted.add.*.data.contacts.*.custom_fields.*.values.*.enum",
    "unsorted.add.*.data.contacts.*.custom_fields.*.values.*.value",
    "unsorted.add.*.data.contacts.*.date_create",
    "unsorted.add.*.data.contacts.*.created_user_id",
}


def unsorted_bodies(receiver: Receiver) -> list[dict[str, object]]:
    return [t for t in map(parse_php_form, receiver.bodies) if "unsorted" in t]


async def test_incoming_lead_and_its_add_body(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"], unsorted=True)
    lead = sim.create_incoming_lead(
        name="Form request", contact_name="Valeria", phones=["+51 987 654 321"]
    )
    status = sim.state.status(lead["pipeline_id"], lead["status_id"])
    assert status.type == 1 and lead["created_by"] == 0
    contact_id = lead["_embedded"]["contacts"][0]["id"]
    assert sim.contacts[contact_id]["is_unsorted"] is True
    await drain(sim)
    (body,) = unsorted_bodies(receiver)
    assert set(body) == {"account", "unsorted"}
    assert form_paths(body) - {p for p in form_paths(body) if p.startswith("account.")} == ADD_PATHS
    entry = body["unsorted"]["add"]["0"]  # type: ignore[index]
    assert entry["category"] == "forms" and len(entry["uid"]) == 60
    assert entry["pipeline_id"] == str(lead["pipeline_id"])
    assert (
        entry["data"]["contacts"]["0"]["custom_fields"]["0"]["values"]["0"]["value"]
        == "+51 987 654 321"
    )
    added = [parse_php_form(b) for b in receiver.bodies if "unsorted" not in parse_php_form(b)]
    assert added[0]["leads"]["add"]["0"]["id"] == str(lead["id"])  # the lead itself: leads[add]


async def test_accept_moves_the_lead_and_sends_the_result(
    sim: Simulator, receiver: Receiver
) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["update_lead", "status_lead"], unsorted=True)
    lead = sim.create_incoming_lead(name="Call", contact_name="Diego", category="sip")
    contact_id = lead["_embedded"]["contacts"][0]["id"]
    uid = sim.state.leads.rows[lead["id"]].incoming.uid  # type: ignore[union-attr]
    moves = len(sim.status_changes)
    sim.clock.advance(30)
    accepted = sim.accept_incoming(lead["id"])
    assert sim.state.status(accepted["pipeline_id"], accepted["status_id"]).type == 0
    assert sim.contacts[contact_id]["is_unsorted"] is False
    (move,) = sim.status_changes[moves:]
    assert (move["status_id_before"], move["status_id"]) == (
        lead["status_id"],
        accepted["status_id"],
    )
    await drain(sim)
    add, body = unsorted_bodies(receiver)
    assert set(add["unsorted"]) == {"add"}  # type: ignore[call-overload]
    entry = body["unsorted"]["delete"]["0"]  # type: ignore[index]
    assert entry == {
        "action": "accept",
        "uid": uid,
        "category": "sip",
        "created_at": str(sim.clock.now_s()),
        "accept_result": {"leads": {"0": str(lead["id"])}, "contacts": {"0": str(contact_id)}},
    }
    updates = [parse_php_form(b)["leads"] for b in receiver.bodies if "leads" in parse_php_form(b)]
    assert {"update", "status"} <= set(updates[-1])
    with pytest.raises(ValueError):
        sim.accept_incoming(lead["id"])  # no longer unsorted


async def test_decline_deletes_and_sends_the_result(
    sim: Simulator, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["delete_lead"], unsorted=True)
    lead = sim.create_incoming_lead(contact_name="Rosa")
    sim.decline_incoming(lead["id"])
    assert (await client.get(f"/api/v4/leads/{lead['id']}")).status_code == 204
    await drain(sim)
    _, body = unsorted_bodies(receiver)
    entry = body["unsorted"]["delete"]["0"]  # type: ignore[index]
    assert entry["action"] == "decline" and entry["decline_result"] == {
        "leads": {"0": str(lead["id"])}
    }
    assert any("delete" in parse_php_form(b).get("leads", {}) for b in receiver.bodies)


async def test_unsorted_bodies_only_where_asked(
    sim: Simulator, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    seeded = next(lead for lead in sim.state.leads if lead.incoming is not None)
    sim.create_incoming_lead(name="x")
    sim.accept_incoming(seeded.id)  # seeded Incoming leads are unsorted entries too
    await drain(sim)
    assert unsorted_bodies(receiver) == []
    switched = await client.post(
        "/_sim/webhooks/unsorted", json={"destination": HOOK_URL, "enabled": True}
    )
    assert switched.status_code == 200 and switched.json()["unsorted"] is True
    sim.create_incoming_lead(name="y")
    await drain(sim)
    assert len(unsorted_bodies(receiver)) == 1
    # no setting name for unsorted hooks is documented: the API refuses invented ones
    refused = await client.post(
        "/api/v4/webhooks", json={"destination": HOOK_URL, "settings": ["add_unsorted"]}
    )
    assert refused.status_code == 400 and "add_unsorted" not in DOCUMENTED_SETTINGS
