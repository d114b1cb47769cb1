"""One request to Kommo: through the shared budget, with the credential, judged by status code.

Status handling, decided by status code only (never by body text):

==========  ================================================================================
2xx         the JSON body; 204 (empty list, unknown id) is ``None`` / the end of the pages
401         OAuth: refresh once (under the lock) and retry once; long-lived token: never.
            Then :class:`KommoAuthError`
402         :class:`KommoPaymentRequired`; every process pauses (the breaker, ten minutes)
403         a rights 403 (scope, admin-only list) is :class:`KommoBadRequest`; a block trips
            the deployment-wide breaker, :class:`KommoBlocked`; never retried
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
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from service.kommo.budget import Priority, RateBudget, Sleep
from service.kommo.errors import (
    KommoAuthError,
    KommoBadRequest,
    KommoBlocked,
    KommoPaymentRequired,
    KommoRateLimited,
    KommoRejected,
    KommoUnavailable,
    detail,
    json_body,
)
from service.kommo.tokens import TokenSource

log = logging.getLogger(__name__)

CALLS = Counter(
    "kommo_calls_total", "Kommo API calls by endpoint and status", ["endpoint", "status"]
)
RATE_LIMITED = Counter("kommo_429_total", "Kommo API answers with HTTP 429")

Scalar = str | int | float | bool | None
Params = httpx.QueryParams | Mapping[str, Scalar | Sequence[Scalar]]
JSON = dict[str, Any]
_ID = re.compile(r"/\d+(?=/|$)")


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


class _Retry(Exception):
    """Internal: the answer says to send the same request again."""


class Wire:
    """The HTTP exchange with Kommo: every call waits for the budget at the caller's priority."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        budget: RateBudget,
        tokens: TokenSource,
        *,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Sleep | None = None,
    ) -> None:
        self.http, self.budget, self.tokens, self.retry = http, budget, tokens, retry
        self._sleep = sleep or budget.sleep

    @contextlib.asynccontextmanager
    async def admitted(self, priority: Priority) -> AsyncIterator[None]:
        """Wait for a budget slot first; the task's next call at ``priority`` spends it."""
        await self.budget.acquire(priority)
        token = _ADMITTED.set(priority)
        try:
            yield
        finally:
            _ADMITTED.reset(token)

    async def call(
        self,
        method: str,
        path: str,
        priority: Priority,
        *,
        params: Params | None = None,
        json: Any = None,
    ) -> JSON | None:
        attempt = _Attempt(method, endpoint_of(path))
        while True:
            if _ADMITTED.get() == priority:
                _ADMITTED.set(None)  # spend the slot taken by admitted()
            else:
                await self.budget.acquire(priority)
            token = await self.tokens.access_token()
            try:
                resp = await self.http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:
                CALLS.labels(attempt.endpoint, "error").inc()
                await self._unavailable(attempt, f"{type(exc).__name__}")
                continue
            CALLS.labels(attempt.endpoint, str(resp.status_code)).inc()
            if resp.status_code < 300:
                return None if resp.status_code == 204 or not resp.content else _object(resp)
            with contextlib.suppress(_Retry):
                await self._refused(attempt, resp, token)

    async def _refused(self, attempt: _Attempt, resp: httpx.Response, token: str) -> None:
        """Judge an error answer: raise, or raise :class:`_Retry` after waiting as it says."""
        status, retry = resp.status_code, self.retry
        log.warning(
            "kommo %s %s -> HTTP %d (attempt %d)",
            attempt.method,
            attempt.endpoint,
            status,
            attempt.number,
        )
        what = f"{attempt.method} {attempt.endpoint}: HTTP {status}"
        if status == 401:
            if attempt.refreshed:
                raise KommoAuthError(f"{what} after a token refresh", status=401)
            await self.tokens.refresh(token)
            attempt.refreshed = True
            raise _Retry
        if status == 402:  # the account's subscription ended: pause everyone, loudly
            await self.budget.trip_breaker(
                retry.unpaid_seconds, f"{what}: payment required", kind="unpaid"
            )
            raise KommoPaymentRequired(f"{what}: payment required", status=402)
        if status == 403:
            raise await self._forbidden(attempt, resp, what)
        if status == 429:
            RATE_LIMITED.inc()
            attempt.rate_limited += 1
            wait = _retry_after(resp, retry.default_retry_after)
            await self.budget.penalize(wait)
            if attempt.rate_limited >= retry.rate_limited_attempts:
                raise KommoRateLimited(f"{what} {attempt.rate_limited} times", retry_after=wait)
            raise _Retry
        if status >= 500:
            await self._unavailable(attempt, f"HTTP {status}", status)
            raise _Retry
        raise KommoBadRequest(f"{what} ({detail(resp)})", status=status)

    async def _forbidden(self, attempt: _Attempt, resp: httpx.Response, what: str) -> KommoRejected:
        if _missing_rights(attempt.endpoint, resp):
            return KommoBadRequest(
                f"{what}: the token lacks the rights ({detail(resp)})", status=403
            )
        reason = f"{what} ({detail(resp)})"
        info = await self.budget.trip_breaker(self.retry.breaker_seconds, reason)
        return KommoBlocked(f"{what}: Kommo blocked the API; calls stop", until=info.until)

    async def _unavailable(self, attempt: _Attempt, why: str, status: int | None = None) -> None:
        """A 5xx or an I/O error: back off and retry a GET, else :class:`KommoUnavailable`."""
        attempt.failures += 1
        log.warning(
            "kommo %s %s failed: %s (attempt %d)",
            attempt.method,
            attempt.endpoint,
            why,
            attempt.failures,
        )
        if attempt.method != "GET" or attempt.failures >= self.retry.attempts:
            raise KommoUnavailable(
                f"{attempt.method} {attempt.endpoint}: {why} after {attempt.failures} attempt(s)",
                status=status,
            )
        await self._sleep(self.retry.backoff(attempt.failures - 1))


@dataclasses.dataclass
class _Attempt:
    method: str
    endpoint: str
    failures: int = 0
    rate_limited: int = 0
    refreshed: bool = False

    @property
    def number(self) -> int:
        return self.failures + self.rate_limited + 1


def _missing_rights(endpoint: str, resp: httpx.Response) -> bool:
    """A 403 that is about rights (a scope, the admin-only users list), not an API block."""
    if "json" not in resp.headers.get("content-type", ""):
        return False  # the block is nginx's HTML page
    text = detail(resp).lower()
    return endpoint == "/api/v4/users" or "scope" in text or "rights" in text


def _object(resp: httpx.Response) -> JSON:
    try:
        data = resp.json()
    except ValueError:
        raise KommoUnavailable(f"HTTP {resp.status_code}: body is not JSON") from None
    if not isinstance(data, dict):
        raise KommoUnavailable(f"HTTP {resp.status_code}: body is not a JSON object")
    return data


def _retry_after(resp: httpx.Response, default: float) -> float:
    value = json_body(resp).get("retry_after", resp.headers.get("retry-after"))
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if 0 < seconds <= 3600 else default
