"""The registry of accounts (``accounts``) and the consumer tokens scoped to them
(``consumer_tokens``): SQL only. Values named ``*_sealed`` are what :mod:`service.accounts.
secrets` made of a secret; this module never sees one in clear."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final, Literal

import asyncpg

from service.store import Conn

State = Literal["enabled", "disabled", "uninstalled"]
STATES: Final = ("enabled", "disabled", "uninstalled")


@dataclasses.dataclass(frozen=True, repr=False)
class Sealed:
    """An account's sealed secrets (never shown by ``repr``)."""

    webhook_secret: str
    token: str | None = None
    oauth_client_secret: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None

    def __repr__(self) -> str:
        return "Sealed(<hidden>)"


@dataclasses.dataclass(frozen=True)
class Account:
    """One registered account, as its row says."""

    id: int
    subdomain: str
    base_url: str
    state: State
    state_reason: str | None
    state_changed_at: datetime
    rate_limit: float
    auth: Literal["token", "oauth"]
    token_expires_at: datetime | None
    oauth_client_id: str | None  # None: the deployment's integration (KOMMO_CLIENT_ID)
    oauth_redirect_uri: str | None
    access_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sealed: Sealed

    @property
    def enabled(self) -> bool:
        return self.state == "enabled"


@dataclasses.dataclass(frozen=True)
class NewAccount:
    """What registering an account writes."""

    id: int
    subdomain: str
    base_url: str
    rate_limit: float
    auth: Literal["token", "oauth"]
    webhook_secret_hash: str
    sealed: Sealed
    token_expires_at: datetime | None = None
    oauth_client_id: str | None = None
    oauth_redirect_uri: str | None = None
    access_expires_at: datetime | None = None


_COLUMNS = """id, subdomain, base_url, state, state_reason, state_changed_at, rate_limit, auth,
    token_expires_at, oauth_client_id, oauth_redirect_uri, access_expires_at, created_at,
    updated_at, webhook_secret_sealed, token_sealed, oauth_client_secret_sealed,
    access_token_sealed, refresh_token_sealed"""


def _account(row: asyncpg.Record) -> Account:
    return Account(
        id=int(row["id"]),
        subdomain=row["subdomain"],
        base_url=row["base_url"],
        state=row["state"],
        state_reason=row["state_reason"],
        state_changed_at=row["state_changed_at"],
        rate_limit=float(row["rate_limit"]),
        auth=row["auth"],
        token_expires_at=row["token_expires_at"],
        oauth_client_id=row["oauth_client_id"],
        oauth_redirect_uri=row["oauth_redirect_uri"],
        access_expires_at=row["access_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sealed=Sealed(
            webhook_secret=row["webhook_secret_sealed"],
            token=row["token_sealed"],
            oauth_client_secret=row["oauth_client_secret_sealed"],
            access_token=row["access_token_sealed"],
            refresh_token=row["refresh_token_sealed"],
        ),
    )


async def insert(conn: Conn, new: NewAccount) -> Account:
    """Register ``new``; raises ``asyncpg.UniqueViolationError`` when its id, subdomain, base
    URL or webhook secret is taken."""
    s = new.sealed
    row = await conn.fetchrow(
        f"""INSERT INTO accounts (id, subdomain, base_url, rate_limit, auth, token_sealed,
               token_expires_at, oauth_client_id, oauth_client_secret_sealed, oauth_redirect_uri,
               access_token_sealed, refresh_token_sealed, access_expires_at,
               webhook_secret_hash, webhook_secret_sealed)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           RETURNING {_COLUMNS}""",
        new.id,
        new.subdomain,
        new.base_url,
        new.rate_limit,
        new.auth,
        s.token,
        new.token_expires_at,
        new.oauth_client_id,
        s.oauth_client_secret,
        new.oauth_redirect_uri,
        s.access_token,
        s.refresh_token,
        new.access_expires_at,
        new.webhook_secret_hash,
        s.webhook_secret,
    )
    assert row is not None
    return _account(row)


