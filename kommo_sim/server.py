"""Running the simulator under uvicorn: in the current event loop (tests) or as a process."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import uvicorn
from starlette.types import ASGIApp

from kommo_sim.churn import churn
from kommo_sim.fleet import SimFleet
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
    sim: Simulator | SimFleet,
    host: str = "127.0.0.1",
    port: int = 0,
    changes_per_second: float = 0.0,
) -> AsyncIterator[str]:
    """Serve a simulator (or a fleet) in the running loop; yields the server's base URL
    (port 0 = a free port). A fleet's accounts are below it, at ``<url>/<subdomain>``.

    With ``changes_per_second`` a background task per account applies random changes (demo).
    """
    sims = list(sim) if isinstance(sim, SimFleet) else [sim]
    async with serve_app(sim.app, host, port) as base_url:
        streams = [
            asyncio.create_task(churn(s, changes_per_second, random.Random(s.config.seed + 1)))
            for s in sims
            if changes_per_second > 0
        ]
        try:
            yield base_url
        finally:
            for stream in streams:
                stream.cancel()
            for stream in streams:
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


async def run_forever(
    sim: Simulator | SimFleet, host: str, port: int, changes_per_second: float
) -> None:
    """Serve until the process is interrupted. A fleet prints each account's base URL and
    token on stdout, one line each (a single account prints nothing: its caller chose both)."""
    async with serve(sim, host, port, changes_per_second) as base_url:
        if isinstance(sim, SimFleet):
            for account in sim:
                _announce(account, sim.base_url(account, base_url))
        logger.info("simulator ready at %s", base_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # ours, set after uvicorn's: Ctrl-C stops
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _announce(sim: Simulator, base_url: str) -> None:
    """One line per account on stdout: what a client needs (a simulator's test token)."""
    config = sim.config
    sys.stdout.write(
        f"account {config.account_id} {config.subdomain}: base URL {base_url} "
        f"token {config.token}\n"
    )
    sys.stdout.flush()
