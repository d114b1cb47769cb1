"""The backfill: a full import, page by page, resumable, that leaves the cursors for reconcile.

It runs on a first start with no cursor (the worker queues it) and on demand with
``kommo-sync backfill``. Order: pipelines and users, the tag dictionaries, every contact, then
every lead (so a lead is first shown with its contacts). Pages are read by number in id order;
after each page is committed its number is saved, so a crash resumes at the next page. The
next page is fetched while the current one is written, keeping the request budget busy; memory
stays bounded at two pages. Anything that changes during the import is caught by reconcile,
whose cursors start at the moment the import began (minus the overlap); the id sweep catches a
row that page drift let slip by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from service import locks, store
from service.budget import Priority
from service.reconcile import OVERLAP, Reconciler
from service.resources import open_resources
from service.settings import Settings
from service.store import Entity
from service.sync import Batch, Mirror, resolve_account_id

log = logging.getLogger(__name__)

CURSOR = "backfill"
STAGES = ("dictionaries", "contacts", "leads", "done")
ANALYZE_AT = frozenset({2, 8, 32, 128, 512, 2048})


@dataclass
class Progress:
    stage: str
    page: int
    started_at: int
    rows: int = 0


class Backfill:
    def __init__(self, mirror: Mirror, *, show_bar: bool | None = None) -> None:
        self.mirror = mirror
        self.res = mirror.res
        self.kommo = mirror.res.require_kommo()
        self.acc = mirror.account_id
        self.show_bar = sys.stderr.isatty() if show_bar is None else show_bar

    async def load(self) -> Progress | None:
        async with self.res.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT value, state FROM sync_cursors WHERE account_id = $1 AND name = $2",
                self.acc, CURSOR,
            )
        if row is None:
            return None
        state = store.json_state(row["state"])
        return Progress(str(state["stage"]), int(state["page"]), int(row["value"]),
                        int(state.get("rows", 0)))

    async def save(self, p: Progress) -> None:
        async with self.res.pool.acquire() as conn:
            await store.set_cursor(conn, self.acc, CURSOR, p.started_at,
                                   {"stage": p.stage, "page": p.page, "rows": p.rows})

    async def needed(self) -> bool:
        p = await self.load()
        return p is None or p.stage != "done"

    async def run(self, *, restart: bool = False) -> Progress:
        p = None if restart else await self.load()
        if p is None:
            p = Progress("dictionaries", 1, int(time.time()))
            await self.save(p)
        if p.stage == "done":
            log.info("backfill already complete (started %d)", p.started_at)
            return p
        log.info("backfill: %s from page %d", p.stage, p.page)
        started = time.monotonic()
        if p.stage == "dictionaries":
            reconciler = Reconciler(self.mirror)
            await reconciler.pipelines()
            await reconciler.users()
            await reconciler.tags("leads")
            await reconciler.tags("contacts")
            p.stage, p.page = "contacts", 1
            await self.save(p)
        for entity in ("contacts", "leads"):
            if p.stage == entity:
                await self._entity(p, entity)
                p.stage, p.page = STAGES[STAGES.index(entity) + 1], 1
                await self.save(p)
        async with self.res.pool.acquire() as conn, conn.transaction():
            start = p.started_at - OVERLAP
            for name in ("leads", "contacts", "events"):
                if await store.get_cursor(conn, self.acc, name) is None:
                    await store.set_cursor(conn, self.acc, name, start)
        log.info("backfill complete: %d rows in %.1fs", p.rows, time.monotonic() - started)
        return p

    async def _entity(self, p: Progress, entity: str) -> None:
        params: dict[str, Any] = {"order[id]": "asc", "limit": 250}
        if entity == "leads":
            params["with"] = "contacts"
        path = f"/api/v4/{entity}"
        total = await self._estimate_pages(path) if self.show_bar else None
        with self._bar(entity, total, p.page - 1) as tick:
            fetching = asyncio.create_task(self._page(path, params, p.page))
            while True:
                items, more = await fetching
                if more:
                    fetching = asyncio.create_task(self._page(path, params, p.page + 1))
                if items:
                    await self._write(entity, items)
                    p.rows += len(items)
                if p.page in ANALYZE_AT:  # keep the planner's row estimates near the truth
                    async with self.res.pool.acquire() as conn:
                        await store.analyze(conn)
                p.page += 1
                await self.save(p)
                tick(len(items))
                if not more:
                    break

    async def _page(self, path: str, params: dict[str, Any], page: int) -> tuple[
            list[Entity], bool]:
        data = await self.kommo.get(path, {**params, "page": page}, priority=Priority.BACKFILL)
        if data is None:
            return [], False
        key = path.rsplit("/", 1)[-1]
        items = list((data.get("_embedded") or {}).get(key) or [])
        return items, bool(items) and "next" in (data.get("_links") or {})

    async def _write(self, entity: str, items: list[Entity]) -> None:
        if entity == "leads":
            await self.mirror.apply_leads(items, priority=Priority.BACKFILL, source="backfill")
        else:
            await self.mirror.apply(Batch(contacts=items), "backfill")

    async def _estimate_pages(self, path: str) -> int:
        """The number of pages, by probing (about 2·log2(pages) calls): lists carry no total."""
        async def has(page: int) -> bool:
            data = await self.kommo.get(path, {"limit": 250, "page": page, "order[id]": "asc"},
                                        priority=Priority.BACKFILL)
            return data is not None and bool(data.get("_embedded") or {})

        high = 1
        while await has(high):
            high *= 2
        low = high // 2
        while low + 1 < high:
            mid = (low + high) // 2
            low, high = (mid, high) if await has(mid) else (low, mid)
        return low

    @contextlib.contextmanager
    def _bar(self, entity: str, total: int | None, done: int) -> Iterator[Any]:
        if self.show_bar:
            bar = tqdm(total=total, initial=done, desc=f"backfill {entity}", unit="page",
                       dynamic_ncols=True)
            try:
                yield lambda rows: bar.update(1)
            finally:
                bar.close()
            return
        started, pages = time.monotonic(), 0

        def tick(rows: int) -> None:
            nonlocal pages
            pages += 1
            if pages % 20 == 0:
                rate = pages / max(time.monotonic() - started, 1e-9)
                log.info("backfill %s: page %d (%.1f pages/s)", entity, done + pages, rate)

        yield tick


async def run_backfill_command(settings: Settings, *, restart: bool = False) -> int:
    """``kommo-sync backfill``: import now, in this process, with a progress bar on a terminal."""
    async with open_resources(settings, kommo=True) as res:
        mirror = Mirror(res, await resolve_account_id(res))
        async with locks.held(res.redis, settings.key("backfill:lock")) as mine:
            if not mine:
                log.error("a backfill is already running in another process")
                return 1
            progress = await Backfill(mirror).run(restart=restart)
    sys.stdout.write(f"backfill {progress.stage}: {progress.rows} rows\n")
    return 0
