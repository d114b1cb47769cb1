"""The Kommo client's status handling, against Kommo's real bodies served by a MockTransport.

The transport stands in for Kommo; the rate budget runs on real Redis with a virtual clock, so a
``retry_after`` of 300 s is honoured without taking 300 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from service.keys import Keys
from service.kinds import CONTACTS, LEADS
from service.kommo.budget import Priority, RateBudget
from service.kommo.client import KommoClient, kommo_client
from service.kommo.errors import (
    KommoAuthError,
    KommoBadRequest,
    KommoBlocked,
    KommoPaymentRequired,
    KommoRateLimited,
    KommoUnavailable,
)
from service.kommo.wire import RetryPolicy, endpoint_of
from service.settings import Secret, Settings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "api"
TOKEN = "long-lived-SECRET-token-0123456789"
BASE = "http://kommo.test"
W = Priority.WEBHOOK

Reply = httpx.Response | Exception


class VirtualClock:
    """Time that moves only when someone sleeps (budget waits and retry backoff)."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def ok(name: str, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=body(name), headers={"content-type": "application/hal+json"}
    )


def error(status: int, name: str) -> httpx.Response:
    kind = "text/html" if name.endswith(".html") else "application/problem+json"
    return httpx.Response(status, content=body(f"errors/{name}"), headers={"content-type": kind})


def empty() -> httpx.Response:
    return httpx.Response(204)


class ScriptedKommo:
    """Answers each request with the next scripted reply; records requests and their time."""

    def __init__(self, clock: VirtualClock, *replies: Reply) -> None:
        self.clock, self.replies = clock, list(replies)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.clock.t)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def kommo_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, kommo_base_url=BASE, kommo_token=Secret(TOKEN), rate_limit=50
    )


@pytest.fixture
def connect(
    kommo_settings: Settings, redis: Redis, clock: VirtualClock
) -> Callable[[ScriptedKommo], contextlib.AbstractAsyncContextManager[KommoClient]]:
    @contextlib.asynccontextmanager
    async def open_client(kommo: ScriptedKommo) -> AsyncIterator[KommoClient]:
        budget = RateBudget(
            redis,
            Keys(kommo_settings.redis_prefix),
            kommo_settings.rate_limit,
            clock=clock.now,
            sleep=clock.sleep,
        )
        async with kommo_client(
            kommo_settings,
            redis,
            None,
            budget=budget,
            transport=httpx.MockTransport(kommo),
            retry=RetryPolicy(base_delay=1.0, max_delay=8.0),
        ) as client:
            yield client

    return open_client


Connect = Callable[[ScriptedKommo], contextlib.AbstractAsyncContextManager[KommoClient]]


def breaker_open() -> dict[str, float | None]:
    """This process's ``kommo_breaker_open`` gauge, by reason."""
    return {
        reason: REGISTRY.get_sample_value("kommo_breaker_open", {"reason": reason})
        for reason in ("blocked", "unpaid")
    }


def calls(endpoint: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value("kommo_calls_total", {"endpoint": endpoint, "status": status})
        or 0.0
    )


async def test_get_sends_the_token_and_answers_none_on_204(
    connect: Connect, clock: VirtualClock
) -> None:
    kommo = ScriptedKommo(clock, ok("account_with_datetime_settings.json"), empty())
    async with connect(kommo) as client:
        account = await client.account(priority=W, with_=["datetime_settings"])
        assert account["id"] == 31000001
        assert await client.get("/api/v4/leads/24000204", priority=W) is None
    first = kommo.requests[0]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert str(first.url) == f"{BASE}/api/v4/account?with=datetime_settings"
    assert endpoint_of("/api/v4/leads/24000204") == "/api/v4/leads/{id}"


