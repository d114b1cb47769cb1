"""The id sweep: one page per slow slot of the reconcile, catching what everything else missed.

Each page compares the ids Kommo lists (ascending) with the live ids the mirror holds in the
same range: ids we lack are fetched, ids Kommo no longer lists are suspects. A suspect is
tombstoned only after a direct by-id read confirms it is gone (a listing can be partial; a
by-id read is not). Each page's range starts right after the previous page's last id, so an id
that page drift moved between two pages is still compared.
"""

from __future__ import annotations

import logging

from service.kinds import EntityKind
from service.kommo.budget import Priority
from service.store import cursors, entities
from service.sync.metrics import DRIFT
from service.sync.mirror import Batch, Mirror

log = logging.getLogger(__name__)


class Sweep:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    async def page(self, kind: EntityKind) -> int:
        """Sweep the next page of ``kind``; return the rows fixed."""
        m, name = self.mirror, f"sweep_{kind.name}"
        async with m.res.pool.acquire() as conn:
            found = await cursors.get_cursor_state(conn, m.account_id, name)
        page_no, after = (found[0], int(found[1].get("after", 0))) if found else (1, 0)
        page = await m.kommo.in_id_order(kind, page_no, priority=Priority.RECONCILE, with_=())
        listed = [r.id for r in page.records]
        fixed = 0
        if listed:
            low = 0 if page_no == 1 else after + 1
            async with m.res.pool.acquire() as conn:
                ours = await entities.alive_ids_between(
                    conn, m.account_id, kind, low, None if not page.has_next else max(listed)
                )
            fixed = await self._settle(kind, sorted(ours - set(listed)), sorted(set(listed) - ours))
        done = not listed or not page.has_next
        async with m.res.pool.acquire() as conn:
            await cursors.set_cursor(
                conn,
                m.account_id,
                name,
                1 if done else page_no + 1,
                {"after": 0 if done else max(listed)},
            )
        return fixed

    async def _settle(self, kind: EntityKind, suspects: list[int], lacking: list[int]) -> int:
        if not suspects and not lacking:
            return 0
        outcome, seen = await self.mirror.fetch_and_apply(
            {kind.name: [*suspects, *lacking]}, priority=Priority.RECONCILE, source="reconcile"
        )
        gone = [i for i in suspects if i not in seen.get(kind.name, {})]
        if gone:
            await self.mirror.apply(Batch(deletes={kind.name: set(gone)}), "reconcile")
            log.info("sweep: %d %s confirmed deleted in Kommo", len(gone), kind.name)
        fixed = outcome.count() + len(gone)
        DRIFT.labels(kind.name).inc(fixed)
        return fixed
