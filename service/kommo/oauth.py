"""The OAuth 2.0 token pair, kept in Postgres (``oauth_tokens``) and refreshed under a lock.

Kommo's refresh tokens are single-use and rotate: two processes refreshing at once would revoke
each other. So a refresh happens only inside a transaction that holds a Postgres advisory lock
for the base URL; after taking the lock the row is read again, and if another process has
refreshed meanwhile its pair is used instead. The new pair is committed before it is used.

On the first run there is no row: ``KOMMO_AUTH_CODE`` is exchanged (``authorization_code``
grant) or ``KOMMO_REFRESH_TOKEN`` is used. A refused exchange or refresh raises
:class:`~service.errors.KommoAuthError` once, with one clear line, and this process then stops
asking (no retry loop) until it is restarted with a new credential.

With ``SECRETS_KEY`` set the two token columns are encrypted at rest: the client passes a
:class:`TokenCipher` (:func:`service.accounts.secrets.cipher_for`). A row written before the key
was set is read as it is and encrypted at its next write. :func:`request_tokens` is the one
token request (also used to install and refresh registered accounts, :mod:`service.accounts`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import httpx

from service.kommo.errors import KommoAuthError, KommoRateLimited, KommoUnavailable, json_body
from service.settings import OAuthSettings

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/access_token"
_LOCK_CLASS = 0x6F61  # "oa": advisory-lock namespace; the object is hashtext(base_url)


class TokenCipher(Protocol):
    """How the stored pair is kept at rest: ``seal`` what is written, ``reveal`` what is read
    (a value stored before encryption was configured is revealed as it is)."""

    def seal(self, plain: str) -> str: ...
    def reveal(self, stored: str) -> str: ...


@dataclasses.dataclass(frozen=True, repr=False)
class TokenGrant:
    """A token endpoint's answer: the new pair and how long the access token lives."""

    access_token: str
    refresh_token: str
    expires_in: float

    def __repr__(self) -> str:
        return f"TokenGrant(<hidden>, expires_in={self.expires_in:g})"


async def request_tokens(
    http: httpx.AsyncClient, body: dict[str, Any], what: str, *, url: str = TOKEN_PATH
) -> TokenGrant:
    """POST the token endpoint (``url``: a path below ``http``'s base URL, or absolute).

    Raises :class:`KommoAuthError` when Kommo refuses (4xx; the message names ``what`` and
    Kommo's hint, never a secret), :class:`KommoUnavailable` (or :class:`KommoRateLimited`)
    when it cannot answer now.
    """
    try:
        resp = await http.post(url, json=body)
    except httpx.TransportError as exc:
        raise KommoUnavailable(f"Kommo OAuth {what} failed: {type(exc).__name__}") from None
    if resp.status_code == 429:
        raise KommoRateLimited(f"Kommo OAuth {what}: HTTP 429", retry_after=5.0)
    if resp.status_code >= 500:
        raise KommoUnavailable(
            f"Kommo OAuth {what}: HTTP {resp.status_code}", status=resp.status_code
        )
    data = json_body(resp)
    if resp.status_code >= 400:
        hint = str(data.get("hint") or data.get("title") or "refused")[:120]
        raise KommoAuthError(
            f"Kommo refused the {what} (HTTP {resp.status_code}: {hint})",
            status=resp.status_code,
        )
    try:
        return TokenGrant(
            str(data["access_token"]), str(data["refresh_token"]), float(data["expires_in"])
        )
    except (KeyError, TypeError, ValueError):
        raise KommoUnavailable(f"Kommo OAuth {what}: malformed token response") from None


class OAuthTokens:
    """Hands out a valid access token; refreshes ahead of expiry and after a 401."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        base_url: str,
        oauth: OAuthSettings,
        *,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.time,
        cipher: TokenCipher | None = None,
    ) -> None:
        self._pool, self._http, self._base, self._oauth = pool, http, base_url, oauth
        self._margin, self._clock, self._cipher = refresh_margin, clock, cipher
        self._access: str | None = None
        self._expires_at = 0.0
        self._refused: KommoAuthError | None = None
        self.refresh_calls = 0  # token endpoint calls made by this process (metrics, tests)

    async def access_token(self) -> str:
        """A token valid for at least ``refresh_margin`` seconds (refreshing if needed)."""
        if self._access is not None and self._expires_at - self._clock() > self._margin:
            return self._access
        return await self._renew(rejected=None)

    async def refresh(self, rejected: str) -> str:
        """After Kommo answered 401 to ``rejected``: a new token, or another process's."""
        return await self._renew(rejected=rejected)

    async def _renew(self, rejected: str | None) -> str:
        if self._refused is not None:
            raise self._refused
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, self._base
            )
            row = await conn.fetchrow(
                "SELECT access_token, refresh_token, extract(epoch FROM expires_at) AS exp"
                " FROM oauth_tokens WHERE base_url = $1",
                self._base,
            )
            stored = None if row is None else self._reveal(row)
            if (
                row is not None
                and stored is not None
                and stored[0] != rejected
                and float(row["exp"]) - self._clock() > self._margin
            ):
                access, expires_at = stored[0], float(row["exp"])
            else:
                access, refresh, expires_at = await self._grant(stored)
                await conn.execute(
                    """INSERT INTO oauth_tokens (base_url, access_token, refresh_token, expires_at)
                       VALUES ($1, $2, $3, $4)
                       ON CONFLICT (base_url) DO UPDATE SET access_token = EXCLUDED.access_token,
                           refresh_token = EXCLUDED.refresh_token,
                           expires_at = EXCLUDED.expires_at, updated_at = now()""",
                    self._base,
                    self._seal(access),
                    self._seal(refresh),
                    datetime.fromtimestamp(expires_at, UTC),
                )
        # committed: only now may the new pair be used
        self._access, self._expires_at = access, expires_at
        return access

    def _reveal(self, row: asyncpg.Record) -> tuple[str, str]:
        access, refresh = str(row["access_token"]), str(row["refresh_token"])
        if self._cipher is None:
            return access, refresh
        return self._cipher.reveal(access), self._cipher.reveal(refresh)

    def _seal(self, plain: str) -> str:
        return plain if self._cipher is None else self._cipher.seal(plain)

    async def _grant(self, stored: tuple[str, str] | None) -> tuple[str, str, float]:
        o = self._oauth
        body: dict[str, str] = {
            "client_id": o.client_id,
            "client_secret": o.client_secret.value,
            "redirect_uri": o.redirect_uri,
        }
        if stored is not None:
            body |= {"grant_type": "refresh_token", "refresh_token": stored[1]}
            what = "refresh of the stored OAuth token"
        elif o.auth_code is not None:
            body |= {"grant_type": "authorization_code", "code": o.auth_code.value}
            what = "exchange of KOMMO_AUTH_CODE"
        else:
            assert o.refresh_token is not None  # settings guarantee one of the two
            body |= {"grant_type": "refresh_token", "refresh_token": o.refresh_token.value}
            what = "refresh with KOMMO_REFRESH_TOKEN"
        self.refresh_calls += 1
        try:
            grant = await request_tokens(self._http, body, what)
        except KommoAuthError as exc:
            self._refused = KommoAuthError(
                f"{exc}; syncing stops until a new KOMMO_AUTH_CODE or KOMMO_REFRESH_TOKEN is "
                "configured",
                status=exc.status,
            )
            log.error("%s", self._refused)
            raise self._refused from None
        return grant.access_token, grant.refresh_token, self._clock() + grant.expires_in
