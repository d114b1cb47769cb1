"""The reconcile poll: whatever webhooks missed, it catches within a tick or two.

Each tick (``RECONCILE_INTERVAL``, default 5 s) runs exactly once for the whole deployment,
however many workers fire it: a tick is claimed with ``SET NX`` on its number, and a running
lock skips ticks while a slow one is still at work. One tick costs three Kommo calls when
idle: the leads and contacts streams (``updated_at`` from the cursor minus an overlap,
ascending; usually a 204) and a third slot that is usually the events feed (deletes, restores,
links, tags: :mod:`service.sync.events`) and, one tick in four, a slower item in rotation:
pipelines and statuses, users, the two tag dictionaries (:mod:`service.sync.dictionaries`),
and one page of the id sweep (:mod:`service.sync.sweep`). Cursors live in Postgres and move
only after their rows are committed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from service.kinds import COMPANIES, CONTACTS, LEADS, EntityKind
from service.kommo.budget import Priority
from service.records import Record
from service.store import cursors
from service.sync import dictionaries, hints, locks
from service.sync.events import EventFeed
from service.sync.metrics import CURSOR_LAG, DRIFT, DURATION, LAST_TICK, TICKS
from service.sync.mirror import Batch, Mirror
from service.sync.sweep import Sweep
from service.sync.window import OVERLAP, load_window

log = logging.getLogger(__name__)

SLOW_EVERY = 4
STREAMS = (LEADS, CONTACTS, COMPANIES)


@dataclass
class TickReport:
    number: int
    fixed: dict[str, int] = field(default_factory=dict)


class Reconciler:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.res = mirror.res
        self.kommo = mirror.kommo
        self.acc = mirror.account_id
        self.interval = self.res.settings.reconcile_interval
        self.events = EventFeed(mirror)
        self.sweep = Sweep(mirror)

    async def maybe_tick(self, now: float | None = None) -> TickReport | None:
        """Run this tick if no other worker has claimed it; None when skipped."""
        now = time.time() if now is None else now
        number = int(now // self.interval)
        keys = self.res.keys
        claimed = await self.res.redis.set(
            keys.reconcile_tick(number), b"1", nx=True, ex=max(10, int(self.interval * 4))
        )
        if not claimed:
            return None
        async with locks.held(self.res.redis, keys.reconcile_running) as running:
            if not running:
                log.info("reconcile tick %d skipped: the previous tick is still running", number)
                return None
            return await self.tick(number)

    async def tick(self, number: int) -> TickReport | None:
        if not await self.ready():
            return None
        started = time.monotonic()
        report = TickReport(number)
        res = self.res
        await hints.promote_due(res.redis, res.keys)
        await hints.ensure_scheduled(res.redis, res.arq, res.keys)
        for kind in STREAMS:
            report.fixed[kind.name] = await self.stream(kind)
        report.fixed["stale"] = await dictionaries.refresh_stale(self.mirror)
        slow = self._slow_items()
        slot = number % (SLOW_EVERY * len(slow))
        if slot % SLOW_EVERY == SLOW_EVERY - 1:
            name, item = slow[slot // SLOW_EVERY]
            report.fixed[name] = await item()
        else:
            report.fixed["events"] = await self.events.read()
        elapsed = time.monotonic() - started
        DURATION.observe(elapsed)
        TICKS.inc()
        LAST_TICK.set(time.time())
        async with res.redis.pipeline(transaction=False) as pipe:
            pipe.set(res.keys.reconcile_last, str(time.time()))
            pipe.incr(res.keys.reconcile_runs)
            await pipe.execute()
        level = logging.INFO if any(report.fixed.values()) else logging.DEBUG
        log.log(level, "reconcile tick %d in %.2fs fixed %s", number, elapsed, report.fixed)
        return report

    async def ready(self) -> bool:
        """Reconcile starts only once the backfill has left its cursors."""
        async with self.res.pool.acquire() as conn:
            return await cursors.get_cursor(conn, self.acc, LEADS.name) is not None

    def _slow_items(self) -> list[tuple[str, Callable[[], Awaitable[int]]]]:
        m = self.mirror
        items: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("pipelines", lambda: dictionaries.pipelines(m)),
            ("users", lambda: dictionaries.users(m)),
            ("loss_reasons", lambda: dictionaries.loss_reasons(m)),
        ]
        for kind in STREAMS:
            items += [
                (f"{kind.singular}_tags", functools.partial(dictionaries.tags, m, kind)),
                (f"sweep_{kind.name}", functools.partial(self.sweep.page, kind)),
                (f"{kind.singular}_fields", functools.partial(dictionaries.custom_fields, m, kind)),
            ]
        return items

    async def stream(self, kind: EntityKind) -> int:
        """Re-read everything updated since the cursor (minus the overlap); return rows fixed."""
        window = await load_window(self.mirror, kind.name)
        if window is None:
            return 0
        newest, fixed = window.cursor, 0
        async for page in self._changed_since(kind, window.start(OVERLAP)):
            fixed += await self._apply_page(kind, page)
            newest = max([newest, *(r.updated_at for r in page)])
        async with self.res.pool.acquire() as conn:
            await cursors.set_cursor(conn, self.acc, kind.name, newest, window.saved(newest))
        CURSOR_LAG.labels(kind.name).set(max(0.0, window.now - newest))
        if fixed:
            DRIFT.labels(kind.name).inc(fixed)
        return fixed

    async def _changed_since(self, kind: EntityKind, start: int) -> AsyncIterator[list[Record]]:
        """Everything updated at or after ``start``, ascending, immune to page drift.

        Page numbers drift while data changes: a row updated during the scan moves to the end,
        every later row moves up one place, and one of them slips into a page already read.
        So each page restarts the query at the newest ``updated_at`` seen so far (inclusive;
        re-reads are harmless); only a full page inside a single second pages on by number.
        """
        page_no = 1
        while True:
            page = await self.kommo.changed_since(kind, start, page_no, priority=Priority.RECONCILE)
            if not page.records:
                return
            yield page.records
            if not page.has_next:
                return
            last = max(r.updated_at for r in page.records)
            start, page_no = (last, 1) if last > start else (start, page_no + 1)

    async def _apply_page(self, kind: EntityKind, page: list[Record]) -> int:
        if kind is LEADS:
            outcome, _ = await self.mirror.apply_leads(
                page, priority=Priority.RECONCILE, source="reconcile"
            )
        else:
            batch = Batch()
            batch.add(page)
            outcome = await self.mirror.apply(batch, "reconcile")
        return len(outcome.written[kind.name])
