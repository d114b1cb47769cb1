"""Issue #12: a webhook flood of ids nobody has must not starve reconcile or readiness.

Processes as in production, on loopback: the simulator (``python -m kommo_sim``, 2,000 leads,
1,000 contacts, 7 requests/s), ``kommo-sync web`` and one ``kommo-sync worker``
(``KOMMO_RATE_LIMIT=7``, ``RECONCILE_INTERVAL=1`` so that a tick a second is expected). After
the backfill, for the same length of time each: a quiet phase (the baseline), then a flood of
26,000 lead ids the account does not have, posted as 1 MiB bodies with the webhook secret (the
attack of the issue). Measured in both phases: reconcile ticks run (the cron job's counter in
Redis) against the ticks the interval asks for, ``/readyz`` of the web process polled every
100 ms, the Kommo calls made and any 429.

    python -m bench.flood [--quick]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from bench.common import (
    PYTHON,
    Report,
    Row,
    SimControl,
    api_calls,
    at_least,
    at_most,
    free_port,
    main,
    running,
    scratch,
    sim_args,
    statuses,
    wait_backfilled,
    wait_http,
)
from service.keys import Keys

BENCH = "hint flood (#12)"
FLOOD = 26_000
UNKNOWN = 90_000_000  # above every id the simulator hands out
MAX_BODY = 1 << 20


def flood_bodies(count: int, now: int) -> list[bytes]:
    """``leads[update][i][id]=…`` bodies of at most 1 MiB naming ``count`` unknown ids."""
    bodies, parts, size = [], [b"account[id]=31000001&account[subdomain]=examplecorp"], 0
    for i in range(count):
        part = f"leads[update][{i}][id]={UNKNOWN + i}&leads[update][{i}][last_modified]={now}"
        if size + len(part) + 1 > MAX_BODY - 64:
            bodies.append(b"&".join(parts))
            parts, size = [b"account[id]=31000001&account[subdomain]=examplecorp"], 0
        parts.append(part.encode())
        size += len(part) + 1
    bodies.append(b"&".join(parts))
    return bodies


@dataclass
class Phase:
    seconds: float
    ticks: int
    ready_polls: int
    not_ready: int
    calls: int
    too_many: int


async def observe(
    seconds: float, redis: Redis, runs_key: str, web_url: str, control: SimControl
) -> Phase:
    """Ticks run, /readyz answers and Kommo calls over ``seconds``."""
    await control.reset_counters()
    first = int(await redis.get(runs_key) or 0)
    polls = bad = 0
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while (elapsed := time.monotonic() - started) < seconds:
            polls += 1
            try:
                bad += (await client.get(f"{web_url}/readyz")).status_code != 200
            except httpx.HTTPError:
                bad += 1
            await asyncio.sleep(0.1)
    ticks = int(await redis.get(runs_key) or 0) - first
    counters = await control.counters()
    return Phase(elapsed, ticks, polls, bad, api_calls(counters), statuses(counters, 429))


async def run(quick: bool) -> Report:
    seconds = 15.0 if quick else 40.0
    async with scratch("flood") as s:
        sim_port, web_port = free_port(), free_port()
        sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        env = s.env(
            KOMMO_BASE_URL=sim_url,
            KOMMO_RATE_LIMIT="7",
            RECONCILE_INTERVAL="1",
            PORT=str(web_port),
        )
        redis = Redis.from_url(s.redis_url)
        control = SimControl(sim_url, s.sim_token)
        runs_key = Keys(s.prefix).reconcile_runs
        try:
            async with (
                running("flood-sim", sim_args(sim_port, s.sim_token, 2000, 1000), env) as sim,
                running(
                    "flood-web", [PYTHON, "-m", "service", "web", "--host", "127.0.0.1"], env
                ) as web,
            ):
                headers = {"Authorization": f"Bearer {s.sim_token}"}
                await wait_http(f"{sim_url}/_sim/counters", sim, 60, headers)
                await wait_http(f"{web_url}/readyz", web, 60)
                async with running("flood-worker", [PYTHON, "-m", "service", "worker"], env) as w:
                    await wait_backfilled(s.db_url, 180, w)
                    quiet = await observe(seconds, redis, runs_key, web_url, control)
                    bodies = flood_bodies(FLOOD, int(time.time()))
                    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
                        posted = time.monotonic()
                        answers = [
                            (await client.post(web_url + s.hook_path(), content=b)).status_code
                            for b in bodies
                        ]
                        post_s = time.monotonic() - posted
                    flood = await observe(seconds, redis, runs_key, web_url, control)
        finally:
            await control.aclose()
            await redis.aclose()
    expected = seconds  # one tick a second
    share = flood.ticks / expected
    rows = [
        Row(
            BENCH,
            f"reconcile ticks run during a {FLOOD:,}-id flood, share of the interval's",
            share * 100,
            "%",
            quiet.ticks / expected * 100,
            "the same span without the flood",
            at_least(90, "%"),
        ),
        Row(
            BENCH,
            "/readyz answers other than 200 during the flood",
            flood.not_ready,
            "",
            None,
            f"of {flood.ready_polls} polls every 100 ms",
            at_most(0),
        ),
        Row(
            BENCH,
            "Kommo calls during the flood (unknown ids: read once, not retried)",
            flood.calls,
            "calls",
            quiet.calls,
            "the same span without the flood",
            None,
        ),
        Row(
            BENCH,
            "HTTP 429 received (both phases)",
            quiet.too_many + flood.too_many,
            "",
            None,
            "",
            at_most(0),
        ),  # fmt: skip
    ]

    def seen(p: Phase) -> str:
        ready = f"/readyz {p.ready_polls - p.not_ready}/{p.ready_polls} 200"
        return f"{p.ticks} ticks, {p.calls} calls, {ready}"

    notes = [
        f"{len(bodies)} bodies of up to 1 MiB posted in {post_s:.1f} s, answered "
        f"{sorted(set(answers))}; each phase {seconds:.0f} s at RECONCILE_INTERVAL=1. "
        f"Quiet: {seen(quiet)}. Flood: {seen(flood)}."
    ]
    return Report(rows, notes)


if __name__ == "__main__":
    main(run, __doc__)
