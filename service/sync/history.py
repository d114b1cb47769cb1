"""The history import: every ``lead_status_changed`` event Kommo still serves, into
``lead_status_changes``, at the lowest priority.

It starts once the backfill is done and reads the events feed up to the moment it starts (the
reconcile, running by then, records every change after that from the same feed; an event both
read is stored once), page by page, in that fixed window, so page numbers cannot drift. On a
mirror upgraded from an earlier release, whose reconcile did not record moves, the window
covers that release's time too. After each page is committed its number is saved:
a crash resumes at the next page. Progress (pages, events) is in its cursor, shown by
``kommo-sync status``; ``kommo-sync import-history`` runs it in the foreground with a progress
bar. Its calls go at ``Priority.HISTORY``: after webhooks, the reconcile and any backfill.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.kommo.budget import Priority
from service.store import cursors
from service.sync.events import STATUS_CHANGED
from service.sync.mirror import Batch, Mirror

log = logging.getLogger(__name__)

CURSOR = "history"
Tick = Callable[[int, int], None]
"""Told after every page: the page number and the events it held."""


@dataclass
class HistoryProgress:
    up_to: int  # the window's end (Unix s): when the backfill began
    page: int  # the next page to read
    events: int = 0  # status changes read so far
    done: bool = False


class HistoryImport:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.res = mirror.res
        self.acc = mirror.account_id

    async def load(self) -> HistoryProgress | None:
        async with self.res.pool.acquire() as conn:
            found = await cursors.get_cursor_state(conn, self.acc, CURSOR)
        if found is None:
            return None
        up_to, state = found
        return HistoryProgress(
            up_to, int(state.get("page", 1)), int(state.get("events", 0)), bool(state.get("done"))
        )

    async def save(self, p: HistoryProgress) -> None:
        async with self.res.pool.acquire() as conn:
            await cursors.set_cursor(
                conn,
                self.acc,
                CURSOR,
                p.up_to,
                {"page": p.page, "events": p.events, "done": p.done},
            )

    async def needed(self) -> bool:
        p = await self.load()
        return p is None or not p.done

    async def run(self, *, tick: Tick | None = None) -> HistoryProgress:
        p = await self.load()
        if p is None:
            p = HistoryProgress(up_to=int(time.time()), page=1)
            await self.save(p)
        started = time.monotonic()
        while not p.done:
            events, more = await self.mirror.kommo.events_page(
                [STATUS_CHANGED], p.up_to, p.page, priority=Priority.HISTORY
            )
            if events:
                await self.mirror.apply(Batch(status_changes=events), "backfill")
            p.events += len(events)
            p.page += 1
            p.done = not more
            await self.save(p)
            if tick is not None:
                tick(p.page - 1, len(events))
        log.info(
            "history import complete: %d status changes, %d pages in %.1fs",
            p.events,
            p.page - 1,
            time.monotonic() - started,
        )
        return p
