"""The gateway's direct frame path on the locked uvicorn, and its fallback where uvicorn's private
protocol is missing (:mod:`service.gateway.frames`)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from service.gateway import frames
from service.gateway.frames import Writer
from service.keys import Keys
from service.settings import Settings
from tests.webserver import connect_ws, lead_update, metric, served


def _token(settings: Settings) -> str:
    return next(iter(settings.ws_tokens))


async def test_the_locked_uvicorn_serves_sockets_on_the_direct_path(
    settings: Settings, redis: Redis
) -> None:
    """With the web process's own server and options, a socket gets a direct Writer: this
    fails if an upgrade of uvicorn or Starlette silently sends every frame through ASGI."""
    assert frames.SANSIO is not None, "uvicorn lost websockets_sansio_impl.WebSocketsSansIOProtocol"
    async with served(settings) as running:
        ws, _ = await connect_ws(running.url(f"token={_token(settings)}"))
        assert metric("ws_direct_sockets") == 1
        (sock,) = running.hub._sockets
        assert isinstance(sock.writer, Writer) and sock.queue is None
        assert type(sock.writer.transport.get_protocol()) is frames.SANSIO
        text = lead_update(24000101, running.hub.last_version + 1)
        await redis.publish(Keys(settings.redis_prefix).lead_update, text)
        async with asyncio.timeout(10):
            assert await ws.recv() == text
        assert sock.writer.written > len(text)  # the hello and the message, both written directly
        await ws.close()


async def test_without_uvicorn_private_protocol_sockets_take_the_queue_path(
    settings: Settings,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What another uvicorn without the sans-I/O protocol gets: every frame through ASGI, and
    one warning for the whole process."""
    monkeypatch.setattr(frames, "SANSIO", None)
    monkeypatch.setattr(frames, "_warned", set())
    caplog.set_level(logging.WARNING, logger="service.gateway.frames")
    async with served(settings) as running:
        clients = [
            (await connect_ws(running.url(f"token={_token(settings)}")))[0] for _ in range(3)
        ]
        assert metric("ws_connected_sockets") == 3 and metric("ws_direct_sockets") == 0
        assert all(s.writer is None and s.queue is not None for s in running.hub._sockets)
        text = lead_update(24000102, running.hub.last_version + 1)
        await redis.publish(Keys(settings.redis_prefix).lead_update, text)
        async with asyncio.timeout(10):
            assert [await ws.recv() for ws in clients] == [text] * 3
        await asyncio.gather(*(ws.close() for ws in clients))
    warnings = [r for r in caplog.records if r.name == "service.gateway.frames"]
    assert len(warnings) == 1 and "queue path" in warnings[0].getMessage()


def test_the_gateway_imports_when_uvicorn_has_no_sansio_module() -> None:
    """The private import is optional: with the module missing, the gateway and the web server
    still import, and uvicorn is left to choose its WebSocket protocol."""
    code = (
        "import sys\n"
        "sys.modules['uvicorn.protocols.websockets.websockets_sansio_impl'] = None\n"
        "from service.gateway import frames\n"
        "from service.web.server import uvicorn_options\n"
        "from service.settings import Settings\n"
        "assert frames.SANSIO is None\n"
        "assert uvicorn_options(Settings.from_env({}))['ws'] == 'auto'\n"
        "print('imported')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr
