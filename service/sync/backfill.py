"""The backfill: a full import, page by page, resumable, that leaves the cursors for reconcile.

It runs on a first start with no cursor (the worker queues it) and on demand with
``kommo-sync backfill``. Order: the dictionaries (pipelines and stages, users, loss reasons, the
tag dictionaries and custom field definitions of every kind), every company, every contact, then
every lead (so a lead is first shown with its companies and contacts). Pages are read by number
in id order; after each page is committed its number is saved, so a crash resumes at the next
page. The next page is fetched while the current one is written, keeping the request budget
busy; memory stays bounded at two pages. Anything that changes during the import is caught by
reconcile, whose cursors start at the moment the import began (minus the overlap); the id sweep
catches a row that page drift let slip by.

The same import, quiet (no new versions, no messages), upgrades a mirror made by an earlier
release that lacked companies, custom field values, e-mails and loss reasons (:data:`UPGRADE`):
it runs in the background while the mirror stays live, and leads gain the new fields without
a storm of ``lead_update`` messages (CHANGELOG.md says what consumers see, and when).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.kinds import COMPANIES, CONTACTS, LEADS, EntityKind
from service.kommo.budget import Priority
from service.kommo.client import Page
from service.store import cursors, entities
from service.sync import dictionaries
from service.sync.events import CURSOR as EVENTS_CURSOR
from service.sync.mirror import Batch, Mirror
from service.sync.reconcile import STREAMS
from service.sync.window import OVERLAP

log = logging.getLogger(__name__)

CURSOR = "backfill"
UPGRADE = "upgrade_2"  # the cursor of the quiet import that upgrades an older mirror
ORDER = (COMPANIES, CONTACTS, LEADS)
STAGES = ("dictionaries", *(k.name for k in ORDER), "done")
ANALYZE_AT = frozenset({2, 8, 32, 128, 512, 2048})

Tick = Callable[[str, int], None]
"""Told after every page: the stage and the rows it wrote (a progress bar, a log line)."""


@dataclass
class Progress:
    stage: str
    page: int
    started_at: int
    rows: int = 0
    rewrite: bool = False  # a restart: every row written again, even an unchanged one


class Backfill:
    def __init__(self, mirror: Mirror, *, cursor: str = CURSOR) -> None:
        self.mirror = mirror
        self.res = mirror.res
        self.kommo = mirror.kommo
        self.acc = mirror.account_id
        self.cursor = cursor
        self.quiet = cursor == UPGRADE
        self.rewrite = self.quiet
        self.source = "backfill"

    @classmethod
    def upgrade(cls, mirror: Mirror) -> Backfill:
        return cls(mirror, cursor=UPGRADE)

    async def load(self) -> Progress | None:
        async with self.res.pool.acquire() as conn:
            found = await cursors.get_cursor_state(conn, self.acc, self.cursor)
        if found is None:
            return None
        started_at, state = found
        return Progress(
            str(state["stage"]),
            int(state["page"]),
            started_at,
            int(state.get("rows", 0)),
            bool(state.get("rewrite", False)),
        )

    async def save(self, p: Progress) -> None:
        async with self.res.pool.acquire() as conn:
            await cursors.set_cursor(
                conn,
                self.acc,
                self.cursor,
                p.started_at,
                {"stage": p.stage, "page": p.page, "rows": p.rows, "rewrite": p.rewrite},
            )

    async def needed(self) -> bool:
        p = await self.load()
        if not self.quiet:
            return p is None or p.stage != "done"
        # an upgrade is needed where a backfill of an earlier release finished without it
        if p is not None:
            return p.stage != "done"
        done = await Backfill(self.mirror).load()
        return done is not None and done.stage == "done"

    async def run(self, *, restart: bool = False, tick: Tick | None = None) -> Progress:
        p = None if restart else await self.load()
        if p is None:  # a restart rewrites every row (e.g. phones after a normalisation fix)
            p = Progress("dictionaries", 1, int(time.time()), rewrite=restart)
            await self.save(p)
        self.rewrite = self.quiet or p.rewrite
        if p.stage == "done":
            log.info("%s already complete (started %d)", self.cursor, p.started_at)
            return p
        log.info("%s: %s from page %d", self.cursor, p.stage, p.page)
        started = time.monotonic()
        if p.stage == "dictionaries":
            await self._dictionaries()
            p.stage, p.page = ORDER[0].name, 1
            await self.save(p)
        for kind in ORDER:
            if p.stage == kind.name:
                await self._entity(p, kind, tick or _log_every(20))
                p.stage, p.page = STAGES[STAGES.index(kind.name) + 1], 1
                await self.save(p)
        async with self.res.pool.acquire() as conn, conn.transaction():
            start = p.started_at - OVERLAP
            for name in (*(k.name for k in STREAMS), EVENTS_CURSOR):
                await cursors.set_cursor_if_absent(conn, self.acc, name, start)
            if not self.quiet:  # a fresh import has everything: nothing to upgrade
                await cursors.set_cursor(
                    conn, self.acc, UPGRADE, p.started_at, {"stage": "done", "page": 1, "rows": 0}
                )
        log.info("%s complete: %d rows in %.1fs", self.cursor, p.rows, time.monotonic() - started)
        return p

    async def _dictionaries(self) -> None:
        m, prio = self.mirror, Priority.BACKFILL
        await dictionaries.pipelines(m, prio)
        await dictionaries.users(m, prio)
        await dictionaries.loss_reasons(m, prio)
        for kind in ORDER:
            await dictionaries.tags(m, kind, prio)
            await dictionaries.custom_fields(m, kind, prio)

    async def pages(self, kind: EntityKind) -> int:
        """The number of pages of ``kind``, by probing (about 2·log2(pages) calls)."""

        async def has(page: int) -> bool:
            return await self.kommo.has_page(kind, page, priority=Priority.BACKFILL)

        high = 1
        while await has(high):
            high *= 2
        low = high // 2
        while low + 1 < high:
            mid = (low + high) // 2
            low, high = (mid, high) if await has(mid) else (low, mid)
        return low

    async def _entity(self, p: Progress, kind: EntityKind, tick: Tick) -> None:
        def fetch(page: int) -> asyncio.Task[Page]:
            return asyncio.create_task(
                self.kommo.in_id_order(kind, page, priority=Priority.BACKFILL)
            )

        fetching = fetch(p.page)
        while True:
            page = await fetching
            if page.has_next:
                fetching = fetch(p.page + 1)
            if page.records:
                await self._write(kind, page)
                p.rows += len(page.records)
            if p.page in ANALYZE_AT:  # keep the planner's row estimates near the truth
                async with self.res.pool.acquire() as conn:
                    await entities.analyze(conn)
            p.page += 1
            await self.save(p)
            tick(kind.name, len(page.records))
            if not page.has_next:
                break

    async def _write(self, kind: EntityKind, page: Page) -> None:
        batch = Batch(quiet=self.quiet, rewrite=self.rewrite)
        if kind is LEADS:
            await self.mirror.apply_leads(
                page.records, priority=Priority.BACKFILL, source=self.source, batch=batch
            )
        else:
            batch.add(page.records)
            await self.mirror.apply(batch, self.source)


def _log_every(pages: int) -> Tick:
    """A log line every ``pages`` pages, with the rate (where no progress bar is shown)."""
    started, count = time.monotonic(), 0

    def tick(stage: str, rows: int) -> None:
        nonlocal count
        count += 1
        if count % pages == 0:
            rate = count / max(time.monotonic() - started, 1e-9)
            log.info("backfill %s: %d pages (%.1f pages/s)", stage, count, rate)

    return tick