async def reinstall(conn: Conn, new: NewAccount) -> Account | None:
    """Give the uninstalled account ``new.id`` its new credential and enable it (its webhook
    secret stays); None when there is no such uninstalled account."""
    s = new.sealed
    row = await conn.fetchrow(
        f"""UPDATE accounts SET auth = $2, token_sealed = $3, token_expires_at = $4,
               oauth_client_id = $5, oauth_client_secret_sealed = $6, oauth_redirect_uri = $7,
               access_token_sealed = $8, refresh_token_sealed = $9, access_expires_at = $10,
               state = 'enabled', state_reason = 'installed again', state_changed_at = now(),
               updated_at = now()
           WHERE id = $1 AND state = 'uninstalled'
           RETURNING {_COLUMNS}""",
        new.id,
        new.auth,
        s.token,
        new.token_expires_at,
        new.oauth_client_id,
        s.oauth_client_secret,
        new.oauth_redirect_uri,
        s.access_token,
        s.refresh_token,
        new.access_expires_at,
    )
    return None if row is None else _account(row)


async def get(conn: Conn, key: str | int, *, for_update: bool = False) -> Account | None:
    """The account with this subdomain (any case) or id."""
    lock = " FOR UPDATE" if for_update else ""
    where = "id = $1" if isinstance(key, int) else "subdomain = lower($1)"
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE {where}{lock}", key)
    return None if row is None else _account(row)


async def clashing(conn: Conn, account_id: int, subdomain: str, base_url: str) -> Account | None:
    """A registered account with this id, subdomain or base URL."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM accounts
            WHERE id = $1 OR subdomain = lower($2) OR base_url = $3 LIMIT 1""",
        account_id,
        subdomain,
        base_url,
    )
    return None if row is None else _account(row)


