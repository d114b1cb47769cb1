"""Rate limit, blocks, injected API faults, lagging reads, counters and OAuth tokens."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from kommo_sim import RateLimitConfig, Simulator
from tests.sim.helpers import make_config


async def test_eighth_request_in_a_second_gets_429(
    make_client: Callable[[Simulator], httpx.AsyncClient],
) -> None:
    sim = Simulator(make_config(rate_limit=RateLimitConfig(rate=7, retry_after=2)))
    async with make_client(sim) as client:
        answers = [await client.get(path) for path in ["/api/v4/account", "/api/v4/leads"] * 4]
    assert [a.status_code for a in answers] == [200] * 7 + [429]
    too_many = answers[-1]
    assert too_many.headers["content-type"] == "application/problem+json"
    assert too_many.json()["retry_after"] == 2 and too_many.json()["status"] == 429
    assert "retry-after" not in too_many.headers
    assert sim.counters[("GET /api/v4/leads", 429)] == 1
    assert sim.counters[("GET /api/v4/account", 200)] == 4


async def test_repeated_429s_get_403_until_the_block_ends(
    make_client: Callable[[Simulator], httpx.AsyncClient],
) -> None:
    limits = RateLimitConfig(rate=7, block_after=3, block_window=60, block_seconds=120)
    sim = Simulator(make_config(rate_limit=limits))
    async with make_client(sim) as client:
        codes = [(await client.get("/api/v4/account")).status_code for _ in range(12)]
        assert codes == [200] * 7 + [429] * 3 + [403] * 2
        blocked = await client.get("/api/v4/leads")
        assert blocked.status_code == 403 and "nginx" in blocked.text
        sim.clock.advance(121)
        sim.ratelimit.config.rate = 0
        assert (await client.get("/api/v4/account")).status_code == 200


async def test_storm_and_block_faults_end_on_the_clock(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.faults.update(sim.clock, storm_seconds=30)
    assert (await client.get("/api/v4/account")).status_code == 429
    sim.clock.advance(31)
    assert (await client.get("/api/v4/account")).status_code == 200
    sim.faults.update(sim.clock, block_seconds=30)
    assert (await client.get("/api/v4/account")).status_code == 403
    sim.clock.advance(31)
    assert (await client.get("/api/v4/account")).status_code == 200


async def test_error_rate_is_a_seeded_fraction(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.faults.update(sim.clock, error_rate=0.5, error_status=502, seed=11)
    codes = [(await client.get("/api/v4/account")).status_code for _ in range(200)]
    assert set(codes) == {200, 502}
    assert 60 < codes.count(502) < 140
    assert sim.counters[("GET /api/v4/account", 502)] == codes.count(502)
    sim.counters.clear()
    assert not sim.counters


async def test_lagging_read_shows_the_previous_version(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.faults.update(sim.clock, lag_seconds=10, lag_probability=1.0)
    lead_id = next(iter(sim.state.leads.rows))
    old_name = sim.leads[lead_id]["name"]
    sim.update_lead(lead_id, name="renamed")
    by_id = (await client.get(f"/api/v4/leads/{lead_id}")).json()
    listed = (await client.get("/api/v4/leads", params={"filter[id]": lead_id})).json()
    assert by_id["name"] == listed["_embedded"]["leads"][0]["name"] == old_name
    sim.clock.advance(11)
    assert (await client.get(f"/api/v4/leads/{lead_id}")).json()["name"] == "renamed"


async def test_oauth_code_refresh_rotation_and_expiry(
    sim: Simulator, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    oauth = sim.config.oauth
    base = {
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret,
        "redirect_uri": oauth.redirect_uri,
    }
    async with make_client(sim) as client:
        code = sim.tokens.issue_code()
        first = (
            await client.post(
                "/oauth2/access_token",
                json={**base, "grant_type": "authorization_code", "code": code},
            )
        ).json()
        reused = await client.post(
            "/oauth2/access_token", json={**base, "grant_type": "authorization_code", "code": code}
        )
        assert reused.status_code == 400
        second = await client.post(
            "/oauth2/access_token",
            json={**base, "grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert second.status_code == 200
        replay = await client.post(
            "/oauth2/access_token",
            json={**base, "grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert replay.status_code == 400 and replay.json()["hint"] == "Token has been revoked"
        wrong = await client.post(
            "/oauth2/access_token",
            json={
                **base,
                "client_secret": "x",
                "grant_type": "refresh_token",
                "refresh_token": second.json()["refresh_token"],
            },
        )
        assert wrong.status_code == 400
    assert sim.tokens.refresh_calls == 2
    access = second.json()["access_token"]
    async with make_client(sim, access) as oauth_client:
        assert (await oauth_client.get("/api/v4/account")).status_code == 200
        sim.clock.advance(86400)
        assert (await oauth_client.get("/api/v4/account")).status_code == 401


async def test_refresh_grace_keeps_the_old_token_until_the_new_one_is_used(
    sim: Simulator, client: httpx.AsyncClient
) -> None:
    sim.tokens.config.refresh_grace = True
    oauth = sim.config.oauth
    base = {
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret,
        "redirect_uri": oauth.redirect_uri,
        "grant_type": "refresh_token",
    }
    pair = sim.tokens.grant(
        {**base, "grant_type": "authorization_code", "code": sim.tokens.issue_code()}
    )
    new = (
        await client.post(
            "/oauth2/access_token", json={**base, "refresh_token": pair["refresh_token"]}
        )
    ).json()
    again = await client.post(
        "/oauth2/access_token", json={**base, "refresh_token": pair["refresh_token"]}
    )
    assert again.status_code == 200  # the answer was "lost": the old token still works
    used = await client.post(
        "/oauth2/access_token", json={**base, "refresh_token": again.json()["refresh_token"]}
    )
    assert used.status_code == 200
    dead = await client.post(
        "/oauth2/access_token", json={**base, "refresh_token": pair["refresh_token"]}
    )
    assert dead.status_code == 400
    assert new["refresh_token"] != again.json()["refresh_token"]
