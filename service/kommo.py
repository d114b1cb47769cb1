"""The Kommo API v4 client: one ``httpx.AsyncClient`` per process, every call through the budget.

Status handling, decided by status code only (never by body text):

==========  ================================================================================
2xx         the JSON body; 204 (empty list, unknown id) is ``None`` / the end of the pages
401         OAuth: refresh once (under the lock) and retry once; long-lived token: never.
            Then :class:`KommoAuthError`
402         :class:`KommoPaymentRequired`
403         trip the deployment-wide breaker, :class:`KommoBlocked`; never retried
429         ``retry_after`` from the JSON body (HTML: a default), ``budget.penalize``, retry;
            :class:`KommoRateLimited` after ``rate_limited_attempts``
5xx, I/O    GET only: retried with jittered exponential backoff, then :class:`KommoUnavailable`
other 4xx   :class:`KommoBadRequest`
==========  ================================================================================
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import httpx
from prometheus_client import Counter
from redis.asyncio import Redis

from service.budget import Priority, RateBudget, Sleep
from service.errors import (
    KommoAuthError,
    KommoBadRequest,
    KommoBlocked,
    KommoPaymentRequired,
    KommoRateLimited,
    KommoUnavailable,
)
from service.oauth import OAuthTokens
from service.settings import ConfigError, Settings

if TYPE_CHECKING:
    from service.resources import Resources

log = logging.getLogger(__name__)

CALLS = Counter("kommo_calls_total", "Kommo API calls by endpoint and status",
                ["endpoint", "status"])
RATE_LIMITED = Counter("kommo_429_total", "Kommo API answers with HTTP 429")

Scalar = str | int | float | bool | None
Params = httpx.QueryParams | Mapping[str, Scalar | Sequence[Scalar]]
CHUNK = 250
_ID = re.compile(r"/\d+(?=/|$)")


class TokenSource(Protocol):
    async def access_token(self) -> str: ...
    async def refresh(self, rejected: str) -> str: ...


class StaticToken:
    """A long-lived token: never refreshed; a 401 means it expired or was revoked."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refresh(self, rejected: str) -> str:
        raise KommoAuthError("Kommo rejected KOMMO_TOKEN (HTTP 401): expired or revoked",
                             status=401)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # GET attempts on 5xx / timeouts / connection errors
    base_delay: float = 0.5
    max_delay: float = 20.0
    rate_limited_attempts: int = 5  # 429 answers tolerated per call
    default_retry_after: float = 5.0  # 429 without a JSON retry_after
    breaker_seconds: float = 900.0  # after a 403 block
    unpaid_seconds: float = 600.0  # after a 402: try again in ten minutes

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))


def endpoint_of(path: str) -> str:
    """``/api/v4/leads/123`` → ``/api/v4/leads/{id}`` (a metric label, no query, no ids)."""
    return _ID.sub("/{id}", urlsplit(path).path)


_ADMITTED: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "kommo_admitted", default=None
)


