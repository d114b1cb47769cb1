"""Running the simulator under uvicorn: in the current event loop (tests) or as a process."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import uvicorn
from starlette.types import ASGIApp

from kommo_sim.churn import churn
from kommo_sim.simulator import Simulator

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server with an event set once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@asynccontextmanager
async def serve(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, changes_per_second: float = 0.0
) -> AsyncIterator[str]:
    """Serve ``sim.app`` in the running loop; yields the base URL (port 0 = a free port).

    With ``changes_per_second`` a background task applies random changes (demo mode).
    """
    async with serve_app(sim.app, host, port) as base_url:
        stream = None
        if changes_per_second > 0:
            stream = asyncio.create_task(
                churn(sim, changes_per_second, random.Random(sim.config.seed + 1))
            )
        try:
            yield base_url
        finally:
            if stream is not None:
                stream.cancel()
                with suppress(asyncio.CancelledError):
                    await stream


@asynccontextmanager
async def serve_app(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve any ASGI app under uvicorn in the running loop (tests use it for receivers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="kommo-sim-server")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        sock.close()
        await task  # re-raises the start-up error
        raise RuntimeError("the simulator server stopped during start-up")
    bound = sock.getsockname()
    base_url = f"http://{bound[0]}:{bound[1]}"
    logger.info("listening on %s", base_url)
    try:
        yield base_url
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_forever(sim: Simulator, host: str, port: int, changes_per_second: float) -> None:
    """Serve until the process is interrupted."""
    async with serve(sim, host, port, changes_per_second) as base_url:
        logger.info("simulator ready at %s (account %s)", base_url, sim.config.account_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # ours, set after uvicorn's: Ctrl-C stops
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
