"""``POST /webhooks/kommo/{secret}`` through the real app, real Redis and real Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from starlette.applications import Starlette

from devenv.asgi import lifespan
from service.keys import Keys
from service.settings import Needs, Settings
from service.sync import hints as q
from service.sync.hints import Hints
from service.web.app import create_app
from service.web.webform import parse_webhook
from service.web.webhooks import RedactWebhookPath
from tests.webhook_bodies import (
    FIXTURES,
    Case,
    expected_hints,
    fixture_bodies,
    garbage,
    mutated_bodies,
    valid_cases,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _headers() -> dict[str, str]:
    """The headers Kommo sends (fixtures/webhooks/headers.txt), minus the request line."""
    out = {}
    for line in (FIXTURES / "headers.txt").read_text().splitlines():
        name, sep, value = line.partition(": ")
        if sep and not line.startswith("#") and name.lower() != "content-length":
            out[name] = value
    assert out["Content-Type"] == "application/x-www-form-urlencoded"
    return out


KOMMO_HEADERS = _headers()


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan(app) as served:
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://kommo-sync") as client:
            yield client


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client
    await reset(redis, settings)


@pytest.fixture
def url(settings: Settings) -> str:
    assert settings.webhook_secret is not None
    return f"/webhooks/kommo/{settings.webhook_secret.value}"


async def reset(redis: Redis, settings: Settings) -> None:
    """Empty the namespace, and the (global) arq job keys of the jobs our pushes enqueued."""
    jobs = await redis.zrange(Keys(settings.redis_prefix).queue, 0, -1)
    keys = await redis.keys(Keys(settings.redis_prefix).matching())
    doomed = [*keys, *(b"arq:job:" + j for j in jobs)]
    if doomed:
        await redis.delete(*doomed)


async def namespace(redis: Redis, settings: Settings) -> set[str]:
    return {
        k.decode()[len(settings.redis_prefix) :]
        for k in await redis.keys(Keys(settings.redis_prefix).matching())
    }


async def queued(redis: Redis, settings: Settings) -> dict[str, Any]:
    k = lambda name: settings.redis_prefix + name  # noqa: E731 - the raw layout, on purpose
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(k("hints:leads"), 0, -1)
        pipe.hgetall(k("hints:leads:lm"))
        pipe.zrange(k("hints:contacts"), 0, -1)
        pipe.hgetall(k("hints:contacts:lm"))
        pipe.zrange(k("hints:lead_deletes"), 0, -1)
        pipe.zrange(k("hints:contact_deletes"), 0, -1)
        pipe.smembers(k("hints:lead_restores"))
        pipe.smembers(k("hints:contact_restores"))
        leads, leads_lm, contacts, contacts_lm, ld, cd, lr, cr = await pipe.execute()
    return {
        "leads": {int(i): int(leads_lm.get(i, 0)) for i in leads},
        "contacts": {int(i): int(contacts_lm.get(i, 0)) for i in contacts},
        "lead_deletes": {int(i) for i in ld},
        "contact_deletes": {int(i) for i in cd},
        "lead_restores": {int(i) for i in lr},
        "contact_restores": {int(i) for i in cr},
    }


def expected_queue(hints: Hints) -> dict[str, Any]:
    return {
        "leads": hints.changes["leads"],
        "contacts": hints.changes["contacts"],
        "lead_deletes": hints.deletes["leads"],
        "contact_deletes": hints.deletes["contacts"],
        "lead_restores": hints.restores["leads"],
        "contact_restores": hints.restores["contacts"],
    }


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the fixture bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("name", fixture_bodies())
async def test_fixture_bodies_are_queued(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings, name: str
) -> None:
    expected = expected_hints(name)
    body = (FIXTURES / f"{name}.txt").read_bytes()
    response = await client.post(url, content=body, headers=KOMMO_HEADERS)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "queued": expected.queued(),
        "dropped": 0,
        "unsorted": 0,
        "ignored": {},
    }
    assert await queued(redis, settings) == expected_queue(expected)
    if expected.is_empty():
        assert await namespace(redis, settings) == set()
    else:
        jobs = await ArqRedis(connection_pool=redis.connection_pool).queued_jobs(
            queue_name=Keys(settings.redis_prefix).queue
        )
        assert [j.function for j in jobs] == ["process_hints"]


async def test_a_burst_enqueues_one_job(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings
) -> None:
    for ident in range(1, 30):
        response = await client.post(url, content=f"leads[add][0][id]={ident}", headers=FORM)
        assert response.status_code == 200
    assert await redis.zcard(Keys(settings.redis_prefix).queue) == 1
    assert await q.pending_count(redis, Keys(settings.redis_prefix)) == 29
    await q.clear_scheduled(redis, Keys(settings.redis_prefix))  # what the job does first
    await client.post(url, content="leads[add][0][id]=1", headers=FORM)
    assert await redis.zcard(Keys(settings.redis_prefix).queue) == 2


async def test_charset_parameter_and_ignored_kinds(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings
) -> None:
    before = metric("webhooks_ignored_total", kind="task")
    response = await client.post(
        url,
        content=b"task%5Badd%5D%5B0%5D%5Bid%5D=5&task[add][1][id]=6&account[id]=31000001",
        headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert response.status_code == 200
    assert response.json()["ignored"] == {"task": 2}
    assert metric("webhooks_ignored_total", kind="task") == before + 2
    assert await namespace(redis, settings) == set()


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["wrong", "s" * 40, "%E2%98%83", "{secret}x", "{secret}/x", "x{secret}", "{short}"],
)
async def test_wrong_secret_is_404_and_queues_nothing(
    client: httpx.AsyncClient,
    url: str,
    redis: Redis,
    settings: Settings,
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = url.rsplit("/", 1)[1]
    path = path.format(secret=secret, short=secret[:-1])
    before = metric("webhooks_rejected_total", reason="bad_secret")
    with caplog.at_level(logging.DEBUG):
        response = await client.post(
            f"/webhooks/kommo/{path}", content=b"leads[add][0][id]=1", headers=FORM
        )
    assert response.status_code == 404
    assert response.text == "Not Found"
    assert response.headers["content-type"].startswith("text/plain")
    if "/" not in path:
        assert metric("webhooks_rejected_total", reason="bad_secret") == before + 1
    assert await namespace(redis, settings) == set()
    assert not [r for r in caplog.records if r.name.startswith("service")]


async def test_too_large(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings
) -> None:
    limit = settings.webhook_max_bytes
    big = b"leads[add][0][id]=1&leads[add][0][name]=" + b"x" * limit
    before = metric("webhooks_rejected_total", reason="too_large")
    response = await client.post(url, content=big, headers=FORM)  # Content-Length
    assert response.status_code == 413
    assert "error" in response.json()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: enforced while reading
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    response = await client.post(url, content=chunks(), headers=FORM)
    assert response.status_code == 413
    assert metric("webhooks_rejected_total", reason="too_large") == before + 2
    exact = b"leads[add][0][id]=1&x=" + b"y" * (limit - 22)
    assert len(exact) == limit
    assert (await client.post(url, content=exact, headers=FORM)).status_code == 200
    assert await q.pending_count(redis, Keys(settings.redis_prefix)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded; charset=latin-1"},
        {"content-type": "application/x-www-form-urlencoded", "content-encoding": "gzip"},
    ],
)
async def test_unsupported_media_type(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings, headers: dict[str, str]
) -> None:
    response = await client.post(url, content=b"leads[add][0][id]=1", headers=headers)
    assert response.status_code == 415
    assert "error" in response.json()
    assert await namespace(redis, settings) == set()


async def test_unparseable_is_400_with_a_reason(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings
) -> None:
    before = metric("webhooks_rejected_total", reason="unparseable")
    response = await client.post(
        url, content=b"leads[add][0][id]=1&leads[add][1][id]=zero", headers=FORM
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "leads[add][1][id] is not a positive integer up to 2**53: 'zero'"
    }
    response = await client.post(url, content=b'{"leads": []}', headers=FORM)
    assert response.status_code == 400
    assert metric("webhooks_rejected_total", reason="unparseable") == before + 2
    assert await namespace(redis, settings) == set()


async def test_another_account_is_403(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings
) -> None:
    response = await client.post(
        url, content=b"leads[add][0][id]=1&account[id]=31000002", headers=FORM
    )
    assert response.status_code == 403
    assert response.json() == {"error": "webhook is for another Kommo account"}
    assert await namespace(redis, settings) == set()
    ok = await client.post(url, content=b"leads[add][0][id]=1&account[subdomain]=x", headers=FORM)
    assert ok.status_code == 200


async def test_other_methods_are_not_allowed(client: httpx.AsyncClient, url: str) -> None:
    assert (await client.get(url)).status_code == 405


# --- generated bodies ------------------------------------------------------------------------

hypothesis_settings = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(hypothesis_settings, max_examples=800)
@given(case=valid_cases())
async def test_generated_valid_bodies_queue_exactly_their_ids(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings, case: Case
) -> None:
    await reset(redis, settings)
    response = await client.post(url, content=case.body, headers=FORM)
    assert response.status_code == 200, response.text
    assert await queued(redis, settings) == expected_queue(case.hints)
    assert response.json()["queued"] == case.hints.queued()


@settings(hypothesis_settings, max_examples=700)
@given(
    raw=st.one_of(mutated_bodies(), garbage, valid_cases(account_id=31000002).map(lambda c: c.body))
)
async def test_generated_bad_bodies_never_5xx_and_queue_nothing(
    client: httpx.AsyncClient, url: str, redis: Redis, settings: Settings, raw: bytes
) -> None:
    await reset(redis, settings)
    response = await client.post(url, content=raw, headers=FORM)
    assert response.status_code in (200, 400, 403), response.text
    if response.status_code == 200:  # a mutation can leave the body valid: the parser decides
        assert await queued(redis, settings) == expected_queue(parse_webhook(raw))
    else:
        assert "\n" not in response.json()["error"]
        assert await namespace(redis, settings) == set()


# --- Redis unavailable -----------------------------------------------------------------------


class _Proxy:
    """A TCP proxy to Redis that can be cut, so the app starts and then loses Redis."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += (writer, up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