async def test_pages_ending_in_204_lose_nothing(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, ok("leads_list_page1.json"), empty())
    async with connect(kommo) as client:
        leads = await client.by_ids(LEADS, [24000101, 24000102], priority=Priority.RECONCILE)
    expected = json.loads(body("leads_list_page1.json"))["_embedded"]["leads"]
    assert [r.id for r in leads] == [e["id"] for e in expected]
    second = kommo.requests[1].url  # the next href's query, on our base URL
    assert (second.host, second.path) == ("kommo.test", "/api/v4/leads")
    assert dict(second.params) == {"with": "contacts", "page": "2", "limit": "2"}


async def test_pages_stop_where_next_is_missing(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, ok("leads_list_page1.json"), ok("leads_list_last_page.json"))
    async with connect(kommo) as client:
        leads = await client.by_ids(LEADS, [24000101, 24000102, 24000204], priority=W)
    assert len(leads) == 3 and len(kommo.requests) == 2  # nothing asked past the last page


async def test_a_429_storm_then_success_loses_nothing_and_honours_retry_after(
    connect: Connect, clock: VirtualClock
) -> None:
    before = REGISTRY.get_sample_value("kommo_429_total") or 0.0
    storm = [error(429, "429_too_many_requests.json") for _ in range(3)]  # retry_after: 300
    kommo = ScriptedKommo(clock, *storm, ok("leads_list_last_page.json"))
    async with connect(kommo) as client:
        leads = await client.by_ids(LEADS, [24000204], priority=W)
    expected = json.loads(body("leads_list_last_page.json"))["_embedded"]["leads"]
    assert [r.id for r in leads] == [e["id"] for e in expected]
    gaps = [b - a for a, b in zip(kommo.times, kommo.times[1:], strict=False)]
    assert len(gaps) == 3 and all(gap >= 300 for gap in gaps)
    assert (REGISTRY.get_sample_value("kommo_429_total") or 0.0) - before == 3


async def test_an_html_429_backs_off_by_the_default(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, error(429, "429_gateway_html.html"), ok("leads_list_page1.json"))
    async with connect(kommo) as client:
        assert await client.get("/api/v4/leads", priority=W) is not None
    assert 5 <= kommo.times[1] - kommo.times[0] < 300


async def test_429_retries_are_bounded(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, *[error(429, "429_too_many_requests.json") for _ in range(5)])
    async with connect(kommo) as client:
        with pytest.raises(KommoRateLimited) as caught:
            await client.get("/api/v4/leads", priority=W)
    assert caught.value.retry_after == 300 and len(kommo.requests) == 5


async def test_5xx_and_io_errors_on_get_are_retried_with_backoff(
    connect: Connect, clock: VirtualClock
) -> None:
    failures: list[Reply] = [
        error(500, "500_internal.json"),
        httpx.ConnectTimeout("slow"),
        error(502, "500_internal.json"),
        httpx.ConnectError("refused"),
    ]
    kommo = ScriptedKommo(clock, *failures, ok("leads_list_last_page.json"))
    async with connect(kommo) as client:
        # an id with "204" in it: a 500 is a failure to retry, never an empty page
        leads = await client.by_ids(LEADS, [24000204, 24000103], priority=W)
    assert [lead.id for lead in leads] == [24000103]
    assert len(kommo.requests) == 5
    assert calls("/api/v4/leads", "500") >= 1 and calls("/api/v4/leads", "error") >= 2


async def test_5xx_gives_up_after_the_attempts(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, *[error(500, "500_internal.json") for _ in range(5)])
    async with connect(kommo) as client:
        with pytest.raises(KommoUnavailable):
            await client.get("/api/v4/leads", priority=W)
    assert len(kommo.requests) == 5
    assert kommo.times[-1] - kommo.times[0] <= 1 + 2 + 4 + 8 + 1  # capped, jittered backoff


async def test_5xx_on_a_write_is_not_retried(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, error(500, "500_internal.json"))
    async with connect(kommo) as client:
        with pytest.raises(KommoUnavailable):
            await client.subscribe_webhook(
                "https://sync.example.com/hook", ["add_lead"], priority=W
            )
    assert len(kommo.requests) == 1


