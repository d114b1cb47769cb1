"""``kommo-sync accounts …``: the registry's commands, for an operator at a terminal.

:func:`add_arguments` declares them on the ``accounts`` subparser of :mod:`service.cli`; each
sets ``command`` (a coroutine function taking the arguments and the settings) and ``needs``.
A secret is printed at most once, when it is made (the webhook URL by ``add``, a consumer token
by ``token``), or on request (``webhook-url``); never logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from redis.asyncio import Redis

from service.accounts import consumers, registry
from service.accounts.lifetime import days_left
from service.accounts.registry import AccountError, Credential
from service.accounts.secrets import new_key, require_box
from service.accounts.state import states_of
from service.keys import Keys
from service.kommo.errors import KommoUnavailable
from service.kommo.oauth import request_tokens
from service.resources import KOMMO, Unreachable, address
from service.settings import IntegrationSettings, Needs, Secret, Settings
from service.store import accounts as store

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]
DB, DB_REDIS = Needs.DATABASE, Needs.DATABASE | Needs.REDIS


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    command: Command,
    needs: Needs,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=text, description=text)
    p.set_defaults(command=command, needs=needs)
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(required=True, metavar="ACTION")
    p = _command(
        sub, "add", "register an account (checks the credential against it)", _add, DB_REDIS
    )
    p.add_argument("--subdomain", required=True, help="the account's Kommo subdomain")
    p.add_argument("--base-url", help="API base URL (default https://{subdomain}.kommo.com)")
    p.add_argument("--account-id", type=int, help="refuse unless the credential opens this id")
    p.add_argument("--rate-limit", type=float, default=6.0, help="requests/s (default 6)")
    cred = p.add_mutually_exclusive_group(required=True)
    cred.add_argument("--token-file", help="file holding a long-lived token ('-': stdin)")
    cred.add_argument("--oauth-code", help="an authorization code to exchange (OAuth 2.0)")
    p.add_argument("--client-id", help="the account's own integration (default KOMMO_CLIENT_ID)")
    p.add_argument("--client-secret-file", help="file holding that integration's secret")
    p.add_argument("--redirect-uri", help="that integration's redirect URI")

    p = _command(sub, "list", "registered accounts (no secrets)", _list, DB)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = _command(sub, "disable", "stop syncing an account (its rows stay)", _disable, DB)
    p.add_argument("subdomain", help="the account's subdomain (or id)")
    p.add_argument("--reason", default="disabled by an operator", help="recorded with the state")

    p = _command(sub, "enable", "sync a disabled account again", _enable, DB)
    p.add_argument("subdomain", help="the account's subdomain (or id)")

    p = _command(sub, "remove", "unregister an account", _remove, DB)
    p.add_argument("subdomain", help="the account's subdomain (or id)")
    p.add_argument("--purge", action="store_true", help="also delete its mirrored rows, in batches")

    p = _command(sub, "webhook-url", "print an account's webhook URL again", _webhook_url, DB)
    p.add_argument("subdomain", help="the account's subdomain (or id)")

    p = _command(sub, "token", "issue a consumer token that sees only these accounts", _token, DB)
    p.add_argument("subdomain", nargs="+", help="the accounts' subdomains (or ids)")

    _command(
        sub, "rekey", "re-encrypt every stored secret with SECRETS_KEY's first key", _rekey, DB
    )
    _command(
        sub, "install-url", "print the public integration's install link", _install, Needs.REDIS
    )
    _command(sub, "new-key", "print a new Fernet key for SECRETS_KEY", _new_key, Needs.NOTHING)


async def _connect(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=2)


def _read_secret(path: str, what: str) -> Secret:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise AccountError(f"cannot read the {what} file: {exc.strerror}") from None
    value = text.strip()
    if not value or len(value.split()) != 1:
        raise AccountError(f"the {what} file must hold one value and nothing else")
    return Secret(value)


def _client(args: argparse.Namespace, settings: Settings) -> IntegrationSettings | None:
    """The account's own integration from the options, or None for the deployment's."""
    given = (args.client_id, args.client_secret_file, args.redirect_uri)
    if not any(given):
        if settings.integration is None:
            raise AccountError("--oauth-code needs KOMMO_CLIENT_ID (or --client-id and the rest)")
        return None
    if not all(given):
        raise AccountError("--client-id, --client-secret-file and --redirect-uri go together")
    secret = _read_secret(args.client_secret_file, "client secret")
    return IntegrationSettings(args.client_id, secret, args.redirect_uri)


async def _add(args: argparse.Namespace, settings: Settings) -> int:
    require_box(settings)
    subdomain = registry.subdomain_of(args.subdomain)
    base_url = (args.base_url or registry.default_base_url(subdomain)).rstrip("/")
    if not base_url.startswith(("https://", "http://")):
        raise AccountError("--base-url must be an http(s) URL")
    if not 0 < args.rate_limit <= 50:
        raise AccountError("--rate-limit must be above 0 and at most 50")
    pool = await _connect(settings)
    redis: Redis = Redis.from_url(settings.redis_dsn)
    try:
        async with pool.acquire() as conn:  # before a code is spent
            await registry.check_free(conn, settings, subdomain, base_url, args.account_id)
        try:
            credential = await _credential(args, settings, base_url)
            done = await registry.add(
                pool,
                redis,
                settings,
                subdomain=subdomain,
                base_url=base_url,
                credential=credential,
                account_id=args.account_id,
                rate_limit=args.rate_limit,
            )
        except KommoUnavailable as exc:  # named by the account's host, not the environment's
            port = 443 if base_url.startswith("https:") else 80
            raise Unreachable(KOMMO, address(base_url, port), exc) from exc
    finally:
        await redis.aclose()
        await pool.close()
    _out(f"account {done.account.id} ({subdomain}) registered; its webhook URL (shown once):")
    _out(registry.webhook_url(settings, done.webhook_secret.value))
    return 0


async def _credential(args: argparse.Namespace, settings: Settings, base_url: str) -> Credential:
    if args.token_file is not None:
        return Credential(token=_read_secret(args.token_file, "token"))
    own = _client(args, settings)
    client = own or settings.integration
    assert client is not None
    body = {
        "client_id": client.client_id,
        "client_secret": client.client_secret.value,
        "grant_type": "authorization_code",
        "code": args.oauth_code,
        "redirect_uri": client.redirect_uri,
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=20.0) as http:
        grant = await request_tokens(http, body, "exchange of --oauth-code")
    return Credential(grant=grant, client=own)


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    pool = await _connect(settings)
    try:
        async with pool.acquire() as conn:
            found = await store.all_accounts(conn)
            tokens = await store.consumer_token_counts(conn)
    finally:
        await pool.close()
    now = datetime.now(UTC)
    rows = []
    for a in found:
        left = days_left(a.token_expires_at, now)
        rows.append(
            {
                "id": a.id,
                "subdomain": a.subdomain,
                "state": a.state,
                "rate_limit": a.rate_limit,
                "auth": a.auth,
                "token_days_left": None if left is None else round(left, 1),
                "consumer_tokens": tokens.get(a.id, 0),
                "base_url": a.base_url,
                "state_reason": a.state_reason,
            }
        )
    if args.json:
        for row in rows:
            _out(json.dumps(row))
        return 0
    _out(f"{'id':>10}  {'subdomain':<24} {'state':<12} {'rate/s':>6}  {'auth':<5}  base URL")
    for r in rows:
        _out(
            f"{r['id']:>10}  {r['subdomain']:<24} {r['state']:<12} {r['rate_limit']:>6g}  "
            f"{r['auth']:<5}  {r['base_url']}"
        )
    if not rows:
        _out("(no registered accounts; the environment's own account is not listed)")
    return 0


async def _disable(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_state(settings, args.subdomain, "disabled", args.reason)


async def _enable(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_state(settings, args.subdomain, "enabled", "enabled by an operator")


async def _set_state(settings: Settings, name: str, state: str, reason: str) -> int:
    pool = await _connect(settings)
    try:
        async with pool.acquire() as conn:
            account = await registry.set_state(
                conn, name, "enabled" if state == "enabled" else "disabled", reason
            )
    finally:
        await pool.close()
    _out(f"account {account.id} ({account.subdomain}) {account.state}")
    return 0


async def _remove(args: argparse.Namespace, settings: Settings) -> int:
    pool = await _connect(settings)
    try:
        removed = await registry.remove(pool, args.subdomain, purge=args.purge)
    finally:
        await pool.close()
    if args.purge:
        rows = ", ".join(f"{n} {t}" for t, n in removed.items() if n) or "no rows"
        _out(f"account {args.subdomain} removed; purged {rows}")
    else:
        _out(f"account {args.subdomain} removed; its mirrored rows stay (--purge deletes them)")
    return 0


async def _webhook_url(args: argparse.Namespace, settings: Settings) -> int:
    box = require_box(settings)
    pool = await _connect(settings)
    try:
        async with pool.acquire() as conn:
            account = await registry.account_named(conn, args.subdomain)
    finally:
        await pool.close()
    _out(registry.webhook_url(settings, box.reveal(account.sealed.webhook_secret)))
    return 0


async def _token(args: argparse.Namespace, settings: Settings) -> int:
    pool = await _connect(settings)
    try:
        async with pool.acquire() as conn:
            found = [await registry.account_named(conn, name) for name in args.subdomain]
        token = await consumers.issue(pool, (a.id for a in found))
    finally:
        await pool.close()
    names = ", ".join(a.subdomain for a in found)
    _out(f"a consumer token that sees {names} (shown once; only its hash is stored):")
    _out(token)
    return 0


async def _rekey(args: argparse.Namespace, settings: Settings) -> int:
    box = require_box(settings)
    pool = await _connect(settings)
    try:
        accounts, pairs = await registry.rekey(pool, box)
    finally:
        await pool.close()
    _out(
        f"re-encrypted {accounts} account(s) and {pairs} stored OAuth pair(s) with the first "
        "key of SECRETS_KEY; the other keys may now be dropped"
    )
    return 0


async def _install(args: argparse.Namespace, settings: Settings) -> int:
    redis: Redis = Redis.from_url(settings.redis_dsn)
    try:
        url = states_of(settings.integration, redis, Keys.of(settings)).authorize_url()
    finally:
        await redis.aclose()
    _out(url)
    return 0


async def _new_key(args: argparse.Namespace, settings: Settings) -> int:
    _out(new_key())
    return 0
