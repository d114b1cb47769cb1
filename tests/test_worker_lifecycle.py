"""``kommo-sync worker`` as a process, against real services, through every state it can be in:
starting, running, reconnecting, and with PostgreSQL or Redis gone and back.

It stops on SIGTERM and SIGINT within 10 s in each state; an outage is said once when it starts
and once when it ends, naming the service and its host:port; a Redis that starts refusing our
password ends the process with one line and exit 5 instead of a retry loop. Outages are made
with :class:`tests.netfault.Proxy` between the worker and the local PostgreSQL or Redis.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

from kommo_sim import SimConfig, Simulator, serve
from tests.children import Child, child_env, running
from tests.netfault import Proxy
from tests.servers import free_port, redis_server

STOP_WITHIN_S = 10.0
READY = r"worker ready for account \d+"
SIM_TOKEN = "sim-token-lifecycle"
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.fixture
async def sim_url(pool: asyncpg.Pool, redis: Redis) -> AsyncIterator[str]:
    """A small simulated account over real HTTP; the mirror and the Redis prefix start empty."""
    sim = Simulator(SimConfig(leads=5, contacts=3, token=SIM_TOKEN, clock_speed=0.0))
    async with serve(sim) as url:
        yield url
    await sim.aclose()


def worker_env(env: dict[str, str], sim_url: str, **overrides: str) -> dict[str, str]:
    return child_env(
        env,
        REDIS_PREFIX=env["REDIS_PREFIX"] + "lifecycle:",
        KOMMO_BASE_URL=sim_url,
        KOMMO_TOKEN=SIM_TOKEN,
        KOMMO_RATE_LIMIT="50",
        **overrides,
    )


async def until(what: str, check: object, timeout: float = 60.0) -> None:
    """Wait for ``check()`` to hold, re-checking as the event loop runs (the proxy counts in
    this loop), under a deadline."""
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def stopped_cleanly(child: Child, sig: int) -> float:
    code, took = await child.stop(sig, timeout=30)
    assert code == 0, child.output
    assert took < STOP_WITHIN_S, f"took {took:.1f}s to stop on {signal.Signals(sig).name}"
    assert "Traceback" not in child.output, child.output
    return took


@pytest.mark.parametrize("sig", SIGNALS)
async def test_stops_on_a_signal_while_running(env: dict[str, str], sim_url: str, sig: int) -> None:
    async with running("worker", env=worker_env(env, sim_url)) as child:
        await child.line(READY, 60)
        await stopped_cleanly(child, sig)


@pytest.mark.parametrize("sig", SIGNALS)
async def test_stops_on_a_signal_while_starting(env: dict[str, str], sig: int) -> None:
    """Starting: Kommo cannot be reached, so the worker waits it out (named, with host:port)."""
    port = free_port()
    child_environment = worker_env(env, f"http://127.0.0.1:{port}")
    async with running("worker", env=child_environment) as child:
        await child.line(
            rf"cannot reach Kommo at 127\.0\.0\.1:{port} \(GET /api/v4/account: ConnectError "
            r".*\) at start-up; retrying in",
            60,
        )
        await stopped_cleanly(child, sig)


@pytest.mark.parametrize("sig", SIGNALS)
async def test_stops_on_a_signal_while_reconnecting_to_redis(
    env: dict[str, str], sim_url: str, sig: int
) -> None:
    async with Proxy.for_url(env["REDIS_URL"], 6379) as redis_proxy:
        child_environment = worker_env(env, sim_url, REDIS_URL=redis_proxy.url(env["REDIS_URL"]))
        async with running("worker", env=child_environment) as child:
            await child.line(READY, 60)
            await redis_proxy.cut()
            await child.line(
                rf"cannot reach Redis at 127\.0\.0\.1:{redis_proxy.port} .*; reconn", 30
            )
            await stopped_cleanly(child, sig)


async def test_rides_out_a_redis_outage_and_says_so_once_each_way(
    env: dict[str, str], sim_url: str
) -> None:
    async with Proxy.for_url(env["REDIS_URL"], 6379) as redis_proxy:
        child_environment = worker_env(env, sim_url, REDIS_URL=redis_proxy.url(env["REDIS_URL"]))
        async with running("worker", env=child_environment) as child:
            await child.line(READY, 60)
            gone = rf"cannot reach Redis at 127\.0\.0\.1:{redis_proxy.port} \(.*\); reconnecting"
            await redis_proxy.refuse()
            await child.line(gone, 30)
            await until("two reconnect attempts", lambda: redis_proxy.attempts >= 2, 30)
            assert child.count(gone) == 1, child.output
            mark = len(child.lines)
            await redis_proxy.restore()
            await child.line(rf"Redis at 127\.0\.0\.1:{redis_proxy.port} reachable again", 60)
            await child.line(READY, 30, after=mark)  # running again
            assert child.count(gone) == 1 and child.count("reachable again") == 1, child.output
            await stopped_cleanly(child, signal.SIGTERM)


async def test_rides_out_a_postgres_outage_and_says_so_once_each_way(
    env: dict[str, str], sim_url: str
) -> None:
    """Jobs meet Postgres down every second (the reconcile cron): one line when it goes, one
    when it is back, the right service named, no traceback, no lost-Redis story."""
    async with Proxy.for_url(env["DATABASE_URL"], 5432) as pg_proxy:
        child_environment = worker_env(env, sim_url, DATABASE_URL=pg_proxy.url(env["DATABASE_URL"]))
        async with running("worker", env=child_environment) as child:
            await child.line(READY, 60)
            gone = rf"cannot reach PostgreSQL at 127\.0\.0\.1:{pg_proxy.port} \(.*\); jobs will"
            await pg_proxy.refuse()
            await child.line(gone, 30)
            await until("three jobs meeting Postgres down", lambda: pg_proxy.attempts >= 3, 30)
            assert child.count(gone) == 1, child.output
            await pg_proxy.restore()
            await child.line(rf"PostgreSQL at 127\.0\.0\.1:{pg_proxy.port} reachable again", 30)
            assert child.count(gone) == 1, child.output
            assert child.count("reachable again") == 1, child.output
            assert not re.search("Redis", child.output), child.output
            assert "Traceback" not in child.output, child.output
            await stopped_cleanly(child, signal.SIGTERM)


async def test_stops_on_a_signal_while_postgres_is_down(env: dict[str, str], sim_url: str) -> None:
    async with Proxy.for_url(env["DATABASE_URL"], 5432) as pg_proxy:
        child_environment = worker_env(env, sim_url, DATABASE_URL=pg_proxy.url(env["DATABASE_URL"]))
        async with running("worker", env=child_environment) as child:
            await child.line(READY, 60)
            await pg_proxy.cut()
            await child.line(r"cannot reach PostgreSQL at .*; jobs will retry", 30)
            await stopped_cleanly(child, signal.SIGTERM)


async def test_gives_up_when_redis_starts_refusing_our_password(
    env: dict[str, str], sim_url: str
) -> None:
    """Reconnecting with a password Redis no longer accepts: one line and exit 5, at once."""
    with redis_server("--requirepass", "the-old-password") as port:
        url = f"redis://:the-old-password@127.0.0.1:{port}/0"
        async with running("worker", env=worker_env(env, sim_url, REDIS_URL=url)) as child:
            await child.line(READY, 60)
            admin: Redis = Redis.from_url(url)
            try:
                await admin.config_set("requirepass", "a-new-password")
                await admin.client_kill_filter(_type="normal")  # drops the worker's connections
            finally:
                await admin.aclose()
            code = await child.exit_code(30)
        expected = (
            f"kommo-sync: Redis at 127.0.0.1:{port} refused our credentials "
            "(AuthenticationError: invalid username-password pair or user is disabled.)"
        )
        assert code == 5, child.output
        assert child.lines[-1] == expected, child.output
        assert "the-old-password" not in child.output and "a-new-password" not in child.output
        assert "Traceback" not in child.output, child.output
