"""The read API through a real uvicorn server and real Postgres."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from service.settings import Settings
from tests.session import WS_TOKEN
from tests.web import ACCOUNT, change, serve

AUTH = {"Authorization": f"Bearer {WS_TOKEN}"}


async def get(http: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    return await http.get(path, params=params, headers=AUTH)


async def test_a_lead_is_its_latest_lead_update_data(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    await change(pool, None, settings, 24000101, action="created")
    version, text = await change(pool, None, settings, 24000101, action="updated")
    async with serve(settings) as running:
        response = await get(running.http, "/api/leads/24000101")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(text)["data"]
    assert response.json()["version"] == version


async def test_unknown_unshown_and_foreign_leads_are_404(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    await pool.execute(
        """INSERT INTO leads (account_id, id, updated_at, raw) VALUES ($1, 5, now(), '{}')""",
        ACCOUNT,
    )  # mirrored, never shown to consumers
    await pool.execute(
        """INSERT INTO leads (account_id, id, updated_at, raw, shown, version, last_action,
                              last_source)
           VALUES (99, 6, now(), '{}', '{"id": 6}', nextval('lead_version_seq'), 'created',
                   'webhook')"""
    )  # another account's lead
    async with serve(settings) as running:
        for lead_id in (4, 5, 6):
            response = await get(running.http, f"/api/leads/{lead_id}")
            assert response.status_code == 404
            assert response.json() == {"error": f"lead {lead_id} not found"}
        response = await get(running.http, "/api/leads/abc")
        assert response.status_code == 400
        changes = await get(running.http, "/api/leads")
        assert changes.json() == {"items": [], "next_after": 0}


async def test_changes_are_ascending_paged_and_include_tombstones(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    written = {}
    for i in range(7):
        version, text = await change(
            pool, None, settings, 100 + i, action="deleted" if i == 3 else "created"
        )
        written[100 + i] = json.loads(text)["data"]
    version, text = await change(pool, None, settings, 101)  # 101 again: it moves to the end
    written[101] = json.loads(text)["data"]
    expected = sorted(written.values(), key=lambda d: d["version"])
    async with serve(settings) as running:
        everything = (await get(running.http, "/api/leads")).json()
        assert everything == {"items": expected, "next_after": version}
        assert [d["action"] for d in everything["items"]].count("deleted") == 1
        page = (await get(running.http, "/api/leads", changed_after=0, limit=3)).json()
        assert page == {"items": expected[:3], "next_after": expected[2]["version"]}
        page = (
            await get(running.http, "/api/leads", changed_after=page["next_after"], limit=1000)
        ).json()
        assert page["items"] == expected[3:]
        page = (await get(running.http, "/api/leads", changed_after=version)).json()
        assert page == {"items": [], "next_after": version}


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"changed_after": "-1"}, "changed_after"),
        ({"changed_after": "abc"}, "changed_after"),
        ({"changed_after": "1.5"}, "changed_after"),
        ({"changed_after": ""}, "changed_after"),
        ({"changed_after": str(1 << 63)}, "changed_after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_malformed_query_is_400_with_a_one_line_reason(
    settings: Settings, params: dict[str, str], error: str
) -> None:
    async with serve(settings) as running:
        response = await get(running.http, "/api/leads", **params)
    assert response.status_code == 400
    reason = response.json()["error"]
    assert reason.startswith(error) and "\n" not in reason


async def test_token_is_required_by_header_or_query(settings: Settings) -> None:
    async with serve(settings) as running:
        http = running.http
        for path in ("/api/leads", "/api/leads/1"):
            for headers, params in (
                ({}, {}),
                ({"Authorization": "Bearer wrong"}, {}),
                ({"Authorization": f"Basic {WS_TOKEN}"}, {}),
                ({}, {"token": "wrong"}),
            ):
                response = await http.get(path, headers=headers, params=params)
                assert response.status_code == 401
                assert response.json() == {"error": "missing or invalid token"}
                assert response.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/api/leads", params={"token": WS_TOKEN})).status_code == 200
        assert (await http.get("/api/leads", headers=AUTH)).status_code == 200