class KommoClient:
    """Kommo API v4 calls; each waits for the shared budget at the caller's priority."""

    def __init__(self, http: httpx.AsyncClient, budget: RateBudget, tokens: TokenSource, *,
                 retry: RetryPolicy = RetryPolicy(), sleep: Sleep | None = None) -> None:
        self.http, self.budget, self.tokens, self.retry = http, budget, tokens, retry
        self._sleep = sleep or budget.sleep

    @contextlib.asynccontextmanager
    async def admitted(self, priority: Priority) -> AsyncIterator[None]:
        """Wait for a budget slot first; the task's next call at ``priority`` spends it.

        A caller that gathers work (webhook hints) waits here and then gathers: whatever
        arrived during the wait rides along in the same call instead of waiting for the next.
        """
        await self.budget.acquire(priority)
        token = _ADMITTED.set(priority)
        try:
            yield
        finally:
            _ADMITTED.reset(token)

    async def get(self, path: str, params: Params | None = None, *,
                  priority: Priority) -> dict[str, Any] | None:
        """GET a JSON object; ``None`` on 204."""
        return await self._call("GET", path, priority, params=params)

    async def pages(self, path: str, params: Params | None, embedded_key: str, *,
                    priority: Priority) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's ``_embedded[embedded_key]``; follows ``_links.next`` until absent or 204."""
        query: Params | None = params
        while True:
            data = await self.get(path, query, priority=priority)
            if data is None:
                return
            items = (data.get("_embedded") or {}).get(embedded_key) or []
            if items:
                yield list(items)
            href = ((data.get("_links") or {}).get("next") or {}).get("href")
            if not href:
                return
            query = httpx.QueryParams(urlsplit(href).query)  # their query, our base URL

    async def collect(self, path: str, params: Params | None, embedded_key: str, *,
                      priority: Priority) -> list[dict[str, Any]]:
        return [item async for page in self.pages(path, params, embedded_key, priority=priority)
                for item in page]

    async def leads_by_ids(self, ids: Iterable[int], *, priority: Priority) -> list[dict[str, Any]]:
        return await self._by_ids("/api/v4/leads", "leads", ids, {"with": "contacts"}, priority)

    async def contacts_by_ids(self, ids: Iterable[int], *,
                              priority: Priority) -> list[dict[str, Any]]:
        return await self._by_ids("/api/v4/contacts", "contacts", ids, {}, priority)

    async def account(self, *, priority: Priority, with_: Sequence[str] = ()) -> dict[str, Any]:
        data = await self.get("/api/v4/account", {"with": ",".join(with_)} if with_ else None,
                              priority=priority)
        if data is None:
            raise KommoUnavailable("GET /api/v4/account: empty answer", status=204)
        return data

    async def events(self, types: Sequence[str], created_from: int, created_to: int | None = None,
                     *, priority: Priority) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"filter[type][]": list(types), "limit": 100,
                                  "filter[created_at][from]": created_from}
        if created_to is not None:
            params["filter[created_at][to]"] = created_to
        return await self.collect("/api/v4/events", params, "events", priority=priority)

    async def list_webhooks(self, *, priority: Priority) -> list[dict[str, Any]]:
        data = await self.get("/api/v4/webhooks", priority=priority)
        return list(((data or {}).get("_embedded") or {}).get("webhooks") or [])

    async def subscribe_webhook(self, destination: str, settings_list: Sequence[str], *,
                                priority: Priority, sort: int = 10) -> dict[str, Any]:
        body = {"destination": destination, "settings": list(settings_list), "sort": sort}
        return await self._call("POST", "/api/v4/webhooks", priority, json=body) or {}

    async def delete_webhook(self, destination: str, *, priority: Priority) -> None:
        await self._call("DELETE", "/api/v4/webhooks", priority, json={"destination": destination})

    async def _by_ids(self, path: str, key: str, ids: Iterable[int], extra: dict[str, Any],
                      priority: Priority) -> list[dict[str, Any]]:
        unique = sorted(set(ids))
        found: list[dict[str, Any]] = []
        for i in range(0, len(unique), CHUNK):
            params = {"filter[id][]": unique[i:i + CHUNK], "limit": CHUNK, **extra}
            found += await self.collect(path, params, key, priority=priority)
        return found

    async def _call(self, method: str, path: str, priority: Priority, *,
                    params: Params | None = None, json: Any = None) -> dict[str, Any] | None:
        endpoint, retry = endpoint_of(path), self.retry
        failures = rate_limited = 0
        refreshed = False
        while True:
            if _ADMITTED.get() == priority:
                _ADMITTED.set(None)  # spend the slot taken by admitted()
            else:
                await self.budget.acquire(priority)
            token = await self.tokens.access_token()
            try:
                resp = await self.http.request(method, path, params=params, json=json,
                                               headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError as exc:
                CALLS.labels(endpoint, "error").inc()
                failures += 1
                log.warning("kommo %s %s failed: %s (attempt %d)", method, endpoint,
                            type(exc).__name__, failures)
                if method != "GET" or failures >= retry.attempts:
                    raise KommoUnavailable(
                        f"{method} {endpoint}: {type(exc).__name__} after {failures} attempt(s)"
                    ) from None
                await self._sleep(retry.backoff(failures - 1))
                continue
            status = resp.status_code
            CALLS.labels(endpoint, str(status)).inc()
            if status < 300:
                return None if status == 204 or not resp.content else _object(resp)
            log.warning("kommo %s %s -> HTTP %d (attempt %d)", method, endpoint, status,
                        failures + rate_limited + 1)
            what = f"{method} {endpoint}: HTTP {status}"
            if status == 401:
                if refreshed:
                    raise KommoAuthError(f"{what} after a token refresh", status=401)
                await self.tokens.refresh(token)
                refreshed = True
            elif status == 402:  # the account's subscription ended: pause everyone, loudly
                await self.budget.trip_breaker(retry.unpaid_seconds, f"{what}: payment required")
                raise KommoPaymentRequired(f"{what}: payment required", status=402)
            elif status == 403 and _missing_rights(endpoint, resp):
                raise KommoBadRequest(f"{what}: the token lacks the rights ({_detail(resp)})",
                                      status=403)
            elif status == 403:
                info = await self.budget.trip_breaker(retry.breaker_seconds,
                                                      f"{what} ({_detail(resp)})")
                raise KommoBlocked(f"{what}: Kommo blocked the API; calls stop", until=info.until)
            elif status == 429:
                RATE_LIMITED.inc()
                rate_limited += 1
                wait = _retry_after(resp, retry.default_retry_after)
                await self.budget.penalize(wait)
                if rate_limited >= retry.rate_limited_attempts:
                    raise KommoRateLimited(f"{what} {rate_limited} times", retry_after=wait)
            elif status >= 500:
                failures += 1
                if method != "GET" or failures >= retry.attempts:
                    raise KommoUnavailable(f"{what} after {failures} attempt(s)", status=status)
                await self._sleep(retry.backoff(failures - 1))
            else:
                raise KommoBadRequest(f"{what} ({_detail(resp)})", status=status)


def _missing_rights(endpoint: str, resp: httpx.Response) -> bool:
    """A 403 that is about rights (a scope, the admin-only users list), not an API block."""
    if "json" not in resp.headers.get("content-type", ""):
        return False  # the block is nginx's HTML page
    text = _detail(resp).lower()
    return endpoint == "/api/v4/users" or "scope" in text or "rights" in text


def _object(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise KommoUnavailable(f"HTTP {resp.status_code}: body is not JSON") from None
    if not isinstance(data, dict):
        raise KommoUnavailable(f"HTTP {resp.status_code}: body is not a JSON object")
    return data


def _problem(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _detail(resp: httpx.Response) -> str:
    """A short, query-free description of an error body (problem+json or HTML)."""
    text = str(_problem(resp).get("detail") or resp.headers.get("content-type", "no body"))
    return re.sub(r"\?\S*", "", text)[:160]


def _retry_after(resp: httpx.Response, default: float) -> float:
    value = _problem(resp).get("retry_after", resp.headers.get("retry-after"))
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if 0 < seconds <= 3600 else default


@contextlib.asynccontextmanager
async def kommo_client(settings: Settings, redis: Redis, pool: asyncpg.Pool | None, *,
                       transport: httpx.AsyncBaseTransport | None = None,
                       budget: RateBudget | None = None,
                       retry: RetryPolicy = RetryPolicy()) -> AsyncIterator[KommoClient]:
    """The process's client: one httpx connection pool, the shared budget, the credential."""
    if settings.kommo_base_url is None:
        raise ConfigError("KOMMO_SUBDOMAIN", "is required (or KOMMO_BASE_URL)")
    timeout = httpx.Timeout(30.0, connect=10.0)
    async with httpx.AsyncClient(base_url=settings.kommo_base_url, transport=transport,
                                 timeout=timeout,
                                 headers={"User-Agent": "kommo-sync/0.1"}) as http:
        tokens: TokenSource
        if settings.kommo_token is not None:
            tokens = StaticToken(settings.kommo_token.value)
        elif settings.oauth is not None and pool is not None:
            tokens = OAuthTokens(pool, http, settings.kommo_base_url, settings.oauth)
        else:
            raise ConfigError("KOMMO_TOKEN", "is required (or the KOMMO_CLIENT_* OAuth set)")
        yield KommoClient(http, budget or RateBudget(redis, settings), tokens, retry=retry)


@contextlib.asynccontextmanager
async def open_kommo_client(res: Resources,
                            transport: httpx.AsyncBaseTransport | None = None,
                            ) -> AsyncIterator[KommoClient]:
    """The client for a process's :class:`~service.resources.Resources`."""
    async with kommo_client(res.settings, res.redis, res.pool, transport=transport) as client:
        yield client
