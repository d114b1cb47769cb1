"""Incoming (unsorted) leads: ``unsorted[...]`` bodies are hints for the leads they name.

The layouts are amoCRM's ("Примеры массивов неразобранного" in ``crm_platform/webhooks-format``
of the documentation), form-encoded the way Kommo sends them (PHP ``http_build_query``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devenv.asgi import ASGIApp, lifespan
from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.keys import Keys
from service.settings import Needs, Settings
from service.web.app import create_app
from service.web.webform import WebhookParseError, parse_webhook
from tests.engine import SIM_TOKEN, kommo_settings_for, mark_imported, run_worker_burst

FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
ACCOUNT = {
    "subdomain": "examplecorp",
    "id": "31000001",
    "_links": {"self": "https://examplecorp.kommo.com"},
}


def php_form(data: dict[str, Any]) -> bytes:
    """PHP's ``http_build_query`` of a nested array: ``a[b][0][c]=…`` (lists get indices)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        items = enumerate(value) if isinstance(value, list) else value.items()
        for key, item in items:
            name = f"{prefix}[{key}]" if prefix else str(key)
            if isinstance(item, dict | list):
                walk(name, item)
            else:
                pairs.append((name, str(item)))

    walk("", data)
    return urlencode(pairs).encode()


def unsorted_add(account_id: str = "31000001") -> dict[str, Any]:
    """A form submission: no lead id yet (the doc's example, shortened)."""
    return {
        "unsorted": {
            "add": [
                {
                    "uid": "40789acb990dbb9754dc234e18d2325470612b2284880504d78f258d8f77",
                    "category": "forms",
                    "account_id": account_id,
                    "pipeline_id": "7000001",
                    "source_data": {"name_1": {"type": "text", "value": "Valery"}, "date": "1"},
                    "data": {
                        "leads": [{"date_create": "156232405", "tags": "website"}],
                        "contacts": [{"name": "contact", "date_create": "156232405"}],
                    },
                }
            ]
        },
        "account": ACCOUNT,
    }


def unsorted_update(lead_id: int, account_id: str = "31000001") -> dict[str, Any]:
    return {
        "unsorted": {
            "update": [
                {
                    "uid": "40789acb990dbb9754dc234e18d2325470612b2284880504d78f258d8f77",
                    "category": "forms",
                    "account_id": account_id,
                    "source_data": {"form_id": "243222", "origin": {"ip": "12.123.123.12"}},
                    "data": {
                        "leads": [
                            {
                                "id": str(lead_id),
                                "status_id": "424232222",
                                "pipeline_id": "4353222",
                                "name": "Сделка",
                            }
                        ],
                        "pipeline_id": "4353222",
                        "created_at": "156760055",
                    },
                }
            ]
        },
        "account": ACCOUNT,
    }


