"""The simulator over real HTTP: serve() in this loop, the CLI process, and timings."""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kommo_sim import SimConfig, Simulator, serve, serve_app
from tests.sim.helpers import TOKEN, make_config, parse_php_form


class Inbox:
    """A tiny webhook receiver app; ``arrived`` is set on every request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.bodies.append(await request.body())
        self.arrived.set()
        return Response(status_code=200)


@pytest.fixture
async def inbox_url() -> AsyncIterator[tuple[Inbox, str]]:
    inbox = Inbox()
    async with serve_app(inbox.app) as url:
        yield inbox, f"{url}/hook"


async def test_serve_real_http_and_webhooks_to_a_real_receiver(
    inbox_url: tuple[Inbox, str],
) -> None:
    inbox, hook = inbox_url
    sim = Simulator(make_config(clock_speed=1.0, start_time=None, webhooks=[hook]))
    async with (
        serve(sim) as base_url,
        httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client,
    ):
        assert base_url.startswith("http://127.0.0.1:")
        page = (await client.get("/api/v4/leads", params={"limit": 5})).json()
        next_href = page["_links"]["next"]["href"]
        assert next_href.startswith(base_url)  # links point back at the simulator
        assert (await client.get(next_href)).json()["_page"] == 2
        lead_id = page["_embedded"]["leads"][0]["id"]
        await client.post("/_sim/mutations/update_lead", json={"lead_id": lead_id, "price": 9})
        await asyncio.wait_for(inbox.arrived.wait(), timeout=5)
    body = parse_php_form(inbox.bodies[0].decode())
    assert body["leads"]["update"]["0"]["id"] == str(lead_id)
    assert body["leads"]["update"]["0"]["price"] == "9"


async def test_cli_process_serves_until_stopped(unused_port: int) -> None:
    code = "import sys; from kommo_sim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        "--port",
        str(unused_port),
        "--token",
        "cli-token",
        "--leads",
        "50",
        "--contacts",
        "20",
        "--changes-per-second",
        "20",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=20)
            assert line, "the simulator exited early"
            if b"simulator ready at" in line:
                break
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{unused_port}",
            headers={"Authorization": "Bearer cli-token"},
        ) as client:
            account = await client.get("/api/v4/account")
            assert account.status_code == 200 and account.json()["id"] == 31000001
            while True:  # the demo stream changes things: wait for its first event
                line = await asyncio.wait_for(proc.stderr.readline(), timeout=20)
                if b"demo change" in line:
                    break
            assert (await client.get("/api/v4/events")).status_code == 200
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_startup_and_page_times() -> None:
    started = time.perf_counter()
    sim = Simulator(SimConfig(seed=1, leads=10_000, contacts=5_000, token=TOKEN))
    startup = time.perf_counter() - started
    sim.ratelimit.config.rate = 0
    gc.collect()  # earlier tests' simulators are cyclic garbage: don't time their collection
    timings = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(sim.app),
        base_url="http://sim.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for page in range(1, 8):
            t = time.perf_counter()
            response = await client.get(
                "/api/v4/leads",
                params={"with": "contacts", "limit": 250, "page": page, "order[updated_at]": "asc"},
            )
            timings.append(time.perf_counter() - t)
            assert len(response.json()["_embedded"]["leads"]) == 250
    summary = (
        f"\nstartup 10k leads + 5k contacts (+ companies, ~18k seeded stage moves): "
        f"{startup * 1000:.0f} ms; "
        f"250-lead page with contacts: first {timings[0] * 1000:.1f} ms, "
        f"median {statistics.median(timings) * 1000:.1f} ms"
    )
    print(summary)  # noqa: T201
    assert startup < 5.0  # about 1.7 s alone on 2 cores; generous for a loaded machine
    assert timings[0] < 0.25 and statistics.median(timings) < 0.25  # ~50 ms on 2 idle cores
