"""A webhook event name Kommo refuses never costs the others their subscription.

A ``MockTransport`` stands in for Kommo's ``/api/v4/webhooks``: like Kommo it answers 422
(problem+json) to a list holding a name it does not know, leaves the hook unchanged then, and
replaces the settings of an existing destination on every accepted ``POST``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from service.kommo.client import KommoClient
from service.kommo.errors import KommoBadRequest
from service.resources import open_sync_resources
from service.settings import Settings
from service.sync import subscription
from service.sync.subscription import SETTINGS
from tests.engine import kommo_settings_for

URL = "https://sync.example.com/webhooks/kommo/" + "x" * 40


class FakeWebhooks:
    """Kommo's webhook endpoint, knowing the event names in ``known``."""

    def __init__(self, known: set[str], status: int = 422) -> None:
        self.known, self.status = known, status
        self.hooks: dict[str, list[str]] = {}
        self.posts: list[list[str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v4/webhooks"
        if request.method == "GET":
            if not self.hooks:
                return httpx.Response(204)
            found = [
                {"destination": d, "settings": s, "disabled": False} for d, s in self.hooks.items()
            ]
            return httpx.Response(200, json={"_total_items": 1, "_embedded": {"webhooks": found}})
        body = json.loads(request.content)
        self.posts.append(list(body["settings"]))
        wrong = [i for i, name in enumerate(body["settings"]) if name not in self.known]
        if wrong:
            errors = [{"code": "NotSupportedChoice", "path": f"settings.{i}"} for i in wrong]
            problem = {
                "title": "Bad Request",
                "status": self.status,
                "detail": "Request validation failed",
                "validation-errors": [{"request_id": "0", "errors": errors}],
            }
            return httpx.Response(
                self.status, json=problem, headers={"content-type": "application/problem+json"}
            )
        self.hooks[body["destination"]] = list(body["settings"])
        return httpx.Response(201, json={"destination": body["destination"], **body})


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


@contextlib.asynccontextmanager
async def kommo_for(settings: Settings, fake: FakeWebhooks) -> AsyncIterator[KommoClient]:
    async with open_sync_resources(settings, kommo_transport=httpx.MockTransport(fake)) as res:
        yield res.kommo


@pytest.mark.parametrize("status", [400, 422])
async def test_a_refused_optional_name_leaves_the_core_set_subscribed(
    kommo_settings: Settings, redis: Redis, status: int
) -> None:
    fake = FakeWebhooks(set(SETTINGS), status)
    async with kommo_for(kommo_settings, fake) as kommo:
        taken = await subscription.install(kommo, URL, ["add_unsorted"])
        assert taken == SETTINGS
        assert fake.hooks[URL] == list(SETTINGS)
        assert (await subscription.check(kommo, URL)).ok
        # healing a healthy hook subscribes nothing again: the refused name is not required
        before = len(fake.posts)
        assert (await subscription.heal(kommo, URL, ["add_unsorted"])).ok
        assert len(fake.posts) == before


async def test_each_optional_name_costs_only_itself(kommo_settings: Settings, redis: Redis) -> None:
    fake = FakeWebhooks({*SETTINGS, "add_unsorted", "delete_unsorted"})
    async with kommo_for(kommo_settings, fake) as kommo:
        wanted = ["add_unsorted", "update_unsorted", "delete_unsorted", "add_lead"]
        taken = await subscription.install(kommo, URL, wanted)
        assert taken == (*SETTINGS, "add_unsorted", "delete_unsorted")
        assert fake.hooks[URL] == list(taken)
        assert fake.posts[0] == [*SETTINGS, "add_unsorted", "update_unsorted", "delete_unsorted"]
        assert fake.posts[1] == list(SETTINGS)  # the core set first, alone
        assert len(fake.posts) == 5
        # a hook Kommo dropped is healed the same way
        fake.hooks.clear()
        verdict = await subscription.heal(kommo, URL, wanted)
        assert not verdict.ok and "no webhook" in verdict.problem
        assert fake.hooks[URL] == list(taken)


async def test_accepted_optional_names_cost_one_call(
    kommo_settings: Settings, redis: Redis
) -> None:
    fake = FakeWebhooks({*SETTINGS, "add_unsorted"})
    async with kommo_for(kommo_settings, fake) as kommo:
        assert await subscription.install(kommo, URL, ["add_unsorted"]) == (
            *SETTINGS,
            "add_unsorted",
        )
        assert fake.posts == [[*SETTINGS, "add_unsorted"]]
        fake.posts.clear()
        assert await subscription.install(kommo, URL) == SETTINGS  # the default: none optional
        assert fake.posts == [list(SETTINGS)]


async def test_a_refused_core_set_is_an_error(kommo_settings: Settings, redis: Redis) -> None:
    fake = FakeWebhooks(set(SETTINGS) - {"restore_contact"})
    async with kommo_for(kommo_settings, fake) as kommo:
        with pytest.raises(KommoBadRequest):
            await subscription.install(kommo, URL, ["add_unsorted"])
        with pytest.raises(KommoBadRequest):
            await subscription.install(kommo, URL)
        assert fake.hooks == {}
