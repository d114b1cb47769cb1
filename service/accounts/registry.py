"""The registry's operations: register an account (its credential checked against Kommo),
change its state, remove it (and purge its rows), re-encrypt every stored secret.

Registering checks the credential with ``GET /api/v4/account`` through the ordinary client
and refuses, changing nothing, a credential that opens another account than the one named, an
account already registered, and the environment's own account. The account gets its own
webhook secret (printed once as the webhook URL; stored as a digest for routing and sealed for
``accounts webhook-url``). Every credential is sealed with ``SECRETS_KEY``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import httpx
from redis.asyncio import Redis

from service.accounts.lifetime import token_expiry
from service.accounts.secrets import SecretBox, digest, new_secret, require_box
from service.kommo.budget import Priority
from service.kommo.client import kommo_client
from service.kommo.errors import KommoUnavailable
from service.kommo.oauth import TokenGrant
from service.kommo.tokens import StaticToken
from service.settings import IntegrationSettings, Secret, Settings
from service.store import Conn
from service.store import accounts as store
from service.store.accounts import Account, NewAccount, Sealed

log = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT = 6.0
PURGE_BATCH = 5000
_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class AccountError(Exception):
    """A registry operation was refused: the message is one line, names no secret, and
    nothing was changed."""


@dataclasses.dataclass(frozen=True, repr=False)
class Credential:
    """What opens an account: a long-lived ``token``, or an OAuth ``grant`` (from a code
    exchange) of ``client`` (None: the deployment's integration)."""

    token: Secret | None = None
    grant: TokenGrant | None = None
    client: IntegrationSettings | None = None

    def __repr__(self) -> str:
        return f"Credential({'token' if self.token else 'oauth'}, <hidden>)"

    @property
    def access_token(self) -> str:
        if self.token is not None:
            return self.token.value
        assert self.grant is not None
        return self.grant.access_token


@dataclasses.dataclass(frozen=True)
class Registered:
    """A registered account and its webhook secret (to print once, never to log)."""

    account: Account
    webhook_secret: Secret


def subdomain_of(text: str) -> str:
    """A bare Kommo subdomain, lower-cased, or :class:`AccountError`."""
    sub = text.strip().lower()
    if not _SUBDOMAIN.match(sub):
        raise AccountError(f"not a bare subdomain: {sub[:64]!r} (e.g. examplecorp)")
    return sub


def default_base_url(subdomain: str) -> str:
    return f"https://{subdomain}.kommo.com"


def webhook_url(settings: Settings, secret: str) -> str:
    """``{PUBLIC_URL}/webhooks/kommo/{secret}``, or the path alone without ``PUBLIC_URL``."""
    return f"{settings.public_url or ''}/webhooks/kommo/{secret}"


def own_account(settings: Settings, account_id: int, subdomain: str, base_url: str) -> bool:
    """Whether this is the environment's own account (``KOMMO_ACCOUNT_ID``, or the subdomain or
    base URL of ``KOMMO_SUBDOMAIN`` / ``KOMMO_BASE_URL``)."""
    return (
        account_id == settings.kommo_account_id
        or subdomain == settings.kommo_subdomain
        or base_url.rstrip("/") == settings.kommo_base_url
    )


async def opened_account(
    settings: Settings,
    redis: Redis,
    base_url: str,
    access_token: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[int, str]:
    """The account ``access_token`` opens at ``base_url``: ``(id, subdomain)``, by
    ``GET /api/v4/account`` through the ordinary client."""
    target = dataclasses.replace(settings, kommo_base_url=base_url, kommo_token=None, oauth=None)
    token = StaticToken(access_token, name="the new account's credential")
    async with kommo_client(
        target, redis, None, transport=transport, tokens=lambda _: token
    ) as kommo:
        data = await kommo.account(priority=Priority.WEBHOOK)
    subdomain = str(data.get("subdomain") or "").lower()
    if not isinstance(data.get("id"), int) or not _SUBDOMAIN.match(subdomain):
        raise KommoUnavailable("GET /api/v4/account: the answer lacks the id or the subdomain")
    return int(data["id"]), subdomain


async def check_free(
    conn: Conn, settings: Settings, subdomain: str, base_url: str, account_id: int | None = None
) -> None:
    """:class:`AccountError` unless an account with this subdomain, base URL (or id) could be
    registered: not the environment's own, not registered already (an uninstalled one may be
    installed again)."""
    if own_account(settings, account_id or 0, subdomain, base_url):
        raise AccountError(f"{subdomain} is the environment's own account (KOMMO_SUBDOMAIN)")
    taken = await store.clashing(conn, account_id or 0, subdomain, base_url)
    if taken is not None and taken.state != "uninstalled":
        raise AccountError(f"account {taken.id} ({taken.subdomain}) is already registered")


async def add(
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    *,
    subdomain: str,
    base_url: str,
    credential: Credential,
    account_id: int | None = None,
    rate_limit: float = DEFAULT_RATE_LIMIT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Registered:
    """Register the account ``subdomain`` at ``base_url`` after checking that ``credential``
    opens it (and, given ``account_id``, that account id): nothing is written otherwise."""
    require_box(settings)
    async with pool.acquire() as conn:
        await check_free(conn, settings, subdomain, base_url, account_id)
    found, opened = await opened_account(
        settings, redis, base_url, credential.access_token, transport=transport
    )
    if opened != subdomain or account_id not in (None, found):
        wanted = f"{account_id} ({subdomain})" if account_id else subdomain
        raise AccountError(
            f"the credential opens account {found} ({opened}), not {wanted}; nothing was registered"
        )
    return await register(
        pool,
        settings,
        account_id=found,
        subdomain=subdomain,
        base_url=base_url,
        credential=credential,
        rate_limit=rate_limit,
    )


async def register(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    account_id: int,
    subdomain: str,
    base_url: str,
    credential: Credential,
    rate_limit: float = DEFAULT_RATE_LIMIT,
) -> Registered:
    """Register an account whose credential was checked (:func:`opened_account`). An account
    that Kommo uninstalled gets its new credential and is enabled again."""
    box = require_box(settings)
    if own_account(settings, account_id, subdomain, base_url):
        raise AccountError(
            f"account {account_id} ({subdomain}) is the environment's own (KOMMO_SUBDOMAIN)"
        )
    secret = new_secret()
    new = _new_account(box, account_id, subdomain, base_url, credential, rate_limit, secret)
    async with pool.acquire() as conn, conn.transaction():
        taken = await store.clashing(conn, account_id, subdomain, base_url)
        if taken is not None and taken.id == account_id and taken.state == "uninstalled":
            account = await store.reinstall(conn, new)
            assert account is not None  # the row is locked by nobody else's delete here
            log.warning("account %d (%s) installed again", account_id, subdomain)
            return Registered(account, Secret(box.reveal(account.sealed.webhook_secret)))
        if taken is not None:
            raise AccountError(f"account {taken.id} ({taken.subdomain}) is already registered")
        try:
            account = await store.insert(conn, new)
        except asyncpg.UniqueViolationError:
            raise AccountError(
                f"account {account_id} ({subdomain}) is already registered"
            ) from None
    log.info("account %d (%s) registered at %s", account.id, account.subdomain, base_url)
    return Registered(account, Secret(secret))


def _new_account(
    box: SecretBox,
    account_id: int,
    subdomain: str,
    base_url: str,
    credential: Credential,
    rate_limit: float,
    secret: str,
) -> NewAccount:
    base = NewAccount(
        id=account_id,
        subdomain=subdomain,
        base_url=base_url.rstrip("/"),
        rate_limit=rate_limit,
        auth="token",
        webhook_secret_hash=digest(secret),
        sealed=Sealed(webhook_secret=box.seal(secret)),
    )
    if credential.token is not None:
        token = credential.token.value
        return dataclasses.replace(
            base,
            token_expires_at=token_expiry(token),
            sealed=dataclasses.replace(base.sealed, token=box.seal(token)),
        )
    grant, client = credential.grant, credential.client
    assert grant is not None
    expires = datetime.now(UTC).timestamp() + grant.expires_in
    return dataclasses.replace(
        base,
        auth="oauth",
        access_expires_at=datetime.fromtimestamp(expires, UTC),
        oauth_client_id=client.client_id if client else None,
        oauth_redirect_uri=client.redirect_uri if client else None,
        sealed=dataclasses.replace(
            base.sealed,
            access_token=box.seal(grant.access_token),
            refresh_token=box.seal(grant.refresh_token),
            oauth_client_secret=box.seal(client.client_secret.value) if client else None,
        ),
    )


async def account_named(conn: Conn, name: str) -> Account:
    """The registered account with this subdomain (or id), or :class:`AccountError`."""
    key: str | int = int(name) if name.strip().isdigit() else name.strip()
    account = await store.get(conn, key)
    if account is None:
        raise AccountError(f"no registered account {name.strip()[:64]!r}")
    return account


async def set_state(
    conn: Conn, name: str, state: Literal["enabled", "disabled"], reason: str | None
) -> Account:
    """Enable or disable a registered account (an uninstalled one is installed again instead)."""
    account = await account_named(conn, name)
    if state == "enabled" and account.state == "uninstalled":
        raise AccountError(
            f"account {account.subdomain} was uninstalled in Kommo: install it again "
            "(kommo-sync accounts add, or the install link)"
        )
    await store.set_state(conn, account.id, state, reason)
    log.info("account %d (%s) %s", account.id, account.subdomain, state)
    return await account_named(conn, str(account.id))


async def remove(
    pool: asyncpg.Pool,
    name: str,
    *,
    purge: bool,
    batch: int = PURGE_BATCH,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Unregister an account; with ``purge``, first delete its rows from every table with an
    ``account_id`` column, ``batch`` rows per transaction (resumable: the account is disabled
    first, and its row goes last). Returns the rows deleted per table."""
    async with pool.acquire() as conn:
        account = await account_named(conn, name)
        removed: dict[str, int] = {}
        if purge:
            await store.set_state(conn, account.id, "disabled", "being removed")
            for table in await store.tables_with_account_id(conn):
                removed[table] = 0
                while deleted := await store.delete_account_rows(conn, table, account.id, batch):
                    removed[table] += deleted
                    if progress is not None:
                        progress(table, removed[table])
        await store.delete(conn, account.id)
    log.info(
        "account %d (%s) removed%s",
        account.id,
        account.subdomain,
        f", {sum(removed.values())} mirrored rows purged" if purge else "; its rows stay",
    )
    return removed


async def rekey(pool: asyncpg.Pool, box: SecretBox) -> tuple[int, int]:
    """Re-encrypt every stored secret with the first key of ``SECRETS_KEY`` (and seal the
    environment's OAuth pair if it was stored in clear), in one transaction. Returns the
    accounts and ``oauth_tokens`` rows rewritten."""

    def again(value: str | None) -> str | None:
        return None if value is None else box.reseal(value)

    async with pool.acquire() as conn, conn.transaction():
        rows = [
            (
                account_id,
                Sealed(
                    webhook_secret=box.reseal(s.webhook_secret),
                    token=again(s.token),
                    oauth_client_secret=again(s.oauth_client_secret),
                    access_token=again(s.access_token),
                    refresh_token=again(s.refresh_token),
                ),
            )
            for account_id, s in await store.sealed_rows(conn)
        ]
        await store.write_sealed(conn, rows)
        pairs = [
            (base, box.reseal(access), box.reseal(refresh))
            for base, access, refresh in await store.oauth_token_rows(conn)
        ]
        await store.write_oauth_token_rows(conn, pairs)
    log.info("rekey: %d account(s), %d stored OAuth pair(s) re-encrypted", len(rows), len(pairs))
    return len(rows), len(pairs)


async def require_key_if_registered(conn: Conn, settings: Settings) -> None:
    """A process's start-up check: ``SECRETS_KEY`` is set once any account is registered."""
    if settings.secrets_key is None and await store.count(conn) > 0:
        require_box(settings)
