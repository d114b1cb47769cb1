"""Helpers for the registry's tests: a deployment's settings with SECRETS_KEY and the public
integration, a simulated fleet reachable at Kommo-like hosts, and the install app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from starlette.applications import Starlette

from devenv.asgi import lifespan
from kommo_sim import RateLimitConfig, SimConfig, SimFleet
from service.accounts.install import install_routes
from service.resources import open_resources
from service.settings import Needs, Settings

KEY = Fernet.generate_key().decode()
OLD_KEY = Fernet.generate_key().decode()
TOKEN = "fleet-token-0123456789"  # account i (from 1): TOKEN, TOKEN-2, TOKEN-3
SIM = {  # the simulator's integration (kommo_sim.oauth.OAuthConfig's defaults)
    "KOMMO_CLIENT_ID": "sim-client-id",
    "KOMMO_CLIENT_SECRET": "sim-client-secret",
    "KOMMO_REDIRECT_URI": "https://example.com/oauth/callback",
}
ENV_ACCOUNT, SECOND, THIRD = 31000001, 31000002, 31000003


def deployment(env: dict[str, str], **extra: str) -> Settings:
    """The session's settings (its KOMMO_ACCOUNT_ID is the fleet's first account) with
    SECRETS_KEY and the public integration; ``extra`` overrides (``""`` removes)."""
    values = env | {"SECRETS_KEY": KEY, "PUBLIC_URL": "https://sync.example.com"} | SIM | extra
    return Settings.from_env({k: v for k, v in values.items() if v}, Needs.DATABASE | Needs.REDIS)


def fleet_of(count: int = 3, **overrides: Any) -> SimFleet:
    base = SimConfig(
        seed=3,
        leads=5,
        contacts=3,
        companies=1,
        token=TOKEN,
        clock_speed=0.0,
        rate_limit=RateLimitConfig(rate=0),
        **overrides,
    )
    return SimFleet.generate(count, base)


class KommoHosts(httpx.AsyncBaseTransport):
    """Serves ``https://<subdomain>.kommo.com/…`` (or ``.amocrm.ru``, …) from the fleet's
    account ``<subdomain>``, and records every host asked: a request for any other host fails
    as an unreachable one would."""

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet
        self.inner = httpx.ASGITransport(app=fleet.app)
        self.hosts: list[str] = []
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.hosts.append(host)
        self.paths.append(request.url.path)
        sub = host.split(".")[0]
        if not host.endswith((".kommo.com", ".amocrm.ru", ".amocrm.com")) or sub not in {
            s.config.subdomain for s in self.fleet
        }:
            raise httpx.ConnectError(f"no such host: {host}", request=request)
        request.url = request.url.copy_with(
            scheme="http", host="sim", path=f"/{sub}{request.url.path}"
        )
        return await self.inner.handle_async_request(request)

    def base_url(self, subdomain: str) -> str:
        return f"https://{subdomain}.kommo.com"


@contextlib.asynccontextmanager
async def install_app(
    settings: Settings, transport: httpx.AsyncBaseTransport
) -> AsyncIterator[httpx.AsyncClient]:
    """The install routes in an app with the web process's lifespan state, as the lead will
    mount them; a client to call them."""

    @contextlib.asynccontextmanager
    async def span(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with open_resources(settings) as res:
            yield {"resources": res}

    app = Starlette(routes=install_routes(settings, transport=transport), lifespan=span)
    async with lifespan(app) as running:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=running), base_url="http://web"
        ) as client:
            yield client


def secret_file(folder: Path, value: str, name: str = "token") -> str:
    """A file holding ``value`` as an operator would write it (with a newline)."""
    path = folder / name
    path.write_text(value + "\n")
    return str(path)
