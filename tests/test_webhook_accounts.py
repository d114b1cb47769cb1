"""Whose webhook is it: every account a body names is checked, in old layouts too.

Old bodies carry no ``account[id]``/``account[subdomain]``; the account is then only in each
record (``leads[update][0][account_id]``, ``contacts[add][0][account_id]``). The layouts are
the fixtures' (``tests/fixtures/kommo/webhooks``), with the account block taken out or changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis

from devenv.asgi import lifespan
from service.keys import Keys
from service.settings import Needs, Settings
from service.sync import hints as q
from service.web.app import create_app
from service.web.webform import WebhookParseError, parse_webhook, subdomain_of
from service.web.webhooks import is_for_account

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "webhooks"
FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
OURS, OTHER = 31000001, 31000002


def pairs(name: str) -> list[tuple[str, str]]:
    """A fixture's decoded view as (key, value) pairs, in the fixture's order."""
    lines = (FIXTURES / f"{name}.decoded.txt").read_text().splitlines()
    return [(k, v) for k, _, v in (line.partition("=") for line in lines if "=" in line)]


def old_layout(name: str, account_id: int = OURS) -> bytes:
    """The fixture without its account block, its records naming ``account_id``."""
    kept = [
        (k, str(account_id) if k.endswith("[account_id]") else v)
        for k, v in pairs(name)
        if not k.startswith("account[")
    ]
    assert any(k.endswith("[account_id]") for k, _ in kept), name
    return urlencode(kept).encode()


def with_account(name: str, **account: str) -> bytes:
    """The fixture with its account block replaced (``id``, ``subdomain``, ``_links][self``)."""
    kept = [(k, v) for k, v in pairs(name) if not k.startswith("account[")]
    block = [(f"account[{k.replace('__', '][')}]", v) for k, v in account.items()]
    return urlencode(block + kept).encode()


# --- the parser collects every account the body names ----------------------------------------


@pytest.mark.parametrize("name", ["lead_update", "lead_status", "contact_update", "contact_add"])
def test_old_layouts_name_the_account_in_each_record(name: str) -> None:
    assert parse_webhook(old_layout(name)).account_ids == {OURS}
    assert parse_webhook(old_layout(name, OTHER)).account_ids == {OTHER}
    full = parse_webhook((FIXTURES / f"{name}.txt").read_bytes())
    assert (full.account_ids, full.subdomain) == ({OURS}, "examplecorp")


def test_a_body_naming_two_accounts_is_invalid() -> None:
    mixed = urlencode(
        [
            ("leads[update][0][id]", "1"),
            ("leads[update][0][account_id]", str(OURS)),
            ("contacts[add][0][id]", "2"),
            ("contacts[add][0][account_id]", str(OTHER)),
        ]
    ).encode()
    with pytest.raises(WebhookParseError, match="two different accounts"):
        parse_webhook(mixed)
    body = with_account("lead_update", id=str(OURS)).replace(
        f"%5Baccount_id%5D={OURS}".encode(), f"%5Baccount_id%5D={OTHER}".encode()
    )
    with pytest.raises(WebhookParseError, match=r"account\[id\] and leads\[update\]\[0\]"):
        parse_webhook(body)
    task = b"task[add][0][id]=5&task[add][0][account_id]=31000002&account[id]=31000001"
    with pytest.raises(WebhookParseError, match="two different accounts"):
        parse_webhook(task)
    links = with_account(
        "lead_add", subdomain="examplecorp", _links__self="https://rival.kommo.com"
    )
    with pytest.raises(WebhookParseError, match="two different accounts"):
        parse_webhook(links)


@pytest.mark.parametrize("value", ["0", "-3", "abc", "", "3.5", str(2**60)])
def test_a_record_account_id_is_validated(value: str) -> None:
    body = urlencode([("leads[add][0][id]", "1"), ("leads[add][0][account_id]", value)])
    with pytest.raises(WebhookParseError, match=r"leads\[add\]\[0\]\[account_id\] is not"):
        parse_webhook(body.encode())


def test_subdomains_compare_without_case_or_host_suffix() -> None:
    assert subdomain_of("ExampleCorp") == "examplecorp"
    assert subdomain_of(" examplecorp.KOMMO.com ") == "examplecorp"
    assert subdomain_of("examplecorp.amocrm.ru") == "examplecorp"
    assert subdomain_of("examplecorp.example.org") == "examplecorp.example.org"
    linked = parse_webhook(with_account("lead_add", _links__self="https://ExampleCorp.amocrm.ru"))
    assert linked.subdomain == "examplecorp"
    proxied = parse_webhook(with_account("lead_add", _links__self="https://crm.example.org"))
    assert proxied.subdomain is None  # not a Kommo host: it names no account


def test_is_for_account_takes_the_expected_account() -> None:
    ours = parse_webhook(with_account("lead_add", id=str(OURS), subdomain="ExampleCorp"))
    assert is_for_account(ours, OURS, "examplecorp")
    assert is_for_account(ours, OURS, "ExampleCorp.kommo.com")
    assert is_for_account(ours, None, None)
    assert not is_for_account(ours, OTHER, None)
    assert not is_for_account(ours, None, "rival")
    # one deployment, two accounts: the same body belongs to one of them only
    accounts = [(OURS, "examplecorp"), (OTHER, "rival")]
    assert [is_for_account(ours, *a) for a in accounts] == [True, False]
    old = parse_webhook(old_layout("lead_status", OTHER))
    assert [is_for_account(old, *a) for a in accounts] == [False, True]
    anonymous = parse_webhook(b"leads[add][0][id]=5")
    assert all(is_for_account(anonymous, *a) for a in accounts)


# --- the endpoint refuses another account's body and queues nothing --------------------------


@pytest.fixture
async def web(env: dict[str, str], redis: Redis) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    settings = Settings.from_env(
        {**env, "KOMMO_SUBDOMAIN": "examplecorp"}, Needs.DATABASE | Needs.REDIS | Needs.WEB
    )
    assert settings.kommo_account_id == OURS and settings.webhook_secret is not None
    async with lifespan(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as client:
            yield client, f"/webhooks/kommo/{settings.webhook_secret.value}"
    jobs = await redis.zrange(Keys(settings.redis_prefix).queue, 0, -1)  # arq's keys are global
    if jobs:
        await redis.delete(*(b"arq:job:" + j for j in jobs))


async def pending(redis: Redis, settings: Settings) -> int:
    return await q.pending_count(redis, Keys(settings.redis_prefix))


SECOND_ACCOUNT = f"&contacts[add][0][id]=9&contacts[add][0][account_id]={OTHER}".encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (old_layout("lead_update", OTHER), 403),
        (old_layout("lead_status", OTHER), 403),
        (old_layout("contact_update", OTHER), 403),
        (old_layout("contact_add", OTHER), 403),
        (with_account("lead_add", subdomain="rival"), 403),
        (with_account("lead_add", subdomain="examplecorp.rival.example"), 403),
        (with_account("lead_add", _links__self="https://rival.kommo.com"), 403),
        (with_account("lead_add", id=str(OURS), subdomain="RIVAL.kommo.com"), 403),
        (old_layout("lead_update", OTHER).replace(b"leads%5Bupdate%5D", b"leads%5Badd%5D"), 403),
        (old_layout("lead_update") + SECOND_ACCOUNT, 400),
    ],
)
async def test_another_accounts_body_is_refused(
    web: tuple[httpx.AsyncClient, str], redis: Redis, settings: Settings, body: bytes, status: int
) -> None:
    client, path = web
    response = await client.post(path, content=body, headers=FORM)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert await pending(redis, settings) == 0
    assert await redis.zcard(Keys(settings.redis_prefix).queue) == 0  # no job either


@pytest.mark.parametrize(
    "body",
    [
        old_layout("lead_update"),
        old_layout("contact_update"),
        with_account("lead_add", id=str(OURS), subdomain="ExampleCorp"),
        with_account("lead_add", subdomain="examplecorp.kommo.com"),
        with_account("lead_add", _links__self="https://examplecorp.kommo.com"),
        (FIXTURES / "lead_status.txt").read_bytes(),  # account block last
    ],
)
async def test_our_bodies_in_every_layout_are_queued(
    web: tuple[httpx.AsyncClient, str], redis: Redis, settings: Settings, body: bytes
) -> None:
    client, path = web
    response = await client.post(path, content=body, headers=FORM)
    assert response.status_code == 200, response.text
    assert await pending(redis, settings) == 1
