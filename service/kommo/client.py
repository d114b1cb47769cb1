"""The Kommo API v4 client: one ``httpx.AsyncClient`` per process, every call through the budget.

Callers use the typed methods (:meth:`KommoClient.changed_since`, :meth:`~KommoClient.by_ids`,
:meth:`~KommoClient.events_since`, …), which speak in :mod:`service.records`; paths, ``filter[…]``
parameters, HAL pages and ``_embedded`` stay in this package. How each answer is judged (429,
403, 5xx, …) is :mod:`service.kommo.wire`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from redis.asyncio import Redis

from service.accounts.secrets import cipher_for
from service.keys import Keys
from service.kinds import EntityKind
from service.kommo import parse
from service.kommo.budget import Priority, RateBudget
from service.kommo.errors import KommoUnavailable
from service.kommo.oauth import OAuthTokens
from service.kommo.tokens import StaticToken, TokenSource
from service.kommo.wire import JSON, Params, RetryPolicy, Wire
from service.records import CustomField, Event, LossReason, Pipeline, Record, TagRef, User
from service.settings import ConfigError, Settings

CHUNK = 250  # ids per filter[id][] call, and the page size of every list
EVENTS_PAGE = 100  # amoCRM documents 100 events per page (Kommo 250)
FIELDS_PAGE = 50  # custom_fields: "up to 50 fields per request", whatever the limit


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a list: its entities, and whether Kommo says another page follows."""

    records: list[Record]
    has_next: bool


