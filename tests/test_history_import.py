"""The stage history import: every lead_status_changed event Kommo serves, each page read once,
resumed after a crash at the page after the last one committed."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys

import asyncpg
import httpx
import pytest
import uvicorn

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.resources import open_sync_resources
from service.settings import Settings
from service.sync.history import HistoryImport
from service.sync.mirror import Mirror
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst
from tests.mirror import differences


class Crash(Exception):
    pass


@pytest.fixture
def sim() -> Simulator:
    config = SimConfig(
        seed=13, leads=500, contacts=100, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
    )
    return Simulator(config)


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


def event_reads(sim: Simulator) -> int:
    return sum(n for (endpoint, _), n in sim.counters.items() if endpoint == "GET /api/v4/events")


async def test_the_import_resumes_after_a_crash_and_reads_each_page_once(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool
) -> None:
    await run_worker_burst(kommo_settings, sim)  # the backfill, then the history import
    assert await differences(pool, sim) == []
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE lead_status_changes")
        await conn.execute("DELETE FROM sync_cursors WHERE name = 'history'")
    assert await differences(pool, sim) != []

    transport = httpx.ASGITransport(app=sim.app)
    async with open_sync_resources(kommo_settings, kommo_transport=transport) as res:
        mirror = Mirror(res, sim.config.account_id)
        pages: list[tuple[int, int]] = []

        def crash_after_three(page: int, events: int) -> None:
            pages.append((page, events))
            if page == 3:
                raise Crash  # after page 3 was committed and its number saved

        before = event_reads(sim)
        with pytest.raises(Crash):
            await HistoryImport(mirror).run(tick=crash_after_three)
        assert await HistoryImport(mirror).needed()
        done = await HistoryImport(mirror).run(tick=lambda page, n: pages.append((page, n)))
        reads = event_reads(sim) - before
        assert not await HistoryImport(mirror).needed()

    assert [page for page, _ in pages] == list(range(1, len(pages) + 1))
    assert len(pages) > 3 and reads == len(pages)  # every page once, none again after the crash
    assert done.done and done.events == sum(n for _, n in pages) == len(sim.status_changes)
    assert await differences(pool, sim) == []


async def test_the_command_imports_and_reports(
    env: dict[str, str], kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool
) -> None:
    await run_worker_burst(kommo_settings, sim)
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE lead_status_changes")
        await conn.execute("DELETE FROM sync_cursors WHERE name = 'history'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(sim.app, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            port = sock.getsockname()[1]
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "import-history",
                env={**os.environ, **env, "KOMMO_TOKEN": SIM_TOKEN,
                     "KOMMO_BASE_URL": f"http://127.0.0.1:{port}"},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(60):
                out, err = await child.communicate()
        finally:
            server.should_exit = True
            await serving
    assert child.returncode == 0, err.decode()
    changes = len(sim.status_changes)
    assert re.fullmatch(rf"history: {changes} stage changes in \d+ pages\n", out.decode())
    assert await differences(pool, sim) == []
