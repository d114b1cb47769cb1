"""Issue #4: the backfill at Kommo's real limit, and issue #5's priority probe during it.

Processes as in production, on loopback: the simulator (``python -m kommo_sim``, 100,000 leads and
50,000 contacts, 7 requests/s), the web process (``kommo-sync web``, which receives the
simulator's webhooks) and one worker (``kommo-sync worker`` with ``KOMMO_RATE_LIMIT=7``, which
queues the backfill at start-up). The worker is started through ``_worker`` below: the same
command, with ``Mirror.apply`` and the ``service.store`` functions wrapped in timers that add
their time to a Redis hash (bench-only; the service is not changed).

Figures: wall time against the rate-limit bound (calls made ÷ 7), rows written per second of
time inside ``Mirror.apply`` (less its Redis publish) against plain ``executemany`` of the same
rows measured afterwards in the same database, peak worker RSS, 429s, and the time from a lead
change in the simulator to its ``lead_update`` (source ``webhook``) on Redis while the backfill
runs, against the same probe once the worker is idle.

    python -m bench.backfill [--quick]
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import importlib
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bench.common import (
    FIRST_LEAD_ID,
    PYTHON,
    Report,
    Row,
    RssSampler,
    Scratch,
    SimControl,
    api_calls,
    at_least,
    at_most,
    backfill_stage,
    fmt,
    free_port,
    main,
    quantile,
    ratio_at_most,
    running,
    scratch,
    sim_args,
    statuses,
    vm_hwm_mb,
    wait_http,
)
from service.keys import Keys

BENCH = "backfill (#4)"
RATE = 7
STATS_ENV = "BENCH_STATS_KEY"
STORE_FUNCTIONS = {  # module of service.store -> the functions timed in it
    "entities": ("upsert", "tombstone", "analyze"),
    "links": ("upsert_tags", "_replace_tags", "_replace_links", "_replace_phones"),
    "leadview": ("lock_account", "leads_showing", "leads_with_tags", "refresh_leads"),
}


# ---------------------------------------------------------------- the instrumented worker


def instrumented_worker() -> int:
    """``kommo-sync worker`` with timers around ``Mirror.apply`` and the store functions."""
    from service import store
    from service.cli import main as cli_main
    from service.kommo.budget import Priority, RateBudget
    from service.kommo.wire import Wire
    from service.store.leadview import LeadChange
    from service.sync.backfill import Backfill
    from service.sync.mirror import Batch, Mirror, Outcome

    key = os.environ[STATS_ENV]
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    publishing: contextvars.ContextVar[list[float]] = contextvars.ContextVar("publishing")

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                spent[f"fn:{name}"] += time.perf_counter() - started

        return wrapper

    for module_name, names in STORE_FUNCTIONS.items():
        module = importlib.import_module(f"{store.__name__}.{module_name}")
        for name in names:
            if hasattr(module, name):  # the store evolves: time what exists
                setattr(module, name, timed(name, getattr(module, name)))
    apply, publish, run = Mirror.apply, Mirror.publish, Backfill.run
    acquire, call = RateBudget.acquire, Wire.call

    async def timed_acquire(self: RateBudget, priority: Priority = Priority.WEBHOOK) -> float:
        started = time.perf_counter()
        try:
            return await acquire(self, priority)
        finally:
            spent[f"budget_wait:{priority.name}"] += time.perf_counter() - started

    async def timed_call(
        self: Wire, method: str, path: str, priority: Priority, **kwargs: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            return await call(self, method, path, priority, **kwargs)
        finally:
            spent[f"kommo_call:{priority.name}"] += time.perf_counter() - started
            spent[f"kommo_calls:{priority.name}"] += 1

    async def timed_publish(self: Mirror, changes: Sequence[LeadChange]) -> None:
        started = time.perf_counter()
        try:
            await publish(self, changes)
        finally:
            with contextlib.suppress(LookupError):
                publishing.get()[0] += time.perf_counter() - started

    async def timed_apply(self: Mirror, batch: Batch, source: str) -> Outcome:
        acc = [0.0]
        publishing.set(acc)
        started = time.perf_counter()
        outcome = await apply(self, batch, source)
        elapsed = time.perf_counter() - started
        pipe = self.res.redis.pipeline(transaction=False)
        pipe.hincrbyfloat(key, f"{source}:apply_s", elapsed)
        pipe.hincrbyfloat(key, f"{source}:publish_s", acc[0])
        pipe.hincrby(key, f"{source}:rows", sum(len(r) for r in batch.records.values()))
        pipe.hincrby(key, f"{source}:batches", 1)
        for name, seconds in spent.items():
            pipe.hincrbyfloat(key, name, seconds)
        spent.clear()
        await pipe.execute()
        return outcome

    async def timed_run(self: Backfill, *, restart: bool = False, tick: Any = None) -> Any:
        await self.res.redis.hset(key, "started", repr(time.time()))  # type: ignore[misc]
        try:
            return await run(self, restart=restart, tick=tick)
        finally:
            await self.res.redis.hset(key, "finished", repr(time.time()))  # type: ignore[misc]

    Mirror.apply = timed_apply  # type: ignore[method-assign]
    Mirror.publish = timed_publish  # type: ignore[method-assign]
    Backfill.run = timed_run  # type: ignore[method-assign]
    RateBudget.acquire = timed_acquire  # type: ignore[method-assign]
    Wire.call = timed_call  # type: ignore[method-assign]
    return cli_main(["worker"])


# ---------------------------------------------------------------- the orchestrator


class Probes:
    """Change a lead in the simulator; time until its webhook-sourced ``lead_update``."""

    def __init__(self, redis: Redis, channel: str, control: SimControl) -> None:
        self.redis, self.channel, self.control = redis, channel, control
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.messages = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probes:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen(pubsub))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self, pubsub: Any) -> None:
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                self.messages += 1
                data = message["data"]
                if b'"source": "webhook"' not in data:
                    continue  # the backfill's own messages: ~1,000/s, not parsed
                now = time.monotonic()
                lead_id = int(json.loads(data)["data"]["lead"]["id"])
                future = self.waiting.pop(lead_id, None)
                if future is not None and not future.done():
                    future.set_result(now)
        finally:
            await pubsub.aclose()

    async def probe(self, lead_id: int, price: int, timeout: float = 10.0) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[lead_id] = future
        started = time.monotonic()
        await self.control.mutate("update_lead", lead_id=lead_id, price=price)
        try:
            return await asyncio.wait_for(future, timeout) - started
        except TimeoutError:
            self.waiting.pop(lead_id, None)
            return float("nan")


async def executemany_rate(db_url: str, limit: int) -> tuple[float, int]:
    """The design's baseline: the same lead rows upserted with ``executemany``, 250 a page."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            """SELECT account_id, id, name, price, updated_at, custom_fields::text,
                      raw::text FROM leads ORDER BY id LIMIT $1""",
            limit,
        )
        await conn.execute(
            """CREATE TABLE bench_executemany (account_id bigint, id bigint, name text,
                   price bigint, updated_at timestamptz, custom_fields jsonb, raw jsonb,
                   PRIMARY KEY (account_id, id))"""
        )
        sql = """INSERT INTO bench_executemany AS b
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)
                 ON CONFLICT (account_id, id) DO UPDATE SET name = EXCLUDED.name,
                     price = EXCLUDED.price, updated_at = EXCLUDED.updated_at,
                     custom_fields = EXCLUDED.custom_fields, raw = EXCLUDED.raw
                 WHERE b.raw IS DISTINCT FROM EXCLUDED.raw"""
        records = [tuple(r) for r in rows]
        started = time.perf_counter()
        for i in range(0, len(records), 250):
            async with conn.transaction():
                await conn.executemany(sql, records[i : i + 250])
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_executemany")
    finally:
        await conn.close()
    return len(records) / elapsed, len(records)


async def probe_during(
    probes: Probes, s: Scratch, leads: int, gap: float, results: list[tuple[int, float]]
) -> None:
    """One probe every ``gap`` seconds while the backfill runs, alternating a lead the
    backfill has already written and one it has not reached yet."""
    i = 0
    while await backfill_stage(s.db_url) != "done":
        await asyncio.sleep(gap)
        if await backfill_stage(s.db_url) == "done":
            return
        lead_id = FIRST_LEAD_ID + (i if i % 2 == 0 else leads - 1 - i)
        results.append((lead_id, await probes.probe(lead_id, 700_000 + i)))
        i += 1


async def run(quick: bool) -> Report:
    leads, contacts = (10_000, 5_000) if quick else (100_000, 50_000)
    gap = 2.0 if quick else 8.0
    async with scratch("backfill") as s:
        sim_port, web_port = free_port(), free_port()
        sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        stats_key = s.key("bench:stats")
        env = s.env(
            KOMMO_BASE_URL=sim_url,
            KOMMO_RATE_LIMIT=str(RATE),
            PORT=str(web_port),
            RECONCILE_INTERVAL="5",
            **{STATS_ENV: stats_key},
        )
        auth = {"Authorization": f"Bearer {s.sim_token}"}
        redis = Redis.from_url(s.redis_url)
        control = SimControl(sim_url, s.sim_token)
        during: list[tuple[int, float]] = []
        idle: list[float] = []
        try:
            async with (
                running(
                    "backfill-sim",
                    sim_args(sim_port, s.sim_token, leads, contacts, [web_url + s.hook_path()]),
                    env,
                ) as sim,
                running(
                    "backfill-web", [PYTHON, "-m", "service", "web", "--host", "127.0.0.1"], env
                ) as web,
            ):
                await wait_http(f"{sim_url}/_sim/counters", sim, 180, auth)
                await wait_http(f"{web_url}/healthz", web)
                await control.reset_counters()
                async with (
                    Probes(redis, Keys(s.prefix).lead_update, control) as probes,
                    running(
                        "backfill-worker", [PYTHON, "-m", "bench.backfill", "_worker"], env
                    ) as worker,
                    RssSampler(worker.pid) as rss,
                ):
                    deadline = time.monotonic() + (120 if quick else 420)
                    while not await redis.hexists(stats_key, "started"):
                        if worker.returncode is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"the backfill did not start; see {worker.log}")
                        await asyncio.sleep(0.05)
                    rss.sample()
                    start_rss = rss.peak_mb
                    prober = asyncio.create_task(probe_during(probes, s, leads, gap, during))
                    while not await redis.hexists(stats_key, "finished"):
                        if worker.returncode is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"the backfill did not finish; see {worker.log}")
                        await asyncio.sleep(0.1)
                    await prober
                    counters = await control.counters()
                    peak_mb = max(rss.peak_mb, vm_hwm_mb(worker.pid))
                    worker_cpu = sum(psutil.Process(worker.pid).cpu_times()[:2])
                    await asyncio.sleep(1.0)
                    for i in range(3):  # the same probe with the worker idle: the baseline
                        idle.append(await probes.probe(FIRST_LEAD_ID + leads // 2 + i, 800_000 + i))
                        await asyncio.sleep(0.5)
            stats = {k.decode(): float(v) for k, v in (await redis.hgetall(stats_key)).items()}
        finally:
            await control.aclose()
            await redis.aclose()
        baseline_rate, baseline_rows = await executemany_rate(s.db_url, 25_000)

    wall = stats["finished"] - stats["started"]
    calls = api_calls(counters, exclude=("GET /api/v4/account",))
    bound = calls / RATE
    db_seconds = stats["backfill:apply_s"] - stats["backfill:publish_s"]
    rows = stats["backfill:rows"]
    probe_values = [v for _, v in during]
    worst = max((v for v in probe_values if not math.isnan(v)), default=float("nan"))
    if any(math.isnan(v) for v in probe_values):
        worst = float("inf")
    report = Report(
        [
            Row(
                BENCH,
                f"wall time, {leads:,} leads + {contacts:,} contacts",
                wall,
                "s",
                bound,
                f"bound: {calls} calls ÷ {RATE}/s",
                ratio_at_most(1.10),
            ),
            Row(
                BENCH,
                "rows written per second of time in Mirror.apply",
                rows / db_seconds,
                "rows/s",
                baseline_rate,
                "executemany, same rows",
                at_least(20_000, "rows/s"),
            ),
            Row(
                BENCH,
                "peak worker RSS",
                peak_mb,
                "MB",
                start_rss,
                "after start-up",
                at_most(300, "MB"),
            ),
            Row(BENCH, "HTTP 429 received", statuses(counters, 429), "", None, "", at_most(0)),
            Row(
                "priority (#5)",
                f"webhook → lead_update during the backfill (worst of {len(probe_values)})",
                worst,
                "s",
                quantile(idle, 0.5),
                "worker idle, p50",
                at_most(2.0, "s"),
            ),
        ]
    )
    fn = {k[3:]: v for k, v in stats.items() if k.startswith("fn:")}
    n_calls = stats.get("kommo_calls:BACKFILL", 0.0) or float("nan")
    call_ms = 1000 * stats.get("kommo_call:BACKFILL", 0.0) / n_calls
    wait_ms = 1000 * stats.get("budget_wait:BACKFILL", 0.0) / n_calls
    breakdown = ", ".join(
        f"{name} {1000 * seconds / stats['backfill:batches']:.1f}"
        for name, seconds in sorted(fn.items(), key=lambda kv: -kv[1])
    )
    report.notes += [
        f"Backfill: {int(rows):,} rows in {wall:.1f} s ({rows / wall:,.0f} rows/s end to end); "
        f"{calls} Kommo calls ({calls / wall:.2f}/s, limit {RATE}/s); by status: "
        + ", ".join(f"{e} {st}: {n}" for (e, st), n in sorted(counters.items())),
        f"Mirror.apply: {int(stats['backfill:batches'])} batches, "
        f"{1000 * stats['backfill:apply_s'] / stats['backfill:batches']:.1f} ms each, of which "
        f"publish {1000 * stats['backfill:publish_s'] / stats['backfill:batches']:.1f} ms; "
        f"{db_seconds:.1f} s in all ({100 * db_seconds / wall:.0f}% of the wall time). "
        f"Per batch, ms (nested calls included in their callers): {breakdown}",
        f"Backfill-priority Kommo calls, as the worker saw them: {n_calls:.0f}, {call_ms:.0f} ms "
        f"each on average, of which {wait_ms:.0f} ms waiting for the shared budget (the rest: "
        "request, simulator, response parsing).",
        f"Worker CPU: {worker_cpu:.1f} s over {wall:.1f} s; RSS {start_rss:.0f} MB at the "
        f"start of the backfill, peak {peak_mb:.0f} MB (VmHWM and {rss.samples} samples).",
        "Probes during the backfill (lead id: seconds): "
        + ", ".join(f"{lead}: {fmt(v)}" for lead, v in during)
        + f"; idle worker: {', '.join(fmt(v) for v in idle)}.",
        f"Baseline: executemany of {baseline_rows:,} of the same lead rows (1 KB raw jsonb) "
        f"into a scratch table, 250 a transaction: {baseline_rate:,.0f} rows/s.",
    ]
    return report


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["_worker"]:
        sys.exit(instrumented_worker())
    main(run, __doc__)