class KommoClient:
    """Kommo API v4 calls; each waits for the shared budget at the caller's priority."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    @property
    def budget(self) -> RateBudget:
        return self.wire.budget

    @contextlib.asynccontextmanager
    async def admitted(self, priority: Priority) -> AsyncIterator[None]:
        """Wait for a budget slot first; the task's next call at ``priority`` spends it.

        A caller that gathers work (webhook hints) waits here and then gathers: whatever
        arrived during the wait rides along in the same call instead of waiting for the next.
        """
        async with self.wire.admitted(priority):
            yield

    # --- entities ---------------------------------------------------------------------------
    async def by_ids(
        self,
        kind: EntityKind,
        ids: Iterable[int],
        *,
        priority: Priority,
        with_: Sequence[str] | None = None,
    ) -> list[Record]:
        """The entities with these ids that Kommo returns (a deleted or unknown id is absent),
        ``filter[id][]`` up to 250 at a time."""
        return parse.records(kind, await self._by_ids(kind, ids, priority, with_))

    async def leads_of_contacts(
        self, kind: EntityKind, ids: Iterable[int], *, priority: Priority
    ) -> tuple[list[Record], set[int]]:
        """Contacts (or another kind linking leads) read ``with=leads``: their records and the
        ids of the leads they are linked to."""
        found = await self._by_ids(kind, ids, priority, (*kind.fetch_with, "leads"))
        return parse.records(kind, found), {i for o in found for i in parse.linked_ids(o, "leads")}

    async def changed_since(
        self, kind: EntityKind, start: int, page: int = 1, *, priority: Priority
    ) -> Page:
        """A page of everything updated at or after ``start`` (Unix s), ascending."""
        params: dict[str, Any] = {
            "filter[updated_at][from]": start,
            "order[updated_at]": "asc",
            "limit": CHUNK,
            "page": page,
            **self._with(kind.fetch_with),
        }
        return await self._page(kind, params, priority)

    async def in_id_order(
        self, kind: EntityKind, page: int, *, priority: Priority, with_: Sequence[str] | None = None
    ) -> Page:
        """Page ``page`` of every entity, ascending by id (backfill, id sweep)."""
        params: dict[str, Any] = {
            "order[id]": "asc",
            "limit": CHUNK,
            "page": page,
            **self._with(kind.fetch_with if with_ is None else with_),
        }
        return await self._page(kind, params, priority)

    async def has_page(self, kind: EntityKind, page: int, *, priority: Priority) -> bool:
        """Whether the id-ordered list has a page ``page`` (lists carry no total)."""
        data = await self.get(
            f"/api/v4/{kind.name}",
            {"limit": CHUNK, "page": page, "order[id]": "asc"},
            priority=priority,
        )
        return data is not None and bool(parse.embedded(data, kind.name))

    async def events_since(
        self,
        types: Sequence[str],
        created_from: int,
        created_to: int | None = None,
        *,
        priority: Priority,
    ) -> list[Event]:
        """Events of these types created at or after ``created_from``, every page."""
        params: dict[str, Any] = {
            "filter[type][]": list(types),
            "limit": EVENTS_PAGE,
            "filter[created_at][from]": created_from,
        }
        if created_to is not None:
            params["filter[created_at][to]"] = created_to
        return [
            parse.event(e)
            for e in await self._collect("/api/v4/events", params, "events", priority)
        ]

    async def events_page(
        self, types: Sequence[str], created_to: int, page: int, *, priority: Priority
    ) -> tuple[list[Event], bool]:
        """Page ``page`` of the events of these types created up to ``created_to`` (a fixed
        window: page numbers stay stable however the feed grows), and whether more follow."""
        params: dict[str, Any] = {
            "filter[type][]": list(types),
            "limit": EVENTS_PAGE,
            "page": page,
            "filter[created_at][to]": created_to,
        }
        data = await self.get("/api/v4/events", params, priority=priority)
        if data is None:
            return [], False
        items = parse.embedded(data, "events")
        return [parse.event(e) for e in items], bool(items) and _next(data) is not None

    # --- dictionaries -----------------------------------------------------------------------
    async def pipelines(self, *, priority: Priority) -> list[Pipeline]:
        """Every pipeline with its statuses (one call: the endpoint has no paging)."""
        data = await self.get("/api/v4/leads/pipelines", None, priority=priority)
        return [parse.pipeline(p) for p in parse.embedded(data or {}, "pipelines")]

    async def users(self, *, priority: Priority) -> list[User]:
        """Every user (admin rights needed: :class:`KommoBadRequest` otherwise)."""
        found = await self._collect("/api/v4/users", {"limit": CHUNK}, "users", priority)
        return [parse.user(u) for u in found]

    async def tags(self, kind: EntityKind, *, priority: Priority) -> list[TagRef]:
        """The tag dictionary of one entity kind (dictionaries are per kind)."""
        found = await self._collect(f"/api/v4/{kind.name}/tags", {"limit": CHUNK}, "tags", priority)
        return [parse.tag(t) for t in found]

    async def loss_reasons(self, *, priority: Priority) -> list[LossReason]:
        """Every loss reason (``GET /api/v4/leads/loss_reasons``, every page)."""
        found = await self._collect(
            "/api/v4/leads/loss_reasons", {"limit": CHUNK}, "loss_reasons", priority
        )
        return [parse.loss_reason(r) for r in found]

    async def custom_fields(self, kind: EntityKind, *, priority: Priority) -> list[CustomField]:
        """The custom field definitions of one kind (Kommo serves at most 50 a page)."""
        found = await self._collect(
            f"/api/v4/{kind.name}/custom_fields", {"limit": FIELDS_PAGE}, "custom_fields", priority
        )
        return [parse.custom_field(kind.name, f) for f in found]

    async def account(self, *, priority: Priority, with_: Sequence[str] = ()) -> JSON:
        data = await self.get("/api/v4/account", self._with(with_) or None, priority=priority)
        if data is None:
            raise KommoUnavailable("GET /api/v4/account: empty answer", status=204)
        return data

    # --- webhook subscriptions --------------------------------------------------------------
    async def list_webhooks(self, *, priority: Priority) -> list[JSON]:
        return parse.embedded(
            await self.get("/api/v4/webhooks", priority=priority) or {}, "webhooks"
        )

    async def subscribe_webhook(
        self, destination: str, settings_list: Sequence[str], *, priority: Priority, sort: int = 10
    ) -> JSON:
        body = {"destination": destination, "settings": list(settings_list), "sort": sort}
        return await self.wire.call("POST", "/api/v4/webhooks", priority, json=body) or {}

    async def delete_webhook(self, destination: str, *, priority: Priority) -> None:
        body = {"destination": destination}
        await self.wire.call("DELETE", "/api/v4/webhooks", priority, json=body)

    # --- the wire ---------------------------------------------------------------------------
    async def get(
        self, path: str, params: Params | None = None, *, priority: Priority
    ) -> JSON | None:
        """GET a JSON object; ``None`` on 204."""
        return await self.wire.call("GET", path, priority, params=params)

    @staticmethod
    def _with(values: Sequence[str]) -> dict[str, str]:
        return {"with": ",".join(values)} if values else {}

    async def _page(self, kind: EntityKind, params: Params, priority: Priority) -> Page:
        data = await self.get(f"/api/v4/{kind.name}", params, priority=priority)
        if data is None:
            return Page([], False)
        items = parse.embedded(data, kind.name)
        return Page(parse.records(kind, items), bool(items) and _next(data) is not None)

    async def _pages(
        self, path: str, params: Params | None, key: str, priority: Priority
    ) -> AsyncIterator[list[JSON]]:
        """Each page's ``_embedded[key]``; follows ``_links.next`` until absent or 204."""
        query: Params | None = params
        while True:
            data = await self.get(path, query, priority=priority)
            if data is None:
                return
            items = parse.embedded(data, key)
            if items:
                yield items
            href = _next(data)
            if not href:
                return
            query = httpx.QueryParams(urlsplit(href).query)  # their query, our base URL

    async def _collect(
        self, path: str, params: Params | None, key: str, priority: Priority
    ) -> list[JSON]:
        return [item async for page in self._pages(path, params, key, priority) for item in page]

    async def _by_ids(
        self, kind: EntityKind, ids: Iterable[int], priority: Priority, with_: Sequence[str] | None
    ) -> list[JSON]:
        unique = sorted(set(ids))
        found: list[JSON] = []
        extra = self._with(kind.fetch_with if with_ is None else with_)
        for i in range(0, len(unique), CHUNK):
            params: dict[str, Any] = {
                "filter[id][]": unique[i : i + CHUNK],
                "limit": CHUNK,
                **extra,
            }
            found += await self._collect(f"/api/v4/{kind.name}", params, kind.name, priority)
        return found


