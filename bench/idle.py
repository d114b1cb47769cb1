"""Issue #4: what reconcile costs in Kommo calls when nothing changes.

The simulator (``python -m kommo_sim``, 2,000 leads, 1,000 contacts) and one worker
(``kommo-sync worker``) as processes. After the backfill, the simulator's request counters are
reset right after a tick has finished and read right after the N-th following tick has
finished (N = 24, a whole rotation of the slow items; 12 with ``--quick``), with
``RECONCILE_INTERVAL=1`` so that this takes N seconds instead of 5·N: calls per minute at the
default 5 s interval are then calls per tick × 12 (what a tick costs does not depend on the
interval). Baseline: the design's three calls per tick (leads, contacts, events), × 12.

    python -m bench.idle [--quick]
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from bench.common import (
    PYTHON,
    Report,
    Row,
    SimControl,
    api_calls,
    at_most,
    free_port,
    main,
    running,
    scratch,
    sim_args,
    wait_backfilled,
    wait_http,
)
from service.keys import Keys

BENCH = "idle reconcile (#4)"


async def wait_runs(redis: Redis, key: str, above: int, timeout: float) -> int:
    """Poll the tick counter until it exceeds ``above``; return it."""
    deadline = time.monotonic() + timeout
    while (runs := int(await redis.get(key) or 0)) <= above:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reconcile ticks stopped at {runs}")
        await asyncio.sleep(0.01)
    return runs


async def run(quick: bool) -> Report:
    ticks = 12 if quick else 24
    async with scratch("idle") as s:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        env = s.env(KOMMO_BASE_URL=sim_url, KOMMO_RATE_LIMIT="7", RECONCILE_INTERVAL="1")
        redis = Redis.from_url(s.redis_url)
        control = SimControl(sim_url, s.sim_token)
        runs_key = Keys(s.prefix).reconcile_runs
        try:
            async with running("idle-sim", sim_args(sim_port, s.sim_token, 2000, 1000), env) as sim:
                await wait_http(
                    f"{sim_url}/_sim/counters", sim, 60, {"Authorization": f"Bearer {s.sim_token}"}
                )
                async with running(
                    "idle-worker", [PYTHON, "-m", "service", "worker"], env
                ) as worker:
                    await wait_backfilled(s.db_url, 120, worker)
                    first = await wait_runs(redis, runs_key, 1, 30)  # a tick after the backfill
                    first = await wait_runs(redis, runs_key, first, 30)  # ... just finished
                    await control.reset_counters()
                    started = time.monotonic()
                    last = first
                    while last < first + ticks:
                        last = await wait_runs(redis, runs_key, last, 30)
                    counters = await control.counters()
                    elapsed = time.monotonic() - started
        finally:
            await control.aclose()
            await redis.aclose()
    calls = api_calls(counters)
    per_tick = calls / (last - first)
    per_minute = per_tick * 60 / 5
    return Report(
        [
            Row(
                BENCH,
                "Kommo calls per minute, no changes, RECONCILE_INTERVAL=5",
                per_minute,
                "calls/min",
                3 * 12,
                "3 calls/tick × 12 ticks",
                at_most(36, "calls/min"),
            )
        ],
        [
            f"Idle reconcile: {calls} calls over {last - first} ticks in {elapsed:.1f} s at "
            f"RECONCILE_INTERVAL=1 ({per_tick:.2f} calls/tick, × 12 ticks/min at 5 s). "
            "By endpoint: " + ", ".join(f"{e} {st}: {n}" for (e, st), n in sorted(counters.items()))
        ],
    )


if __name__ == "__main__":
    main(run, __doc__)
