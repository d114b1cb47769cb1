"""Several accounts in one simulator: one app, a path prefix per account, nothing shared but
the clock."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from kommo_sim import RateLimitConfig, SimFleet, serve
from tests.sim.helpers import HOOK_URL, START, Receiver, make_config, parse_php_form
from tests.sim.scenarios import drain

SERVER = "http://sim.test"


@pytest.fixture
async def fleet(receiver: Receiver) -> AsyncIterator[SimFleet]:
    base = make_config(webhooks=[HOOK_URL + "/{subdomain}"], leads=20, contacts=10, companies=4)
    fleet = SimFleet.generate(3, base, webhook_transport=receiver.transport)
    yield fleet
    await fleet.aclose()


def client_for(fleet: SimFleet, subdomain: str, token: str | None = None) -> httpx.AsyncClient:
    sim = fleet[subdomain]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(fleet.app),
        base_url=fleet.base_url(sim, SERVER),
        headers={"Authorization": f"Bearer {token or sim.config.token}"},
    )


def test_accounts_are_distinct(fleet: SimFleet) -> None:
    configs = [s.config for s in fleet]
    assert [c.subdomain for c in configs] == ["examplecorp", "examplecorp2", "examplecorp3"]
    assert [c.account_id for c in configs] == [31000001, 31000002, 31000003]
    assert len({c.token for c in configs}) == 3
    assert len({s.state.account.timezone for s in fleet}) == 3
    assert fleet["examplecorp2"] is fleet[31000002]
    assert fleet["examplecorp"].leads != fleet["examplecorp2"].leads  # own seeds
    assert all(s.clock is fleet.clock for s in fleet)
    with pytest.raises(ValueError):
        SimFleet([make_config(), make_config()])


async def test_each_account_under_its_prefix(fleet: SimFleet) -> None:
    for sim in fleet:
        async with client_for(fleet, sim.config.subdomain) as client:
            account = (await client.get("/api/v4/account")).json()
            assert account["id"] == sim.config.account_id
            assert (
                account["_links"]["self"]["href"]
                == f"{SERVER}/{sim.config.subdomain}/api/v4/account"
            )
            page = (await client.get("/api/v4/leads", params={"limit": 5})).json()
            assert page["_links"]["next"]["href"].startswith(
                f"{SERVER}/{sim.config.subdomain}/api/v4/"
            )
            assert {lead["account_id"] for lead in page["_embedded"]["leads"]} == {
                sim.config.account_id
            }
            follow = await client.get(page["_links"]["next"]["href"])
            assert follow.json()["_page"] == 2
            state = (await client.get("/_sim/state")).json()
            assert state["account"]["id"] == sim.config.account_id
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(fleet.app), base_url=SERVER
    ) as client:
        listed = (await client.get("/_sim/fleet")).json()
        assert [a["path"] for a in listed] == ["/examplecorp", "/examplecorp2", "/examplecorp3"]
        assert "token" not in listed[0]
        missing = await client.get("/nowhere/api/v4/leads")
        assert (
            missing.status_code == 404
            and missing.headers["content-type"] == "application/problem+json"
        )


async def test_tokens_limits_faults_and_counters_are_per_account(fleet: SimFleet) -> None:
    one, two = fleet["examplecorp"], fleet["examplecorp2"]
    async with client_for(fleet, "examplecorp2", token=one.config.token) as wrong:
        assert (await wrong.get("/api/v4/account")).status_code == 401
    one.ratelimit.config = RateLimitConfig(rate=7)
    async with client_for(fleet, "examplecorp") as a, client_for(fleet, "examplecorp2") as b:
        statuses = [(await a.get("/api/v4/account")).status_code for _ in range(8)]
        assert statuses[-1] == 429
        assert (await b.get("/api/v4/account")).status_code == 200
        two.faults.payment_required = True
        assert (await b.get("/api/v4/leads")).status_code == 402
        one.ratelimit.reset()
        assert (await a.get("/api/v4/leads")).status_code == 200
    assert ("GET /api/v4/account", 429) in one.counters and (
        "GET /api/v4/leads",
        402,
    ) in two.counters
    assert ("GET /api/v4/leads", 402) not in one.counters
    fleet.clock.advance(100)
    assert one.clock.now() == two.clock.now()


async def test_webhooks_carry_their_own_account(fleet: SimFleet, receiver: Receiver) -> None:
    for sim in fleet:
        sim.update_lead(next(iter(sim.state.leads.rows)), price=77)
        await drain(sim)
    by_url = {str(r.url): parse_php_form(r.content.decode()) for r in receiver.requests}
    for sim in fleet:
        body = by_url[f"{HOOK_URL}/{sim.config.subdomain}"]
        assert body["leads"]["update"]["0"]["account_id"] == str(sim.config.account_id)
        assert body["account"]["subdomain"] == sim.config.subdomain
        assert body["account"].get("id", str(sim.config.account_id)) == str(sim.config.account_id)


async def test_fleet_over_real_http() -> None:
    fleet = SimFleet.generate(2, make_config(clock_speed=1.0, start_time=None, leads=10))
    async with serve(fleet) as server:
        for sim in fleet:
            async with httpx.AsyncClient(
                base_url=fleet.base_url(sim, server),
                headers={"Authorization": f"Bearer {sim.config.token}"},
            ) as client:
                assert (await client.get("/api/v4/account")).json()[
                    "subdomain"
                ] == sim.config.subdomain
                moved = await client.post(
                    "/_sim/mutations/update_lead",
                    json={"lead_id": next(iter(sim.state.leads.rows)), "price": 5},
                )
                assert moved.status_code == 200
    assert START  # the helper constants stay importable


async def test_cli_serves_several_accounts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = "import sys; from kommo_sim.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [
        "--port",
        str(port),
        "--token",
        "cli",
        "--accounts",
        "2",
        "--leads",
        "20",
        "--contacts",
        "5",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode() for _ in range(2)
        ]
        server = f"http://127.0.0.1:{port}"
        assert lines == [
            f"account 31000001 examplecorp: base URL {server}/examplecorp token cli\n",
            f"account 31000002 examplecorp2: base URL {server}/examplecorp2 token cli-2\n",
        ]
        for line in lines:
            base, token = line.split("base URL ")[1].split(" token ")
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token.strip()}"}
            ) as client:
                assert (await client.get("/api/v4/account")).status_code == 200
    finally:
        proc.terminate()
        await proc.wait()
