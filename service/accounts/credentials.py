"""A registered account's credential: its token source and a Kommo client that uses it.

A long-lived token is a :class:`~service.kommo.tokens.StaticToken`. An OAuth pair is
:class:`AccountOAuth`: kept sealed in the account's row and refreshed the way the environment's
pair is (:mod:`service.kommo.oauth`), under a lock (here the row's own ``FOR UPDATE``), the new
pair committed before it is used. It refreshes with the account's own integration when it has
one, else with the deployment's (``KOMMO_CLIENT_ID``, ``KOMMO_CLIENT_SECRET``,
``KOMMO_REDIRECT_URI``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
from redis.asyncio import Redis

from service.accounts.secrets import SecretBox
from service.kommo.budget import RateBudget
from service.kommo.client import KommoClient, kommo_client
from service.kommo.errors import KommoAuthError
from service.kommo.oauth import request_tokens
from service.kommo.tokens import StaticToken, TokenSource
from service.settings import ConfigError, IntegrationSettings, Secret, Settings
from service.store import accounts as store
from service.store.accounts import Account

log = logging.getLogger(__name__)


def integration_of(account: Account, settings: Settings, box: SecretBox) -> IntegrationSettings:
    """The OAuth client an account's pair belongs to."""
    if account.oauth_client_id is not None:
        assert account.sealed.oauth_client_secret is not None  # the table's CHECK
        return IntegrationSettings(
            account.oauth_client_id,
            Secret(box.reveal(account.sealed.oauth_client_secret)),
            account.oauth_redirect_uri or "",
        )
    if settings.integration is None:
        raise ConfigError(
            "KOMMO_CLIENT_ID",
            f"is required: account {account.subdomain} was installed by the public integration",
        )
    return settings.integration


class AccountOAuth:
    """Hands out a registered account's access token; refreshes ahead of expiry and after a
    401, under the row's lock, committing the new pair before using it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        account: Account,
        settings: Settings,
        box: SecretBox,
        *,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool, self._http, self._settings, self._box = pool, http, settings, box
        self._id, self._name = account.id, account.subdomain
        self._margin, self._clock = refresh_margin, clock
        self._access: str | None = None
        self._expires_at = 0.0
        self._refused: KommoAuthError | None = None
        self.refresh_calls = 0

    def __repr__(self) -> str:
        return f"AccountOAuth(account={self._id})"

    async def access_token(self) -> str:
        if self._access is not None and self._expires_at - self._clock() > self._margin:
            return self._access
        return await self._renew(rejected=None)

    async def refresh(self, rejected: str) -> str:
        return await self._renew(rejected=rejected)

    async def _renew(self, rejected: str | None) -> str:
        if self._refused is not None:
            raise self._refused
        async with self._pool.acquire() as conn, conn.transaction():
            account = await store.get(conn, self._id, for_update=True)
            if account is None or account.sealed.access_token is None:
                raise KommoAuthError(f"account {self._name} has no OAuth pair registered")
            assert account.sealed.refresh_token and account.access_expires_at
            access = self._box.reveal(account.sealed.access_token)
            expires_at = account.access_expires_at.timestamp()
            if access == rejected or expires_at - self._clock() <= self._margin:
                access, refresh, expires_at = await self._grant(
                    account, self._box.reveal(account.sealed.refresh_token)
                )
                await store.set_oauth_pair(
                    conn,
                    self._id,
                    self._box.seal(access),
                    self._box.seal(refresh),
                    datetime.fromtimestamp(expires_at, UTC),
                )
        self._access, self._expires_at = access, expires_at  # committed: now it may be used
        return access

    async def _grant(self, account: Account, refresh: str) -> tuple[str, str, float]:
        client = integration_of(account, self._settings, self._box)
        body = {
            "client_id": client.client_id,
            "client_secret": client.client_secret.value,
            "redirect_uri": client.redirect_uri,
            "grant_type": "refresh_token",
            "refresh_token": refresh,
        }
        self.refresh_calls += 1
        try:
            grant = await request_tokens(self._http, body, f"refresh of account {self._name}")
        except KommoAuthError as exc:
            self._refused = KommoAuthError(
                f"{exc}; account {self._name} stops syncing until it is installed again",
                status=exc.status,
            )
            log.error("%s", self._refused)
            raise self._refused from None
        return grant.access_token, grant.refresh_token, self._clock() + grant.expires_in


def token_source(
    account: Account,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    settings: Settings,
    box: SecretBox,
) -> TokenSource:
    """The account's credential, for a client whose base URL is the account's."""
    if account.auth == "token":
        assert account.sealed.token is not None  # the table's CHECK
        return StaticToken(
            box.reveal(account.sealed.token), name=f"the token of account {account.subdomain}"
        )
    return AccountOAuth(pool, http, account, settings, box)


def account_settings(settings: Settings, account: Account) -> Settings:
    """The deployment's settings pointed at one registered account (its base URL, id, rate
    limit), without the environment account's credential."""
    return dataclasses.replace(
        settings,
        kommo_base_url=account.base_url,
        kommo_subdomain=account.subdomain,
        kommo_account_id=account.id,
        kommo_token=None,
        oauth=None,
        rate_limit=account.rate_limit,
    )


@contextlib.asynccontextmanager
async def account_client(
    settings: Settings,
    account: Account,
    box: SecretBox,
    redis: Redis,
    pool: asyncpg.Pool,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    budget: RateBudget | None = None,
) -> AsyncIterator[KommoClient]:
    """A Kommo client of a registered account. ``budget``: the account's own (the default is
    the deployment's shared budget at the account's rate)."""
    async with kommo_client(
        account_settings(settings, account),
        redis,
        pool,
        transport=transport,
        budget=budget,
        tokens=lambda http: token_source(account, pool, http, settings, box),
    ) as client:
        yield client