async def test_redis_down_still_answers_2xx(
    env: dict[str, str], redis_url: str, redis: Redis, url: str
) -> None:
    parts = urlsplit(redis_url)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    port = await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    app_settings = Settings.from_env({**env, "REDIS_URL": proxied}, Needs.DATABASE | Needs.REDIS)
    body = (FIXTURES / "lead_update.txt").read_bytes()
    async with running(create_app(app_settings)) as client:
        assert (await client.post(url, content=body, headers=FORM)).status_code == 200
        await proxy.cut()
        lost = metric("webhooks_lost_total")
        response = await client.post(url, content=body, headers=KOMMO_HEADERS)
        assert response.status_code == 202
        assert response.json() == {"queued": None, "lost": True}
        assert metric("webhooks_lost_total") == lost + 1
        # refusals need no Redis
        assert (await client.post(url, content=b"x=1", headers=FORM)).status_code == 400
        assert (await client.post(url + "x", content=body, headers=FORM)).status_code == 404
    await reset(redis, app_settings)


# --- the secret never reaches the logs -------------------------------------------------------


def test_access_log_path_is_redacted() -> None:
    secret = "s3cr3t" * 7
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/webhooks/kommo/{secret}?a=b", "1.1", 200),
        None,
    )
    assert RedactWebhookPath().filter(record) is True
    message = record.getMessage()
    assert secret not in message
    assert '"POST /webhooks/kommo/*** HTTP/1.1" 200' in message
    spaced = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s", ("/webhooks/kommo/a b'c",), None
    )
    RedactWebhookPath().filter(spaced)
    assert spaced.getMessage() == "/webhooks/kommo/***"
    other = logging.LogRecord(
        "x", logging.INFO, __file__, 1, f"GET /webhooks/kommo/{secret}", None, None
    )
    RedactWebhookPath().filter(other)
    assert secret not in other.getMessage()
    untouched = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("/healthz",), None)
    RedactWebhookPath().filter(untouched)
    assert untouched.getMessage() == "/healthz"


async def test_a_body_for_another_subdomain_is_refused(env: dict[str, str], redis: Redis) -> None:
    settings = Settings.from_env(
        {**env, "KOMMO_SUBDOMAIN": "examplecorp"}, Needs.DATABASE | Needs.REDIS | Needs.WEB
    )
    assert settings.webhook_secret is not None
    path = f"/webhooks/kommo/{settings.webhook_secret.value}"
    async with running(create_app(settings)) as client:
        other = await client.post(
            path, content=b"account[subdomain]=rival&leads[add][0][id]=7", headers=FORM
        )
        ours = await client.post(
            path, content=b"account[subdomain]=examplecorp&leads[add][0][id]=7", headers=FORM
        )
    assert other.status_code == 403 and ours.status_code == 200
    assert await redis.zscore(Keys(settings.redis_prefix).hints_queue("leads"), "7") is not None
    jobs = await redis.zrange(Keys(settings.redis_prefix).queue, 0, -1)  # arq's job keys are global
    if jobs:
        await redis.delete(*(b"arq:job:" + j for j in jobs))