def unsorted_delete(
    action: str, leads: list[int], contacts: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Accepted or declined: Kommo sends it as a delete of the incoming record."""
    result = {"leads": [str(i) for i in leads]}
    if contacts:
        result["contacts"] = [str(i) for i in contacts]
    return {
        "unsorted": {
            "delete": [
                {
                    "action": action,
                    "uid": "40789acb990dbb9754dc234e18d2325470612b2284880504d78f258d8f77",
                    "category": "forms",
                    "created_at": "124242341",
                    f"{action}_result": result,
                }
            ]
        },
        "account": ACCOUNT,
    }


# --- the parser ------------------------------------------------------------------------------


def test_an_incoming_lead_without_an_id_is_counted_and_queues_nothing() -> None:
    hints = parse_webhook(php_form(unsorted_add()))
    assert hints.unsorted == 1 and hints.is_empty() and not hints.ignored
    assert hints.account_ids == {31000001}


def test_an_edited_incoming_lead_is_a_change_hint() -> None:
    hints = parse_webhook(php_form(unsorted_update(24000111)))
    assert (hints.unsorted, hints.changes["leads"], hints.deletes["leads"]) == (
        1,
        {24000111: 0},
        set(),
    )
    assert hints.queued()["leads"] == 1


def test_accept_is_a_change_decline_a_delete() -> None:
    accepted = parse_webhook(php_form(unsorted_delete("accept", [2132111], (3454532,))))
    assert accepted.changes["leads"] == {2132111: 0}
    assert accepted.changes["contacts"] == {3454532: 0}
    declined = parse_webhook(php_form(unsorted_delete("decline", [2132111, 2132112])))
    assert declined.deletes["leads"] == {2132111, 2132112} and not declined.changes["leads"]
    # the "[]" form of the lists, as Kommo's description writes them
    raw = (
        b"unsorted[delete][0][action]=accept&unsorted[delete][0][accept_result][leads][]=7"
        b"&unsorted[delete][0][accept_result][leads][]=8"
        b"&unsorted[delete][1][action]=decline&unsorted[delete][1][decline_result][leads][]=9"
    )
    both = parse_webhook(raw)
    assert (both.changes["leads"], both.deletes["leads"], both.unsorted) == ({7: 0, 8: 0}, {9}, 2)


def test_unsorted_fields_that_name_no_lead_are_ignored() -> None:
    raw = (
        b"unsorted[update][0][data][leads][0][name]=x&unsorted[update][0][data][pipeline_id]=4"
        b"&unsorted[update][0][data][leads][0][tags][0][id]=5&unsorted[update][0][id]=6"
        b"&unsorted[delete][0][accept_result][customers][]=3&unsorted[add]=1"
    )
    hints = parse_webhook(raw)
    assert hints.is_empty() and hints.unsorted == 3 and hints.ignored == Counter()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"unsorted[update][0][data][leads][0][id]=abc", "is not a positive integer"),
        (b"unsorted[delete][0][accept_result][leads][]=0", "is not a positive integer"),
        (b"unsorted[delete][0][decline_result][leads][x]=5", "index is not numeric"),
        (b"unsorted[update][x][data][leads][0][id]=5", "index is not numeric"),
        (b"unsorted[update][0][data][leads][][id]=5", "index is not numeric"),
        (b"unsorted[add][0][account_id]=-1", "is not a positive integer"),
        (
            b"unsorted[add][0][account_id]=31000002&account[id]=31000001",
            "two different accounts",
        ),
    ],
)
def test_bad_unsorted_ids_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(WebhookParseError, match=reason):
        parse_webhook(raw)


# --- end to end: the endpoint, the drain, the simulator --------------------------------------


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env, Needs.WEB)


@pytest.fixture
async def web(kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis) -> AsyncIterator[ASGIApp]:
    async with lifespan(create_app(kommo_settings)) as app:
        yield app


@pytest.fixture
async def sim(pool: asyncpg.Pool) -> AsyncIterator[Simulator]:
    sim = Simulator(
        SimConfig(
            seed=3, leads=40, contacts=30, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
        )
    )
    await mark_imported(pool, sim.config.account_id)  # only webhooks fill the mirror here
    yield sim
    await sim.aclose()


async def post(app: ASGIApp, settings: Settings, body: bytes) -> httpx.Response:
    assert settings.webhook_secret is not None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sync.test"
    ) as client:
        return await client.post(
            f"/webhooks/kommo/{settings.webhook_secret.value}", content=body, headers=FORM
        )


def received(kind: str) -> float:
    return REGISTRY.get_sample_value("webhooks_received_total", {"kind": kind}) or 0.0


async def lead_row(pool: asyncpg.Pool, lead_id: int) -> tuple[str, bool] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT name, is_deleted FROM leads WHERE id = $1", lead_id)
    return None if row is None else (str(row["name"]), bool(row["is_deleted"]))


async def test_incoming_leads_reach_the_mirror_through_webhooks(
    kommo_settings: Settings, web: ASGIApp, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    incoming = sim.create_lead(name="Website request")["id"]
    accepted = sim.create_lead(name="Accepted")["id"]
    before = (received("unsorted"), received("leads"))
    response = await post(web, kommo_settings, php_form(unsorted_add()))
    assert response.status_code == 200 and response.json()["unsorted"] == 1
    assert response.json()["queued"]["leads"] == 0
    response = await post(web, kommo_settings, php_form(unsorted_update(incoming)))
    assert response.status_code == 200 and response.json()["queued"]["leads"] == 1
    response = await post(web, kommo_settings, php_form(unsorted_delete("accept", [accepted])))
    assert response.status_code == 200 and response.json()["queued"]["leads"] == 1
    assert (received("unsorted"), received("leads")) == (before[0] + 3, before[1] + 2)
    await run_worker_burst(kommo_settings, sim, timeout=60)
    assert await lead_row(pool, incoming) == ("Website request", False)
    assert await lead_row(pool, accepted) == ("Accepted", False)


async def test_a_declined_lead_is_deleted_once_kommo_no_longer_reads_it(
    kommo_settings: Settings, web: ASGIApp, sim: Simulator, pool: asyncpg.Pool, redis: Redis
) -> None:
    declined, kept = sim.create_lead(name="Spam")["id"], sim.create_lead(name="Kept")["id"]
    assert (await post(web, kommo_settings, php_form(unsorted_update(declined)))).status_code == 200
    assert (await post(web, kommo_settings, php_form(unsorted_update(kept)))).status_code == 200
    await run_worker_burst(kommo_settings, sim, timeout=60)
    sim.delete_lead(declined)  # declining deletes the lead; the other decline is stale
    body = php_form(unsorted_delete("decline", [declined, kept]))
    response = await post(web, kommo_settings, body)
    assert response.status_code == 200 and response.json()["queued"]["lead_deletes"] == 2
    await run_worker_burst(kommo_settings, sim, timeout=60)
    assert await lead_row(pool, declined) == ("Spam", True)
    assert await lead_row(pool, kept) == ("Kept", False)  # still readable: not believed
    keys = Keys(kommo_settings.redis_prefix)
    assert await redis.zcard(keys.hints_queue("lead_deletes")) == 0


async def test_another_accounts_incoming_lead_is_refused(
    kommo_settings: Settings, web: ASGIApp, sim: Simulator, redis: Redis
) -> None:
    body = php_form({"unsorted": unsorted_update(24000111, "31000002")["unsorted"]})
    response = await post(web, kommo_settings, body)
    assert response.status_code == 403
    keys = Keys(kommo_settings.redis_prefix)
    assert await redis.zcard(keys.hints_queue("leads")) == 0
