"""The app under a real uvicorn server, and lead changes written straight to Postgres.

:func:`serve` runs ``create_app`` on a pre-bound loopback socket with its gateway hub
subscribed; :func:`change` writes one lead version as the mirror would and publishes its
``lead_update``, so gateway and read API tests can feed the app without running a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import uvicorn
from redis.asyncio import Redis

from service.gateway import hub as gateway
from service.gateway.hub import Hub
from service.keys import Keys
from service.settings import Settings
from service.web.app import create_app
from tests.session import WS_TOKEN

ACCOUNT = 31000001


@dataclass
class Running:
    server: uvicorn.Server
    hub: Hub
    port: int
    http: httpx.AsyncClient
    task: asyncio.Task[None]

    def url(self, token: str | None = WS_TOKEN) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?token={token}" if token else "")


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, hub: Hub | None = None, *, graceful: bool = False, **options: Any
) -> AsyncIterator[Running]:
    """The app under uvicorn on a pre-bound loopback socket, its hub subscribed; ``options``
    override uvicorn's settings."""
    hub = Hub(settings) if hub is None else hub
    config = uvicorn.Config(
        create_app(settings, hub=hub),
        **{"lifespan": "on", "ws_per_message_deflate": False, "log_level": "warning", **options},
    )
    server = gateway.Server(config, hub) if graceful else uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with asyncio.timeout(15):
            assert (await http.get("/healthz")).status_code == 200  # answered once started
            await hub.subscribed.wait()
        running = Running(server, hub, port, http, task)
        try:
            yield running
        finally:
            server.should_exit = True
            async with asyncio.timeout(15):
                await task


async def change(
    pool: asyncpg.Pool,
    redis: Redis | None,
    settings: Settings,
    lead_id: int,
    *,
    pipeline_id: int = 7000001,
    action: str = "updated",
    pad: int = 0,
) -> tuple[int, str]:
    """Write one lead change (a new version) and publish its lead_update; (version, text)."""
    lead = {
        "id": lead_id,
        "name": f"lead {lead_id}",
        "pipeline_id": pipeline_id,
        "is_deleted": action == "deleted",
        "note": "x" * pad,
    }
    version = await pool.fetchval(
        """INSERT INTO leads (account_id, id, pipeline_id, updated_at, raw, is_deleted,
                              shown, version, last_action, last_source)
           VALUES ($1, $2, $3, now(), '{}', $4, $5::jsonb, nextval('lead_version_seq'), $6,
                   'webhook')
           ON CONFLICT (account_id, id) DO UPDATE SET
               pipeline_id = EXCLUDED.pipeline_id, is_deleted = EXCLUDED.is_deleted,
               shown = EXCLUDED.shown, version = EXCLUDED.version,
               last_action = EXCLUDED.last_action
           RETURNING version""",
        ACCOUNT,
        lead_id,
        pipeline_id,
        action == "deleted",
        json.dumps(lead),
        action,
    )
    data = {"action": action, "version": version, "source": "webhook", "lead": lead}
    text = json.dumps({"event": "lead_update", "account_id": ACCOUNT, "data": data})
    if redis is not None:
        await redis.publish(Keys(settings.redis_prefix).lead_update, text)
    return version, text
