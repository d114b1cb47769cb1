"""The read API refuses hostile numbers with a clear 400, never a 500."""

from __future__ import annotations

import httpx
import pytest

HUGE = "9" * 5000  # int() refuses more than 4,300 digits: it must never be reached


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/leads", {"changed_after": HUGE}, "changed_after"),
        ("/api/leads", {"changed_after": "0" * 5000 + "1"}, "changed_after"),
        ("/api/leads", {"changed_after": str(1 << 63)}, "changed_after"),
        ("/api/leads", {"limit": HUGE}, "limit"),
        ("/api/leads", {"limit": "²"}, "limit"),  # a digit to str.isdigit, not to int()
        (f"/api/leads/{HUGE}", {}, "lead id"),
        (f"/api/leads/{1 << 63}", {}, "lead id"),
    ],
    ids=[
        "huge-after",
        "padded-after",
        "after-past-bigint",
        "huge-limit",
        "unicode-digit",
        "huge-lead",
        "lead-past-bigint",
    ],
)
async def test_out_of_range_numbers_are_a_400_naming_the_parameter(
    client: httpx.AsyncClient, env: dict[str, str], path: str, params: dict[str, str], named: str
) -> None:
    response = await client.get(
        path, params=params, headers={"Authorization": f"Bearer {env['WS_TOKENS']}"}
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith(named) and len(message) < 120


async def test_the_largest_values_are_still_served(
    client: httpx.AsyncClient, env: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {env['WS_TOKENS']}"}
    biggest = str((1 << 63) - 1)
    response = await client.get("/api/leads", params={"changed_after": biggest}, headers=headers)
    assert response.status_code == 200 and response.json() == {
        "items": [],
        "next_after": int(biggest),
    }
    assert (await client.get(f"/api/leads/{biggest}", headers=headers)).status_code == 404
