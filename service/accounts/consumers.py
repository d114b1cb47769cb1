"""Consumer tokens and what they may see: every account, some accounts, or nothing.

A ``WS_TOKENS`` token sees every account (compared in constant time against each configured
token, as :mod:`service.web.auth` does). ``kommo-sync accounts token S`` issues a token that
sees only account S (or several): it is printed once, and only its SHA-256 digest is stored
(``consumer_tokens``), so it is found by looking its digest up. An account may have several.

``/ws``, ``/api/leads`` and the hub ask :func:`scope_of`; a socket or request whose scope does
not include an account never sees that account's messages or leads.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable
from typing import Final, TypeAlias

import asyncpg

from service.accounts.secrets import digest, new_secret
from service.settings import Settings
from service.store import accounts as store

TOKEN_PREFIX: Final = "kst_"  # "kommo-sync token": tells an issued token from a WS_TOKENS one


class AllAccounts(enum.Enum):
    """The scope of a ``WS_TOKENS`` token."""

    ALL = "all"

    def __repr__(self) -> str:
        return "ALL_ACCOUNTS"


ALL_ACCOUNTS: Final = AllAccounts.ALL
Scope: TypeAlias = AllAccounts | frozenset[int]


def may_see(scope: Scope, account_id: int) -> bool:
    """Whether a consumer of ``scope`` may see account ``account_id``."""
    return scope is ALL_ACCOUNTS or (isinstance(scope, frozenset) and account_id in scope)


def configured(settings: Settings, presented: str) -> bool:
    """Whether ``presented`` is one of ``WS_TOKENS`` (every one compared: constant time)."""
    given = presented.encode()
    found = False
    for known in settings.ws_tokens:
        found |= hmac.compare_digest(given, known.encode())
    return found


async def scope_of(pool: asyncpg.Pool, settings: Settings, presented: str | None) -> Scope | None:
    """What the consumer presenting ``presented`` may see: :data:`ALL_ACCOUNTS` (a
    ``WS_TOKENS`` token), the accounts an issued token is scoped to, or None (not authorized:
    no token, an unknown one, or one whose accounts were all removed)."""
    if not presented:
        return None
    if configured(settings, presented):
        return ALL_ACCOUNTS
    async with pool.acquire() as conn:
        accounts = await store.token_accounts(conn, digest(presented))
    return accounts or None


async def issue(pool: asyncpg.Pool, account_ids: Iterable[int]) -> str:
    """A new consumer token scoped to ``account_ids`` (registered accounts); only its digest is
    stored, so the caller prints it once."""
    ids = sorted(set(account_ids))
    if not ids:
        raise ValueError("a consumer token needs at least one account")
    token = new_secret(TOKEN_PREFIX)
    async with pool.acquire() as conn:
        await store.add_consumer_token(conn, digest(token), ids)
    return token
