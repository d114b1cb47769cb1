"""Several simulated Kommo accounts behind one ASGI app, each under its own path prefix.

Account ``sub`` is served at ``<server>/<sub>``: point ``KOMMO_BASE_URL`` there and every
``/api/v4/...``, ``/oauth2/access_token`` and ``/_sim/...`` route works below it, with hrefs
carrying the prefix. Each account is a full :class:`Simulator`: its own data, token, rate
limiter, faults, webhooks (with its own ``account[id]`` and subdomain) and counters. The
accounts share ONE clock (``fleet.clock``): advancing it moves every account's time, retries
and blocks together. ``GET /_sim/fleet`` lists the accounts (ids, subdomains, paths; no
tokens).

Entity ids repeat across accounts (each account is seeded from its own seed over the same id
ranges): a mirror keyed by ``(account_id, id)`` keeps them apart, one keyed by id alone does not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from kommo_sim.clock import SimClock
from kommo_sim.config import SimConfig, fill_url
from kommo_sim.gate import problem
from kommo_sim.simulator import Simulator

TIMEZONES = ("America/Lima", "Europe/Moscow", "America/Sao_Paulo", "Asia/Kolkata", "UTC")


class SimFleet:
    def __init__(
        self,
        configs: Sequence[SimConfig],
        *,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        clock: SimClock | None = None,
    ) -> None:
        if not configs:
            raise ValueError("a fleet needs at least one account")
        for attr in ("account_id", "subdomain", "token"):
            values = [getattr(c, attr) for c in configs]
            if len(set(values)) != len(values):
                raise ValueError(f"the accounts' {attr} values must differ")
        first = configs[0]
        self.clock = clock or SimClock(first.start_time, first.clock_speed)
        self.simulators = [
            Simulator(c, webhook_transport=webhook_transport, clock=self.clock) for c in configs
        ]
        self.app = self._build_app()

    @classmethod
    def generate(
        cls,
        count: int,
        base: SimConfig | None = None,
        *,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> SimFleet:
        """``count`` accounts derived from ``base``: account ``i`` (from 0) has seed
        ``seed + i``, id ``account_id + i``, subdomain ``<subdomain>`` then ``<subdomain>2``…,
        token ``<token>`` then ``<token>-2``…, its own time zone; ``{subdomain}`` and
        ``{account_id}`` in webhook URLs are filled in per account."""
        base = base or SimConfig()
        configs = []
        for i in range(count):
            subdomain = base.subdomain if i == 0 else f"{base.subdomain}{i + 1}"
            account_id = base.account_id + i
            configs.append(
                replace(
                    base,
                    seed=base.seed + i,
                    account_id=account_id,
                    subdomain=subdomain,
                    token=base.token if i == 0 else f"{base.token}-{i + 1}",
                    timezone=base.timezone if i == 0 else TIMEZONES[i % len(TIMEZONES)],
                    webhooks=[fill_url(url, subdomain, account_id) for url in base.webhooks],
                )
            )
        return cls(configs, webhook_transport=webhook_transport)

    def __len__(self) -> int:
        return len(self.simulators)

    def __iter__(self) -> Iterator[Simulator]:
        return iter(self.simulators)

    def __getitem__(self, key: str | int) -> Simulator:
        """The account with this subdomain, or this account id."""
        for sim in self.simulators:
            if key in (sim.config.subdomain, sim.config.account_id):
                return sim
        raise KeyError(key)

    def base_url(self, sim: Simulator, server_url: str) -> str:
        """The account's base URL on a server at ``server_url`` (its KOMMO_BASE_URL)."""
        return f"{server_url.rstrip('/')}/{sim.config.subdomain}"

    async def aclose(self) -> None:
        for sim in self.simulators:
            await sim.aclose()

    def _build_app(self) -> Starlette:
        async def fleet(request: Request) -> Response:
            accounts = [
                {
                    "account_id": s.config.account_id,
                    "subdomain": s.config.subdomain,
                    "path": f"/{s.config.subdomain}",
                }
                for s in self.simulators
            ]
            return Response(json.dumps(accounts), media_type="application/json")

        async def unknown(request: Request, exc: Exception) -> Response:
            return problem(404, "Not Found", f"Cannot {request.method} {request.url.path}")

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            for sim in self.simulators:
                await sim.webhooks.start()
            yield
            await self.aclose()

        routes: list[Route | Mount] = [Route("/_sim/fleet", fleet)]
        routes += [Mount(f"/{s.config.subdomain}", app=s.app) for s in self.simulators]
        return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: unknown})
