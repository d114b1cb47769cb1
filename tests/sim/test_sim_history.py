"""Loss reasons and stage history: the endpoints, ``with=loss_reason``, the
``lead_status_changed`` events and the exact record of moves they must agree with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from kommo_sim import Simulator
from tests.sim.helpers import fixture_json, make_config, shape_mismatches

LOST, WON = 143, 142


async def all_events(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of ``/api/v4/events``, following ``_links.next``."""
    events: list[dict[str, Any]] = []
    response = await client.get("/api/v4/events", params={"limit": 100, **params})
    while response.status_code == 200:
        body = response.json()
        assert len(body["_embedded"]["events"]) <= 100
        events += body["_embedded"]["events"]
        if "next" not in body["_links"]:
            break
        response = await client.get(body["_links"]["next"]["href"])
    assert response.status_code in (200, 204)
    return events


async def test_loss_reasons_endpoint_and_with_loss_reason(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    response = await client.get("/api/v4/leads/loss_reasons")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hal+json"
    body = response.json()
    reasons = body["_embedded"]["loss_reasons"]
    assert {"self"} <= set(body["_links"]) and body["_total_items"] == len(reasons) == 3
    for reason in reasons:
        assert set(reason) == {"id", "name", "sort", "created_at", "updated_at", "_links"}
        assert isinstance(reason["id"], int) and isinstance(reason["name"], str)
    open_lead = next(lead for lead in sim.state.leads if lead.status_id not in (WON, LOST))
    sim.update_lead(open_lead.id, status_id=LOST)
    shown = (
        await client.get(f"/api/v4/leads/{open_lead.id}", params={"with": "loss_reason"})
    ).json()
    assert shown["loss_reason_id"] in {r["id"] for r in reasons}
    assert shown["_embedded"]["loss_reason"] == [
        r for r in reasons if r["id"] == shown["loss_reason_id"]
    ]
    plain = (await client.get(f"/api/v4/leads/{open_lead.id}")).json()
    assert "loss_reason" not in plain["_embedded"]
    sim.update_lead(
        open_lead.id, status_id=sim.state.pipeline(open_lead.pipeline_id).first_open().id
    )
    reopened = (
        await client.get(f"/api/v4/leads/{open_lead.id}", params={"with": "loss_reason"})
    ).json()
    assert reopened["loss_reason_id"] is None and reopened["_embedded"]["loss_reason"] == []
    listed = (
        await client.get("/api/v4/leads", params={"with": "loss_reason", "limit": 250})
    ).json()
    for lead in listed["_embedded"]["leads"]:
        assert (lead["loss_reason_id"] is not None) == (lead["status_id"] == LOST)
        assert len(lead["_embedded"]["loss_reason"]) == (lead["status_id"] == LOST)


async def test_loss_reason_mutations(client: httpx.AsyncClient, sim: Simulator) -> None:
    added = sim.add_loss_reason("Out of stock")
    sim.clock.advance(60)
    sim.rename_loss_reason(4203748, "Price too high")
    reasons = (await client.get("/api/v4/leads/loss_reasons")).json()["_embedded"]["loss_reasons"]
    by_id = {r["id"]: r for r in reasons}
    assert by_id[added["id"]]["name"] == "Out of stock"
    assert by_id[4203748]["name"] == "Price too high"
    assert by_id[4203748]["updated_at"] == sim.clock.now_s() > by_id[4203748]["created_at"]
    lead_id = next(lead.id for lead in sim.state.leads if lead.status_id not in (WON, LOST))
    sim.update_lead(lead_id, status_id=LOST, loss_reason_id=added["id"])
    assert sim.leads[lead_id]["loss_reason_id"] == added["id"]
    one = await client.get(f"/api/v4/leads/loss_reasons/{added['id']}")
    assert one.json() == by_id[added["id"]]


def test_every_move_is_an_event_and_a_record() -> None:
    sim = Simulator(make_config())
    before_events, before_moves = len(sim.events), len(sim.status_changes)
    lead = next(lead for lead in sim.state.leads if lead.status_id not in (WON, LOST))
    pipeline = sim.state.pipeline(lead.pipeline_id)
    start = (lead.pipeline_id, lead.status_id)
    sim.clock.advance(10)
    sim.update_lead(lead.id, status_id=WON, by=0)
    sim.clock.advance(10)
    sim.update_lead(lead.id, price=5)  # no move
    other = sim.state.pipelines[1]
    sim.update_lead(lead.id, pipeline_id=other.id, by=sim.state.users[1].id)
    moves = sim.status_changes[before_moves:]
    assert [
        (m["pipeline_id_before"], m["status_id_before"], m["pipeline_id"], m["status_id"])
        for m in moves
    ] == [
        (*start, pipeline.id, WON),
        (pipeline.id, WON, other.id, other.first_open().id),
    ]
    assert [m["changed_by"] for m in moves] == [0, sim.state.users[1].id]
    assert [m["changed_at"] for m in moves] == [sim.clock.now_s() - 10, sim.clock.now_s()]
    events = [e for e in sim.events.events[before_events:] if e.type == "lead_status_changed"]
    assert [e.id for e in events] == [m["event_id"] for m in moves]
    for event, move in zip(events, moves, strict=True):
        assert event.value_before == [
            {
                "lead_status": {
                    "id": move["status_id_before"],
                    "pipeline_id": move["pipeline_id_before"],
                }
            }
        ]
        assert event.value_after == [
            {"lead_status": {"id": move["status_id"], "pipeline_id": move["pipeline_id"]}}
        ]
        assert (event.entity_id, event.created_by, event.created_at) == (
            lead.id,
            move["changed_by"],
            move["changed_at"],
        )


def test_seeded_leads_have_a_past() -> None:
    sim = Simulator(make_config(leads=100))
    moves: dict[int, list[dict[str, Any]]] = {}
    for move in sim.status_changes:
        moves.setdefault(move["lead_id"], []).append(move)
    for lead in sim.state.leads:
        incoming = sim.state.status(lead.pipeline_id, lead.status_id).type == 1
        history = moves.get(lead.id, [])
        if incoming:
            assert history == []
            continue
        assert 1 <= len(history) <= 5
        times = [m["changed_at"] for m in history]
        assert (
            times == sorted(times)
            and lead.created_at <= times[0]
            and times[-1] <= sim.clock.now_s()
        )
        assert (history[-1]["pipeline_id"], history[-1]["status_id"]) == (
            lead.pipeline_id,
            lead.status_id,
        )
        for earlier, later in zip(history, history[1:], strict=False):
            assert (earlier["pipeline_id"], earlier["status_id"]) == (
                later["pipeline_id_before"],
                later["status_id_before"],
            )
        assert all(
            (m["pipeline_id_before"], m["status_id_before"]) != (m["pipeline_id"], m["status_id"])
            for m in history
        )
    assert sum(len(h) for h in moves.values()) > 2 * len(moves) * 0.7  # several moves each
    assert Simulator(make_config(history=False)).status_changes == []


async def test_events_api_serves_the_history(
    make_client: Callable[[Simulator], httpx.AsyncClient],
) -> None:
    sim = Simulator(make_config(leads=120))
    async with make_client(sim) as client:
        await _history_pages(client, sim)


async def _history_pages(client: httpx.AsyncClient, sim: Simulator) -> None:
    events = await all_events(client, **{"filter[type][]": "lead_status_changed"})
    assert len(events) == len(sim.status_changes) > 100  # more than one page
    assert {e["id"] for e in events} == {m["event_id"] for m in sim.status_changes}
    created = [e["created_at"] for e in events]
    assert created == sorted(created, reverse=True)  # newest first (undocumented; ours)
    ref = fixture_json("events_list.json")
    assert (
        shape_mismatches(
            {"_page": 1, "_links": {"self": {"href": ""}}, "_embedded": {"events": events[:100]}},
            ref,
        )
        == []
    )
    truth = {m["event_id"]: m for m in sim.status_changes}
    for event in events:
        move = truth[event["id"]]
        assert event["value_after"] == [
            {"lead_status": {"id": move["status_id"], "pipeline_id": move["pipeline_id"]}}
        ]
        assert event["entity_id"] == move["lead_id"] and event["created_by"] == move["changed_by"]
    ascending = await all_events(
        client, **{"filter[type][]": "lead_status_changed", "order[created_at]": "asc"}
    )
    assert [e["id"] for e in ascending] == [e["id"] for e in reversed(events)]
    lead_id = sim.status_changes[0]["lead_id"]
    mine = await all_events(
        client,
        **{
            "filter[entity]": "lead",
            "filter[entity_id][]": lead_id,
            "filter[type]": "lead_status_changed",
        },
    )
    assert sorted(e["id"] for e in mine) == sorted(
        m["event_id"] for m in sim.status_changes if m["lead_id"] == lead_id
    )
    middle = sorted(created)[len(created) // 2]
    window = await all_events(
        client,
        **{
            "filter[type][]": "lead_status_changed",
            "filter[created_at][from]": middle,
            "filter[created_at][to]": middle + 86400,
        },
    )
    assert window and all(middle <= e["created_at"] <= middle + 86400 for e in window)
    assert len(window) == sum(middle <= c <= middle + 86400 for c in created)
    one = await client.get(events[0]["_links"]["self"]["href"])
    assert one.json() == events[0]


async def test_entity_id_filter_rules(client: httpx.AsyncClient, sim: Simulator) -> None:
    ids = list(sim.state.leads.rows)
    without_entity = await client.get("/api/v4/events", params={"filter[entity_id][]": ids[0]})
    too_many = await client.get(
        "/api/v4/events",
        params=[("filter[entity]", "lead")] + [("filter[entity_id][]", i) for i in ids[:11]],
    )
    assert without_entity.status_code == too_many.status_code == 400
    assert (
        await client.get(
            "/api/v4/events", params={"filter[entity]": "lead", "filter[entity_id][]": ids[0]}
        )
    ).status_code in (200, 204)