FORBIDDEN = httpx.Response(
    403,
    json={"title": "Forbidden", "status": 403, "detail": "Forbidden"},
    headers={"content-type": "application/problem+json"},
)


@pytest.mark.parametrize("fixture", ["403_ip_block_nginx.html", "json"])
async def test_403_stops_every_client_sharing_the_budget(
    connect: Connect, clock: VirtualClock, fixture: str, caplog: pytest.LogCaptureFixture
) -> None:
    block = FORBIDDEN if fixture == "json" else error(403, fixture)
    first = ScriptedKommo(clock, block, *[ok("leads_list_page1.json")] * 5)
    second = ScriptedKommo(clock, *[ok("leads_list_page1.json")] * 5)
    async with connect(first) as a, connect(second) as b:
        with pytest.raises(KommoBlocked):
            await a.get("/api/v4/leads", priority=W)
        for client in (a, b, a, b):
            with pytest.raises(KommoBlocked):
                await client.by_ids(LEADS, [1, 2], priority=W)
        assert await b.budget.breaker() is not None
        assert breaker_open() == {"blocked": 1, "unpaid": 0}
    assert (len(first.requests), len(second.requests)) == (1, 0)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2  # per process


@pytest.mark.parametrize("path", ["/api/v4/leads", "/api/v4/users"])
async def test_a_403_about_rights_is_refused_without_tripping_the_breaker(
    connect: Connect, clock: VirtualClock, path: str
) -> None:
    refusal = error(403, "403_scope.json") if path.endswith("leads") else FORBIDDEN
    kommo = ScriptedKommo(clock, refusal, ok("leads_list_page1.json"))
    async with connect(kommo) as client:
        with pytest.raises(KommoBadRequest):
            await client.get(path, priority=W)
        assert await client.budget.breaker() is None
        assert await client.get("/api/v4/leads", priority=W) is not None
    assert len(kommo.requests) == 2


async def test_an_admitted_slot_is_spent_by_the_next_call_only(
    connect: Connect, clock: VirtualClock
) -> None:
    kommo = ScriptedKommo(clock, *[ok("leads_list_page1.json")] * 3)
    async with connect(kommo) as client:
        async with client.admitted(W):
            assert (await client.budget.usage()).last_minute == 1  # taken before the call
            await client.get("/api/v4/leads", priority=W)
            assert (await client.budget.usage()).last_minute == 1  # ... and spent by it
            await client.get("/api/v4/leads", priority=W)
            assert (await client.budget.usage()).last_minute == 2  # the next one waits again
        await client.get("/api/v4/leads", priority=W)
        assert (await client.budget.usage()).last_minute == 3
    assert len(kommo.requests) == 3


async def test_a_rejected_long_lived_token_is_never_retried(
    connect: Connect, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    kommo = ScriptedKommo(clock, error(401, "401_unauthorized.json"))
    async with connect(kommo) as client:
        with pytest.raises(KommoAuthError) as caught:
            await client.get("/api/v4/leads", priority=W)
    assert len(kommo.requests) == 1
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("status", "fixture", "kind"),
    [
        (402, "402_payment_required.json", KommoPaymentRequired),
        (400, "400_validation.json", KommoBadRequest),
        (404, "404_not_found.json", KommoBadRequest),
        (405, "405_method.json", KommoBadRequest),
        (422, "422_limit.json", KommoBadRequest),
    ],
)
async def test_other_rejections_are_not_retried(
    connect: Connect, clock: VirtualClock, status: int, fixture: str, kind: type[Exception]
) -> None:
    kommo = ScriptedKommo(clock, error(status, fixture))
    async with connect(kommo) as client:
        with pytest.raises(kind) as caught:
            await client.get("/api/v4/leads", {"filter[id][]": [1]}, priority=W)
    assert len(kommo.requests) == 1
    assert TOKEN not in str(caught.value) and "?" not in str(caught.value)


