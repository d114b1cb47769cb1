"""Driving the sync engine in tests: the simulator behind an injected transport, arq in burst."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from arq.worker import Worker as ArqWorker

from kommo_sim import Simulator
from service.settings import Needs, Settings
from service.store import cursors
from workers.main import worker_options

SIM_TOKEN = "sim-token-for-tests"


def kommo_settings_for(env: dict[str, str], needs: Needs = Needs.NOTHING) -> Settings:
    """The test environment pointed at a simulator (reached through an injected transport)."""
    return Settings.from_env(
        {
            **env,
            "KOMMO_BASE_URL": "http://kommo.test",
            "KOMMO_TOKEN": SIM_TOKEN,
            "KOMMO_RATE_LIMIT": "50",
        },
        Needs.DATABASE | Needs.REDIS | Needs.KOMMO | needs,
    )


async def run_worker_burst(settings: Settings, sim: Simulator, timeout: float = 90) -> None:
    """Run one worker until its queue is empty (no cron: the tests drive reconcile ticks)."""
    options = worker_options(settings, kommo_transport=httpx.ASGITransport(app=sim.app))
    options.update(handle_signals=False, cron_jobs=[])
    worker = ArqWorker(**options, burst=True)
    try:
        async with asyncio.timeout(timeout):
            await worker.main()
    finally:
        await worker.close()


async def mark_imported(pool: asyncpg.Pool, account_id: int) -> None:
    """Only webhooks fill the mirror in such tests: every import done, the reconcile's cursors
    far ahead (so neither the backfill, the upgrade, the history import nor a tick runs)."""
    async with pool.acquire() as conn:
        for name in ("backfill", "upgrade_2"):
            await cursors.set_cursor(conn, account_id, name, 0, {"stage": "done", "page": 1})
        await cursors.set_cursor(conn, account_id, "history", 0, {"page": 1, "done": True})
        for name in ("leads", "contacts", "companies", "events"):
            await cursors.set_cursor(conn, account_id, name, 4_000_000_000)