async def all_accounts(conn: Conn, *, state: State | None = None) -> list[Account]:
    """Every registered account (or those in ``state``), by id."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM accounts WHERE $1::text IS NULL OR state = $1 ORDER BY id",
        state,
    )
    return [_account(r) for r in rows]


async def count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM accounts"))


async def by_webhook_hash(conn: Conn, secret_hash: str) -> Account | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM accounts WHERE webhook_secret_hash = $1", secret_hash
    )
    return None if row is None else _account(row)


async def webhook_routes(conn: Conn) -> dict[str, int]:
    """Webhook secret digest → account id, for the enabled accounts (a router's table)."""
    rows = await conn.fetch("SELECT webhook_secret_hash, id FROM accounts WHERE state = 'enabled'")
    return {r["webhook_secret_hash"]: int(r["id"]) for r in rows}


async def set_state(conn: Conn, account_id: int, state: State, reason: str | None) -> bool:
    """Move the account to ``state`` (the time moves only when the state changes); False when
    there is no such account."""
    done = await conn.execute(
        """UPDATE accounts SET state = $2, state_reason = $3, updated_at = now(),
               state_changed_at = CASE WHEN state = $2 THEN state_changed_at ELSE now() END
           WHERE id = $1""",
        account_id,
        state,
        reason,
    )
    return done != "UPDATE 0"


async def set_rate_limit(conn: Conn, account_id: int, rate_limit: float) -> bool:
    done = await conn.execute(
        "UPDATE accounts SET rate_limit = $2, updated_at = now() WHERE id = $1",
        account_id,
        rate_limit,
    )
    return done != "UPDATE 0"


async def set_oauth_pair(
    conn: Conn, account_id: int, access_sealed: str, refresh_sealed: str, expires_at: datetime
) -> None:
    await conn.execute(
        """UPDATE accounts SET access_token_sealed = $2, refresh_token_sealed = $3,
               access_expires_at = $4, updated_at = now()
           WHERE id = $1""",
        account_id,
        access_sealed,
        refresh_sealed,
        expires_at,
    )


async def delete(conn: Conn, account_id: int) -> bool:
    """Remove the account's row (and, by cascade, its consumer tokens)."""
    return await conn.execute("DELETE FROM accounts WHERE id = $1", account_id) != "DELETE 0"


# --- rekey: every sealed value, read and written back in one statement per table ------------
async def sealed_rows(conn: Conn) -> list[tuple[int, Sealed]]:
    """Every account's sealed values, rows locked until the transaction ends."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM accounts ORDER BY id FOR UPDATE")
    return [(int(r["id"]), _account(r).sealed) for r in rows]


async def write_sealed(conn: Conn, rows: Sequence[tuple[int, Sealed]]) -> None:
    await conn.execute(
        """UPDATE accounts a SET webhook_secret_sealed = u.webhook, token_sealed = u.token,
               oauth_client_secret_sealed = u.client_secret, access_token_sealed = u.access,
               refresh_token_sealed = u.refresh, updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
               AS u (id, webhook, token, client_secret, access, refresh)
           WHERE a.id = u.id""",
        [i for i, _ in rows],
        [s.webhook_secret for _, s in rows],
        [s.token for _, s in rows],
        [s.oauth_client_secret for _, s in rows],
        [s.access_token for _, s in rows],
        [s.refresh_token for _, s in rows],
    )


async def oauth_token_rows(conn: Conn) -> list[tuple[str, str, str]]:
    """The environment account's stored OAuth pairs (``oauth_tokens``), rows locked."""
    rows = await conn.fetch(
        "SELECT base_url, access_token, refresh_token FROM oauth_tokens ORDER BY 1 FOR UPDATE"
    )
    return [(r["base_url"], r["access_token"], r["refresh_token"]) for r in rows]


async def write_oauth_token_rows(conn: Conn, rows: Sequence[tuple[str, str, str]]) -> None:
    await conn.execute(
        """UPDATE oauth_tokens o SET access_token = u.access, refresh_token = u.refresh
           FROM unnest($1::text[], $2::text[], $3::text[]) AS u (base_url, access, refresh)
           WHERE o.base_url = u.base_url""",
        [b for b, _, _ in rows],
        [a for _, a, _ in rows],
        [r for _, _, r in rows],
    )


# --- consumer tokens ------------------------------------------------------------------------
async def add_consumer_token(conn: Conn, token_hash: str, account_ids: Iterable[int]) -> None:
    await conn.execute(
        """INSERT INTO consumer_tokens (token_hash, account_id)
           SELECT $1, unnest($2::bigint[])""",
        token_hash,
        sorted(set(account_ids)),
    )


async def token_accounts(conn: Conn, token_hash: str) -> frozenset[int]:
    """The accounts a consumer token with this digest may see (empty: no such token)."""
    rows = await conn.fetch(
        "SELECT account_id FROM consumer_tokens WHERE token_hash = $1", token_hash
    )
    return frozenset(int(r["account_id"]) for r in rows)


async def consumer_token_counts(conn: Conn) -> dict[int, int]:
    """Account id → how many consumer tokens may see it."""
    rows = await conn.fetch(
        "SELECT account_id, count(*) AS n FROM consumer_tokens GROUP BY account_id"
    )
    return {int(r["account_id"]): int(r["n"]) for r in rows}


# --- purge: an account's mirrored rows, table by table, in batches --------------------------
async def tables_with_account_id(conn: Conn) -> list[str]:
    """Every table of the schema with an ``account_id`` column (views aside)."""
    rows = await conn.fetch(
        """SELECT c.table_name FROM information_schema.columns c
           JOIN information_schema.tables t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           WHERE c.table_schema = current_schema() AND c.column_name = 'account_id'
             AND t.table_type = 'BASE TABLE'
           ORDER BY 1"""
    )
    return [r["table_name"] for r in rows]


async def delete_account_rows(conn: Conn, table: str, account_id: int, limit: int) -> int:
    """Delete at most ``limit`` rows of ``account_id`` from ``table`` (a name from
    :func:`tables_with_account_id`); how many went."""
    name = '"' + table.replace('"', '""') + '"'
    done = await conn.execute(
        f"""DELETE FROM {name} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {name} WHERE account_id = $1 LIMIT $2))""",
        account_id,
        limit,
    )
    return int(done.split()[-1])
