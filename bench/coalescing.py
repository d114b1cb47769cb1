"""Issue #5: a bulk change of 1,000 leads costs about ⌈1,000/250⌉ Kommo calls, not 1,000.

In process: the simulator (2,000 leads, 1,000 contacts, 7 requests/s) sends its webhooks to the
real web app through ``httpx.ASGITransport``; the worker is arq with the service's own
``worker_options`` (``KOMMO_RATE_LIMIT=7``). After a backfill, the same 1,000 leads are changed
three ways:

1. one ``bulk_update_leads`` of 1,000, in the bodies the simulator makes of it (Kommo groups
   several entities per body);
2. 40 bulk changes of 25 leads (40 bodies), all delivered, then the worker drains (burst);
3. 100 bulk changes of 10 leads with the worker already running, as in production.

Counted: the simulator's API calls from the first webhook until all 1,000 leads are mirrored
(or the worker is idle), and the ``lead_update`` messages published. Baseline: one call per
changed lead, what the seed system made.

    python -m bench.coalescing [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import httpx
from arq.worker import Worker as ArqWorker
from redis.asyncio import Redis

from bench.common import (
    FIRST_LEAD_ID,
    Report,
    Row,
    api_calls,
    at_most,
    main,
    scratch,
)
from devenv.asgi import lifespan
from kommo_sim import SimConfig, Simulator
from service.keys import Keys
from service.settings import Needs, Settings
from service.web.app import create_app
from workers.main import worker_options

BENCH = "coalescing (#5)"
EXCLUDE = ("GET /api/v4/account",)  # the worker's start-up check, not the fetch


def _options(settings: Settings, sim: Simulator) -> dict[str, object]:
    options = worker_options(settings, kommo_transport=httpx.ASGITransport(app=sim.app))
    options.update(handle_signals=False, cron_jobs=[])
    return options


async def drain_burst(settings: Settings, sim: Simulator) -> None:
    """Run the queued jobs (the backfill, or the webhook fetches) until the queue is empty."""
    worker = ArqWorker(**_options(settings, sim), burst=True)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(120):
            await worker.main()
    finally:
        await worker.close()


@contextlib.asynccontextmanager
async def worker_running(settings: Settings, sim: Simulator) -> AsyncIterator[None]:
    worker = ArqWorker(**_options(settings, sim))  # type: ignore[arg-type]
    task = asyncio.create_task(worker.main())
    try:
        async with asyncio.timeout(30):
            while "worker" not in worker.ctx:  # on_startup has finished
                await asyncio.sleep(0.01)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


class Published:
    """Counts the ``lead_update`` messages on Redis."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis, self.channel, self.count = redis, channel, 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Published:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)

        async def listen() -> None:
            try:
                async for message in pubsub.listen():
                    self.count += message["type"] == "message"
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

        self._task = asyncio.create_task(listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # the last messages
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def mirrored(pool: asyncpg.Pool, ids: Sequence[int], price: int) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM leads WHERE id = ANY($1::bigint[]) AND price = $2", list(ids), price
    )
    return int(value)


async def run(quick: bool) -> Report:
    n = 1000
    ids = list(range(FIRST_LEAD_ID, FIRST_LEAD_ID + n))
    rows: list[Row] = []
    notes: list[str] = []
    async with scratch("coalescing") as s:
        env = s.env(KOMMO_BASE_URL="http://kommo.test", KOMMO_RATE_LIMIT="7")
        settings = Settings.from_env(env, Needs.DATABASE | Needs.REDIS | Needs.KOMMO | Needs.WEB)
        redis = Redis.from_url(s.redis_url)
        pool = await asyncpg.create_pool(s.db_url, min_size=1, max_size=2)
        try:
            async with lifespan(create_app(settings)) as app:
                sim = Simulator(
                    SimConfig(
                        seed=5,
                        leads=2000,
                        contacts=1000,
                        token=s.sim_token,
                        webhooks=[f"http://sync.test{s.hook_path()}"],
                    ),
                    webhook_transport=httpx.ASGITransport(app=app),
                )
                try:
                    await drain_burst(settings, sim)  # the backfill
                    scenarios = [
                        ("one bulk change as the simulator sends it", n, False),
                        ("40 bodies of 25, worker drains after delivery", 25, False),
                        ("100 bodies of 10, worker running during delivery", 10, True),
                    ]
                    for k, (label, size, live) in enumerate(scenarios):
                        price = 900_000 + k
                        await asyncio.sleep(1.1)  # a fresh second: a new updated_at for all
                        sim.counters.clear()
                        attempts = len(sim.webhooks.attempts)
                        started = time.monotonic()
                        async with Published(redis, Keys(s.prefix).lead_update) as published:
                            if live:
                                async with worker_running(settings, sim):
                                    for i in range(0, n, size):
                                        sim.bulk_update_leads(ids[i : i + size], price=price)
                                    await sim.webhooks.drain()
                                    deadline = time.monotonic() + 60
                                    while (
                                        await mirrored(pool, ids, price) < n
                                        and time.monotonic() < deadline
                                    ):
                                        await asyncio.sleep(0.05)
                            else:
                                for i in range(0, n, size):
                                    sim.bulk_update_leads(ids[i : i + size], price=price)
                                await sim.webhooks.drain()
                                await drain_burst(settings, sim)
                        elapsed = time.monotonic() - started
                        sent = sim.webhooks.attempts[attempts:]
                        answers = sorted({a.status for a in sent})
                        calls = api_calls(sim.counters, exclude=EXCLUDE)
                        done = await mirrored(pool, ids, price)
                        problem = (
                            ""
                            if done == n
                            else (f"only {done:,} mirrored; webhook answers {answers}")
                        )
                        if size == n:
                            label = f"{label} ({len(sent)} bodies)"
                        rows.append(
                            Row(
                                BENCH,
                                f"Kommo calls for {n:,} changed leads: {label}",
                                calls,
                                "calls",
                                n,
                                "one call per lead",
                                at_most(6, "calls"),
                                problem,
                            )
                        )
                        largest = max(len(a.body) for a in sent)
                        notes.append(
                            f"{label}: {len(sent)} webhook bodies (largest {largest:,} bytes, "
                            f"answered {answers}); {calls} Kommo calls; {done:,} of {n:,} leads "
                            f"mirrored and {published.count:,} lead_update messages in "
                            f"{elapsed:.1f} s. By endpoint: "
                            + ", ".join(
                                f"{e} {st}: {c}" for (e, st), c in sorted(sim.counters.items())
                            )
                        )
                finally:
                    await sim.aclose()
        finally:
            await pool.close()
            await redis.aclose()
    return Report(rows, notes)


if __name__ == "__main__":
    main(run, __doc__)
