"""Issue #5: from a change in Kommo to the consumer's ``lead_update``, at 50 changes a second.

Processes as in production, on loopback: the simulator (``python -m kommo_sim``, 2,000 leads, 1,000
contacts, 7 requests/s) sending its webhooks to ``kommo-sync web``, and one ``kommo-sync
worker`` (``KOMMO_RATE_LIMIT=7``, ``RECONCILE_INTERVAL=5``). The consumer is a WebSocket client
on the gateway's ``/ws`` (and, alongside, a plain Redis subscriber on ``lead_update``).

The change time is this process's monotonic clock when it calls the simulator's mutation
(``POST /_sim/mutations/update_lead``, a new price for a lead not changed before); the delivery
time is when the consumer receives the ``lead_update`` for that lead. Phase 1: webhooks on.
Phase 2, the baseline (the seed system's way): the webhook subscription is removed and the
same rate of changes is picked up by the 5-second reconcile poll alone.

    python -m bench.freshness [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis
from websockets.asyncio.client import connect

from bench.common import (
    FIRST_LEAD_ID,
    PYTHON,
    Report,
    Row,
    SimControl,
    api_calls,
    at_most,
    free_port,
    main,
    quantile,
    running,
    scratch,
    sim_args,
    wait_backfilled,
    wait_http,
)
from service.keys import Keys

BENCH = "freshness (#5)"
RATE = 50.0


@dataclass
class Consumer:
    """Delivery times of ``lead_update`` by lead id, from /ws and from Redis."""

    ws: dict[int, float] = field(default_factory=dict)
    redis: dict[int, float] = field(default_factory=dict)
    sources: Counter[str] = field(default_factory=Counter)

    async def read_ws(self, url: str) -> None:
        async with connect(url, compression=None, max_queue=None) as ws:
            async for frame in ws:
                now = time.monotonic()
                message = json.loads(frame)
                if message.get("event") == "lead_update":
                    lead_id = int(message["data"]["lead"]["id"])
                    if lead_id not in self.ws:
                        self.ws[lead_id] = now
                        self.sources[message["data"]["source"]] += 1

    async def read_redis(self, redis: Redis, channel: str) -> None:
        pubsub = redis.pubsub()
        await pubsub.subscribe(channel)
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    now = time.monotonic()
                    lead_id = int(json.loads(message["data"])["data"]["lead"]["id"])
                    self.redis.setdefault(lead_id, now)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def changes(control: SimControl, ids: list[int], rate: float, price: int) -> dict[int, float]:
    """Change each lead once, ``rate`` a second on schedule; return the change times."""
    changed: dict[int, float] = {}
    started = time.monotonic()

    async def change(lead_id: int) -> None:
        changed[lead_id] = time.monotonic()
        await control.mutate("update_lead", lead_id=lead_id, price=price)

    tasks = []
    for i, lead_id in enumerate(ids):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(change(lead_id)))
    await asyncio.gather(*tasks)
    return changed


@dataclass
class Phase:
    ws: list[float]  # seconds from change to delivery, per delivered lead
    redis: list[float]
    lost: int
    calls: int  # Kommo API calls while the changes were made and delivered
    seconds: float


async def phase(
    control: SimControl, consumer: Consumer, ids: list[int], price: int, tail: float
) -> Phase:
    before = api_calls(await control.counters())
    started = time.monotonic()
    changed = await changes(control, ids, RATE, price)
    deadline = time.monotonic() + tail
    while time.monotonic() < deadline and not all(i in consumer.ws for i in ids):
        await asyncio.sleep(0.05)
    calls = api_calls(await control.counters()) - before
    ws = [consumer.ws[i] - t for i, t in changed.items() if i in consumer.ws]
    redis = [consumer.redis[i] - t for i, t in changed.items() if i in consumer.redis]
    return Phase(ws, redis, len(ids) - len(ws), calls, time.monotonic() - started)


def _ms(values: list[float], q: float) -> float:
    return 1000 * quantile(values, q)


async def run(quick: bool) -> Report:
    seconds = 8.0 if quick else 20.0
    per_phase = int(RATE * seconds)
    async with scratch("freshness") as s:
        sim_port, web_port = free_port(), free_port()
        sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        hook = web_url + s.hook_path()
        env = s.env(
            KOMMO_BASE_URL=sim_url, KOMMO_RATE_LIMIT="7", RECONCILE_INTERVAL="5", PORT=str(web_port)
        )
        redis = Redis.from_url(s.redis_url)
        control = SimControl(sim_url, s.sim_token)
        consumer = Consumer()
        readers: list[asyncio.Task[None]] = []
        try:
            async with (
                running(
                    "freshness-sim",
                    sim_args(sim_port, s.sim_token, 2 * per_phase, per_phase, [hook]),
                    env,
                ) as sim,
                running(
                    "freshness-web", [PYTHON, "-m", "service", "web", "--host", "127.0.0.1"], env
                ) as web,
                running("freshness-worker", [PYTHON, "-m", "service", "worker"], env) as worker,
            ):
                await wait_http(
                    f"{sim_url}/_sim/counters", sim, 60, {"Authorization": f"Bearer {s.sim_token}"}
                )
                await wait_http(f"{web_url}/healthz", web)
                await wait_backfilled(s.db_url, 120, worker)
                await asyncio.sleep(6)  # the backfill's own messages have gone by
                readers = [
                    asyncio.create_task(
                        consumer.read_ws(f"ws://127.0.0.1:{web_port}/ws?token={s.ws_token}")
                    ),
                    asyncio.create_task(consumer.read_redis(redis, Keys(s.prefix).lead_update)),
                ]
                await asyncio.sleep(0.5)
                ids = list(range(FIRST_LEAD_ID, FIRST_LEAD_ID + 2 * per_phase))
                hooked = await phase(control, consumer, ids[:per_phase], 600_001, 10.0)
                sources = dict(consumer.sources)
                consumer.sources.clear()
                await control.unsubscribe(hook)
                polled = await phase(control, consumer, ids[per_phase:], 600_002, 15.0)
                polled_sources = dict(consumer.sources)
        finally:
            for task in readers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await control.aclose()
            await redis.aclose()

    ws, via_redis, lost = hooked.ws, hooked.redis, hooked.lost
    poll_ws, poll_lost = polled.ws, polled.lost
    label = f"{RATE:g} changes/s for {seconds:g} s"
    rows = [
        Row(
            BENCH,
            f"change → lead_update on /ws, p50, {label}",
            _ms(ws, 0.5),
            "ms",
            _ms(poll_ws, 0.5),
            "webhooks off: 5 s polling",
            at_most(100, "ms"),
        ),
        Row(
            BENCH,
            f"change → lead_update on /ws, p99, {label}",
            _ms(ws, 0.99),
            "ms",
            _ms(poll_ws, 0.99),
            "webhooks off: 5 s polling",
            at_most(300, "ms"),
        ),
    ]
    if lost:
        rows[-1].problem = f"{lost} of {per_phase} never delivered"
    notes = [
        f"Webhooks on: {len(ws)} of {per_phase} delivered on /ws (sources {sources}); p50 "
        f"{_ms(ws, 0.5):.0f} ms, p90 {_ms(ws, 0.9):.0f} ms, p99 {_ms(ws, 0.99):.0f} ms, max "
        f"{_ms(ws, 1.0):.0f} ms; on Redis pub/sub p50 {_ms(via_redis, 0.5):.0f} ms, p99 "
        f"{_ms(via_redis, 0.99):.0f} ms; {hooked.calls} Kommo calls in {hooked.seconds:.1f} s "
        f"({hooked.calls / hooked.seconds:.1f}/s, limit 7/s).",
        f"Webhooks off (reconcile every 5 s only): {len(poll_ws)} of {per_phase} delivered "
        f"(sources {polled_sources}, {poll_lost} missing after 15 s); p50 "
        f"{_ms(poll_ws, 0.5):.0f} ms, p99 {_ms(poll_ws, 0.99):.0f} ms"
        + ("" if poll_ws else "; nothing arrived")
        + f"; {polled.calls} Kommo calls in {polled.seconds:.1f} s. The seed's analytic mean "
        "was 2,500 ms.",
    ]
    if any(math.isnan(v) for v in ws):
        notes.append("Some deliveries could not be timed.")
    return Report(rows, notes)


if __name__ == "__main__":
    main(run, __doc__)