async def test_an_unpaid_account_pauses_every_call(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(
        clock, error(402, "402_payment_required.json"), ok("leads_list_page1.json")
    )
    async with connect(kommo) as client:
        with pytest.raises(KommoPaymentRequired):
            await client.get("/api/v4/leads", priority=W)
        assert breaker_open() == {"blocked": 0, "unpaid": 1}  # set where it trips
        breaker = await client.budget.breaker()
        assert breaker is not None and "payment required" in breaker.reason
        assert breaker.kind == "unpaid"
        with pytest.raises(KommoBlocked):  # no second call while the account is unpaid
            await client.get("/api/v4/leads", priority=W)
        assert len(kommo.requests) == 1
        clock.t = breaker.until + 1  # the breaker expired: the next admitted call closes it
        assert await client.get("/api/v4/leads", priority=W) is not None
        assert breaker_open() == {"blocked": 0, "unpaid": 0}
    assert len(kommo.requests) == 2


async def test_ids_are_fetched_in_chunks_of_250(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, empty(), empty(), empty(), empty())
    async with connect(kommo) as client:
        assert await client.by_ids(LEADS, [*range(1, 601), 5, 6], priority=W) == []
        assert await client.by_ids(CONTACTS, [35000501], priority=W) == []
    chunks = [r.url.params.get_list("filter[id][]") for r in kommo.requests]
    assert [len(c) for c in chunks] == [250, 250, 100, 1]
    assert sorted(int(i) for c in chunks[:3] for i in c) == list(range(1, 601))
    assert kommo.requests[0].url.params["with"] == "contacts,loss_reason"
    assert kommo.requests[0].url.params["limit"] == "250"
    assert kommo.requests[3].url.path == "/api/v4/contacts"


async def test_events_ask_for_types_and_a_window(connect: Connect, clock: VirtualClock) -> None:
    kommo = ScriptedKommo(clock, ok("events_list.json"))
    async with connect(kommo) as client:
        events = await client.events_since(
            ["lead_deleted", "contact_deleted"], 1748260000, 1748280000, priority=Priority.RECONCILE
        )
    assert len(events) == len(json.loads(body("events_list.json"))["_embedded"]["events"])
    params = kommo.requests[0].url.params
    assert params.get_list("filter[type][]") == ["lead_deleted", "contact_deleted"]
    assert (
        params["limit"],
        params["filter[created_at][from]"],
        params["filter[created_at][to]"],
    ) == ("100", "1748260000", "1748280000")


async def test_webhook_management(connect: Connect, clock: VirtualClock) -> None:
    request = json.loads(body("webhook_subscribe_request.json"))
    created = json.loads(body("webhooks_list.json"))["_embedded"]["webhooks"][0]
    kommo = ScriptedKommo(
        clock, ok("webhooks_list.json"), httpx.Response(201, json=created), empty()
    )
    async with connect(kommo) as client:
        assert await client.list_webhooks(priority=W) == [created]
        answer = await client.subscribe_webhook(
            request["destination"], request["settings"], priority=W
        )
        assert answer["id"] == created["id"]
        await client.delete_webhook(request["destination"], priority=W)
    post, delete = kommo.requests[1], kommo.requests[2]
    assert (post.method, json.loads(post.content)) == ("POST", request)
    assert (delete.method, json.loads(delete.content)) == (
        "DELETE",
        {"destination": request["destination"]},
    )


async def test_the_process_client_presents_the_token(
    kommo_settings: Settings, pool: asyncpg.Pool, redis: Redis, clock: VirtualClock
) -> None:
    kommo = ScriptedKommo(clock, ok("account_with_datetime_settings.json"))
    async with kommo_client(
        kommo_settings, redis, pool, transport=httpx.MockTransport(kommo)
    ) as client:
        assert (await client.account(priority=W))["subdomain"] == "examplecorp"
    assert kommo.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
