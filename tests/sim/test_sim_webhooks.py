"""Webhook bodies, headers, subscription, the retry ladder, disabling and webhook faults."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx
import pytest

from kommo_sim import Simulator
from kommo_sim.payloads import php_quote
from tests.sim.helpers import FIXTURES, HOOK_URL, Receiver, fixture_form, form_paths, parse_php_form
from tests.sim.scenarios import KINDS, NOT_SIMULATED, drain, plain_lead


def test_every_webhook_fixture_is_covered() -> None:
    names = {
        p.name.removesuffix(".txt")
        for p in (FIXTURES / "webhooks").glob("*.txt")
        if not p.name.endswith(".decoded.txt") and p.name != "headers.txt"
    }
    assert names == set(KINDS) | NOT_SIMULATED


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_body_has_the_fixture_layout(kind: str, sim: Simulator, receiver: Receiver) -> None:
    change, setting = KINDS[kind]
    sim.webhooks.subscribe(HOOK_URL, [setting])
    change(sim)
    await drain(sim)
    expected = form_paths(parse_php_form(fixture_form(f"{kind}.txt")))
    last = receiver.bodies[-1]
    assert form_paths(parse_php_form(last)) == expected
    assert all(v == str(v) for _, v in parse_qsl(last))  # trivially strings: check encoding
    assert last.startswith("account%5Bsubdomain%5D=examplecorp&account%5Bid%5D=31000001&")


async def test_headers_and_content_type(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    plain_lead(sim)
    plain_lead(sim)
    await drain(sim)
    first, second = receiver.requests
    assert first.method == "POST" and str(first.url) == HOOK_URL
    assert first.headers["content-type"] == "application/x-www-form-urlencoded"
    assert first.headers["user-agent"] == "amoCRM-Webhooks/3.0"
    assert len(first.headers["x-amocrm-requestid"]) == 36
    assert first.headers["x-amocrm-requestid"] != second.headers["x-amocrm-requestid"]


def test_encoding_is_php_http_build_query() -> None:
    raw = fixture_form("lead_update.txt") + "&" + fixture_form("contact_update.txt")
    for pair in raw.split("&"):
        key, value = (dict(parse_qsl(pair, keep_blank_values=True))).popitem()
        assert f"{php_quote(key)}={php_quote(value)}" == pair


async def test_bulk_update_sends_one_body_with_indices(sim: Simulator, receiver: Receiver) -> None:
    ids = list(sim.state.leads.rows)[:3]
    sim.webhooks.subscribe(HOOK_URL, ["update_lead"])
    sim.bulk_update_leads(ids, price=5)
    await drain(sim)
    assert len(receiver.bodies) == 1
    sent = parse_php_form(receiver.bodies[0])["leads"]["update"]
    assert [sent[str(i)]["id"] for i in range(3)] == [str(i) for i in ids]


async def test_body_values_follow_the_lead(sim: Simulator, receiver: Receiver) -> None:
    lead_id = next(lead.id for lead in sim.state.leads if lead.status_id not in (142, 143))
    before = sim.leads[lead_id]
    sim.webhooks.subscribe(HOOK_URL, ["update_lead", "status_lead"])
    sim.clock.advance(5)
    sim.update_lead(lead_id, status_id=143)
    await drain(sim)
    tree = parse_php_form(receiver.bodies[0])
    update, status = tree["leads"]["update"]["0"], tree["leads"]["status"]["0"]
    assert update == status
    assert update["status_id"] == "143" and update["old_status_id"] == str(before["status_id"])
    assert update["last_modified"] == update["updated_at"] == str(sim.clock.now_s())
    assert sim.leads[lead_id]["updated_at"] == sim.clock.now_s()
    assert sim.leads[lead_id]["closed_at"] == sim.clock.now_s()


async def test_unsubscribed_changes_send_nothing(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["delete_contact"])
    plain_lead(sim)
    await drain(sim)
    assert receiver.requests == []


async def test_retry_ladder_after_5xx(sim: Simulator, receiver: Receiver) -> None:
    receiver.status = 503
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    plain_lead(sim)
    seen = []
    for wait in (0, 299, 1, 899, 1, 899, 1, 3599, 1, 100000):
        sim.clock.advance(wait)
        await drain(sim)
        seen.append(len(receiver.requests))
    assert seen == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert len({r.content for r in receiver.requests}) == 1


@pytest.mark.parametrize("failure", ["404", "timeout"])
async def test_other_failures_get_two_retries(
    failure: str, sim: Simulator, receiver: Receiver
) -> None:
    if failure == "404":
        receiver.status = 404
    else:
        receiver.error = httpx.ReadTimeout("slow receiver")
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    plain_lead(sim)
    for wait in (0, 300, 900, 900, 3600):
        sim.clock.advance(wait)
        await drain(sim)
    assert [a.attempt for a in sim.webhooks.attempts] == [1, 2, 3]
    assert {a.status for a in sim.webhooks.attempts} == {404 if failure == "404" else 0}


async def test_success_is_not_retried(sim: Simulator, receiver: Receiver) -> None:
    receiver.status = 204
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    plain_lead(sim)
    await drain(sim)
    sim.clock.advance(7200)
    await drain(sim)
    assert len(receiver.requests) == 1


async def test_destination_disabled_after_over_100_failures(
    sim: Simulator, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.status = 500
    sim.webhooks.subscribe(HOOK_URL, ["update_lead"])
    lead_id = next(iter(sim.state.leads.rows))
    for _ in range(100):
        sim.update_lead(lead_id, price=1)
    await drain(sim)
    assert not sim.webhooks.destinations[HOOK_URL].disabled
    sim.update_lead(lead_id, price=2)
    await drain(sim)
    listed = (await client.get("/api/v4/webhooks")).json()["_embedded"]["webhooks"][0]
    assert listed["disabled"] is True
    sent = len(receiver.requests)
    sim.update_lead(lead_id, price=3)
    sim.clock.advance(3600)
    await drain(sim)
    assert len(receiver.requests) == sent == 101
    sim.webhooks.subscribe(HOOK_URL, ["update_lead"])  # re-subscribing enables it again
    receiver.status = 200
    sim.update_lead(lead_id, price=4)
    await drain(sim)
    assert len(receiver.requests) == 102


async def test_drop_and_duplicate_faults(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    sim.faults.update(sim.clock, webhook_drop=1.0)
    plain_lead(sim)
    await drain(sim)
    assert receiver.requests == [] and sim.webhooks.stats["dropped"] == 1
    sim.faults.update(sim.clock, webhook_drop=0.0, webhook_duplicate=1.0)
    plain_lead(sim)
    await drain(sim)
    assert len(receiver.requests) == 2 and receiver.bodies[0] == receiver.bodies[1]


async def test_delay_fault_reorders(sim: Simulator, receiver: Receiver) -> None:
    sim.webhooks.subscribe(HOOK_URL, ["add_lead"])
    sim.faults.update(sim.clock, webhook_delay=1.0, webhook_delay_max=60, seed=3)
    created = [plain_lead(sim) for _ in range(8)]
    await drain(sim)
    assert receiver.requests == []
    sim.clock.advance(60)
    await drain(sim)
    arrived = [int(parse_php_form(b)["leads"]["add"]["0"]["id"]) for b in receiver.bodies]
    assert sorted(arrived) == created and arrived != created


async def test_subscription_api(
    client: httpx.AsyncClient, sim: Simulator, receiver: Receiver
) -> None:
    body = {"destination": HOOK_URL, "settings": ["add_lead"], "sort": 3}
    first = await client.post("/api/v4/webhooks", json=body)
    again = await client.post("/api/v4/webhooks", json={**body, "settings": ["add_contact"]})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.json()["settings"] == ["add_contact"]
    other = await client.get(
        "/api/v4/webhooks", params={"filter[destination]": "https://nope.test"}
    )
    assert other.status_code == 204
    bad = await client.post("/api/v4/webhooks", json={"destination": "ftp://x", "settings": []})
    assert bad.status_code == 400
    gone = await client.request("DELETE", "/api/v4/webhooks", json={"destination": HOOK_URL})
    missing = await client.request("DELETE", "/api/v4/webhooks", json={"destination": HOOK_URL})
    assert (gone.status_code, missing.status_code) == (204, 404)
    assert (await client.get("/api/v4/webhooks")).status_code == 204
