"""The web process as production builds it (``service.web.server.build_server``), served in
process on a pre-bound loopback socket, for tests that need uvicorn's own protocol and options."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from service.gateway.hub import Hub, Server
from service.settings import Settings
from service.web.server import build_server


@dataclass
class Served:
    server: Server
    hub: Hub
    port: int
    http: httpx.AsyncClient

    def url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?{query}" if query else "")


@contextlib.asynccontextmanager
async def served(
    settings: Settings, hub: Hub | None = None, **options: Any
) -> AsyncIterator[Served]:
    """The app under uvicorn with the web process's options (``options`` override them), its
    lifespan run and its hub subscribed; shut down gracefully on exit."""
    server = build_server(settings, hub=hub, lifespan="on", **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(15):
                assert (await http.get("/healthz")).status_code == 200
                await server.hub.subscribed.wait()
            yield Served(server, server.hub, port, http)
    finally:
        server.should_exit = True
        async with asyncio.timeout(15):
            await task


async def connect_ws(url: str, **kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """A connected client (no compression) and its first frame, the hello."""
    ws = await connect(url, compression=None, **kw)
    async with asyncio.timeout(10):
        hello = json.loads(await ws.recv())
    assert hello["event"] == "hello", hello
    return ws, hello


async def next_event(ws: ClientConnection, event: str, timeout: float = 10) -> dict[str, Any]:
    """The next frame of the gateway's ``event`` (others skipped)."""
    async with asyncio.timeout(timeout):
        while (msg := json.loads(await ws.recv()))["event"] != event:
            pass
    return msg  # type: ignore[no-any-return]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def lead_update(lead_id: int, version: int, pipeline_id: int = 7000001) -> str:
    """A ``lead_update`` message as the mirror publishes it (the hub reads only its data)."""
    lead = {"id": lead_id, "name": f"lead {lead_id}", "pipeline_id": pipeline_id}
    data = {"action": "updated", "version": version, "source": "webhook", "lead": lead}
    return json.dumps({"event": "lead_update", "account_id": 31000001, "data": data})
