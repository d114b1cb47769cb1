"""A public integration installs itself: Kommo's OAuth redirect and uninstall hook.

With ``KOMMO_CLIENT_ID``, ``KOMMO_CLIENT_SECRET`` and ``KOMMO_REDIRECT_URI`` set
(``KOMMO_REDIRECT_URI`` = ``{PUBLIC_URL}/oauth/kommo/callback``), :func:`install_routes` serves:

- ``GET /oauth/kommo/start``: a redirect to Kommo's authorize page with a fresh ``state``
  (``kommo-sync accounts install-url`` prints the same link);
- ``GET /oauth/kommo/callback?code=…&referer=…&state=…``: Kommo's redirect. The ``state`` must
  be ours, unexpired and unused (:mod:`service.accounts.state`); the code is exchanged
  (``authorization_code`` grant) only with the host ``referer`` names when that is a Kommo or
  amoCRM host (``*.kommo.com``, ``*.amocrm.ru``, ``*.amocrm.com``) or one of
  ``KOMMO_OAUTH_HOSTS``, never wherever ``referer`` points otherwise; the new token resolves
  the account (``GET /api/v4/account``) and the account is registered with its pair sealed.
  Anything wrong answers 400 (or 409, 502, 503) with one line and registers nothing;
- ``GET /oauth/kommo/uninstall?client_uuid=…&account_id=…&signature=…`` (also accepted on the
  callback path): Kommo's uninstall hook. The signature (hex HMAC-SHA256 of
  ``"client_id|account_id"`` under the client secret) is checked in constant time; a good one
  marks the account ``uninstalled`` and logs one ERROR line, a bad one changes nothing (403).

Handlers read the process's resources from the app's state (:mod:`service.web.state`).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
from typing import Final

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from service.accounts.registry import AccountError, Credential, opened_account, register
from service.accounts.secrets import box_of
from service.accounts.state import BadState, states_of
from service.kommo.errors import KommoRejected, KommoUnavailable
from service.kommo.oauth import TOKEN_PATH, TokenGrant, request_tokens
from service.settings import IntegrationSettings, Settings
from service.store import accounts as store
from service.web.state import resources

log = logging.getLogger(__name__)

START_PATH: Final = "/oauth/kommo/start"
CALLBACK_PATH: Final = "/oauth/kommo/callback"
UNINSTALL_PATH: Final = "/oauth/kommo/uninstall"
KOMMO_HOSTS: Final = re.compile(
    r"^(?!www\.)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.(?:kommo\.com|amocrm\.ru|amocrm\.com)$"
)
_HOST: Final = re.compile(r"^[a-z0-9.-]+(?::\d{1,5})?$")
_TIMEOUT: Final = httpx.Timeout(20.0, connect=10.0)


def oauth_origin(referer: str | None, settings: Settings) -> str | None:
    """The origin to exchange a code with, from Kommo's ``referer`` (``sub.kommo.com``): a
    Kommo or amoCRM host (https), or one named in ``KOMMO_OAUTH_HOSTS``; None otherwise."""
    host = (referer or "").strip().lower().removeprefix("https://").rstrip("/")
    if not _HOST.match(host):
        return None
    if KOMMO_HOSTS.match(host) or host in settings.oauth_hosts:
        return f"https://{host}"
    if f"http://{host}" in settings.oauth_hosts:
        return f"http://{host}"
    return None


def uninstall_signature(integration: IntegrationSettings, account_id: str) -> str:
    """What Kommo signs its uninstall hook with: hex HMAC-SHA256 of ``client_id|account_id``."""
    message = f"{integration.client_id}|{account_id}".encode()
    return hmac.new(integration.client_secret.value.encode(), message, hashlib.sha256).hexdigest()


def install_routes(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[Route]:
    """The install routes, or none when the deployment has no integration. ``transport``:
    where calls to Kommo go (tests: the simulator)."""
    integration = settings.integration
    if integration is None:
        return []

    async def start(request: Request) -> Response:
        res = resources(request)
        return RedirectResponse(
            states_of(integration, res.redis, res.keys).authorize_url(), status_code=302
        )

    async def callback(request: Request) -> Response:
        query = request.query_params
        if "code" not in query and "signature" in query:
            return await uninstall(request)
        return await _install(request, settings, integration, transport)

    async def uninstall(request: Request) -> Response:
        return await _uninstall(request, integration)

    return [
        Route(START_PATH, start, methods=["GET"]),
        Route(CALLBACK_PATH, callback, methods=["GET"]),
        Route(UNINSTALL_PATH, uninstall, methods=["GET"]),
    ]


def _refuse(status: int, line: str) -> Response:
    log.warning("install refused (%d): %s", status, line)
    return PlainTextResponse(line + "\n", status_code=status, headers={"Cache-Control": "no-store"})


async def _install(
    request: Request,
    settings: Settings,
    integration: IntegrationSettings,
    transport: httpx.AsyncBaseTransport | None,
) -> Response:
    query, res = request.query_params, resources(request)
    if box_of(settings) is None:
        log.error("an install arrived but SECRETS_KEY is not set: nothing was registered")
        return _refuse(503, "this deployment cannot register accounts yet (SECRETS_KEY)")
    if "error" in query:
        return _refuse(400, "the install was not authorized in Kommo")
    code, origin = query.get("code"), oauth_origin(query.get("referer"), settings)
    if not code:
        return _refuse(400, "the callback carries no authorization code")
    if origin is None:
        return _refuse(400, "referer is not a Kommo or amoCRM host; nothing was exchanged")
    try:
        await states_of(integration, res.redis, res.keys).claim(query.get("state"))
    except BadState as exc:
        return _refuse(400, str(exc))
    try:
        grant = await _exchange(integration, origin, code, transport)
        account_id, subdomain = await opened_account(
            settings, res.redis, origin, grant.access_token, transport=transport
        )
        registered = await register(
            res.pool,
            settings,
            account_id=account_id,
            subdomain=subdomain,
            base_url=origin,
            credential=Credential(grant=grant),
        )
    except KommoRejected as exc:
        return _refuse(400, f"Kommo refused the install: {exc}")
    except KommoUnavailable as exc:
        return _refuse(502, f"Kommo could not complete the install now ({exc}); try again")
    except AccountError as exc:
        return _refuse(409, str(exc))
    account = registered.account
    log.info("account %d (%s) installed from %s", account.id, account.subdomain, origin)
    name = html.escape(f"{account.subdomain} ({account.id})")
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>kommo-sync: installed</title>"
        f"<h1>Installed</h1><p>The Kommo account {name} is now mirrored by this deployment."
        "</p><p>You can close this page.</p>",
        headers={"Cache-Control": "no-store"},
    )


async def _exchange(
    integration: IntegrationSettings,
    origin: str,
    code: str,
    transport: httpx.AsyncBaseTransport | None,
) -> TokenGrant:
    body = {
        "client_id": integration.client_id,
        "client_secret": integration.client_secret.value,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": integration.redirect_uri,
    }
    async with httpx.AsyncClient(
        base_url=origin, transport=transport, timeout=_TIMEOUT, follow_redirects=False
    ) as http:
        return await request_tokens(http, body, "exchange of the install code", url=TOKEN_PATH)


async def _uninstall(request: Request, integration: IntegrationSettings) -> Response:
    query, res = request.query_params, resources(request)
    account_id, signature = query.get("account_id", ""), query.get("signature", "").lower()
    expected = uninstall_signature(integration, account_id)
    signed = hmac.compare_digest(signature.encode(), expected.encode())
    client = query.get("client_uuid")
    if not signed or not account_id.isdigit() or client not in (None, integration.client_id):
        log.warning("uninstall hook refused: bad signature (nothing changed)")
        return PlainTextResponse("bad signature\n", status_code=403)
    async with res.pool.acquire() as conn:
        account = await store.get(conn, int(account_id))
        if account is None:
            log.warning("uninstall hook for account %s, which is not registered", account_id)
            return PlainTextResponse("ok\n")
        await store.set_state(conn, account.id, "uninstalled", "uninstalled in Kommo")
    log.error(
        "account %d (%s) was UNINSTALLED in Kommo: its sync stops and its token is revoked; "
        "install it again to resume (its mirrored rows stay)",
        account.id,
        account.subdomain,
    )
    return PlainTextResponse("ok\n")