def _next(data: JSON) -> str | None:
    href = ((data.get("_links") or {}).get("next") or {}).get("href")
    return str(href) if href else None


@contextlib.asynccontextmanager
async def kommo_client(
    settings: Settings,
    redis: Redis,
    pool: asyncpg.Pool | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    budget: RateBudget | None = None,
    retry: RetryPolicy | None = None,
    tokens: Callable[[httpx.AsyncClient], TokenSource] | None = None,
) -> AsyncIterator[KommoClient]:
    """The process's client: one httpx connection pool, the shared budget, the credential.

    ``tokens`` builds the credential from the client's httpx client instead of the settings'
    (a registered account's, :func:`service.accounts.credentials.account_client`)."""
    if settings.kommo_base_url is None:
        raise ConfigError("KOMMO_SUBDOMAIN", "is required (or KOMMO_BASE_URL)")
    timeout = httpx.Timeout(30.0, connect=10.0)
    async with httpx.AsyncClient(
        base_url=settings.kommo_base_url,
        transport=transport,
        timeout=timeout,
        headers={"User-Agent": "kommo-sync/0.1"},
    ) as http:
        source: TokenSource
        if tokens is not None:
            source = tokens(http)
        elif settings.kommo_token is not None:
            source = StaticToken(settings.kommo_token.value)
        elif settings.oauth is not None and pool is not None:
            source = OAuthTokens(
                pool, http, settings.kommo_base_url, settings.oauth, cipher=cipher_for(settings)
            )
        else:
            raise ConfigError("KOMMO_TOKEN", "is required (or the KOMMO_CLIENT_* OAuth set)")
        budget = budget or RateBudget(redis, Keys.of(settings), settings.rate_limit)
        yield KommoClient(Wire(http, budget, source, retry=retry or RetryPolicy()))
