"""The reconcile poll: whatever webhooks missed, it catches within a tick or two.

Each tick (``RECONCILE_INTERVAL``, default 5 s) runs exactly once for the whole deployment,
however many workers fire it: a tick is claimed with ``SET NX`` on its number, and a running
lock skips ticks while a slow one is still at work. One tick costs three Kommo calls when
idle: the leads and contacts streams (``filter[updated_at][from]`` the cursor minus an overlap,
ascending; usually a 204) and a third slot that is usually the events feed (deletes, restores,
links, tags) and, one tick in four, a slower item in rotation: pipelines and statuses, users,
the two tag dictionaries, and one page of the id sweep that catches what everything else
missed. Cursors live in Postgres and move only after their rows are committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from service import hints, locks, store
from service.budget import Priority
from service.errors import KommoBadRequest
from service.store import Entity
from service.sync import Batch, Mirror

log = logging.getLogger(__name__)

OVERLAP = 10  # seconds re-read behind each cursor: same-second edits and lagging lists
EVENT_OVERLAP = 30  # the events feed lags writes a little more
SETTLE = 60  # seconds a cursor must stand still before its overlap is no longer re-read
SLOW_EVERY = 4
EVENT_TYPES = (
    "lead_deleted", "lead_restored", "contact_deleted", "contact_restored",
    "entity_linked", "entity_unlinked", "lead_linked", "lead_unlinked",
    "contact_linked", "contact_unlinked", "entity_tag_added", "entity_tag_deleted",
)

TICKS = Counter("reconcile_ticks_total", "reconcile ticks run")
DURATION = Histogram("reconcile_duration_seconds", "time one reconcile tick took")
DRIFT = Counter("reconcile_drift_rows_total", "rows the poll fixed that no webhook had", ["entity"])
LAST_TICK = Gauge("reconcile_last_success_timestamp_seconds", "end of the last good tick")
CURSOR_LAG = Gauge("reconcile_cursor_lag_seconds", "now minus a stream's cursor", ["stream"])


@dataclass
class TickReport:
    number: int
    calls: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)


class Reconciler:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.res = mirror.res
        self.kommo = mirror.res.require_kommo()
        self.acc = mirror.account_id
        self.interval = self.res.settings.reconcile_interval

    async def maybe_tick(self, now: float | None = None) -> TickReport | None:
        """Run this tick if no other worker has claimed it; None when skipped."""
        now = time.time() if now is None else now
        number = int(now // self.interval)
        key = self.res.settings.key
        claimed = await self.res.redis.set(
            key(f"reconcile:tick:{number}"), b"1", nx=True, ex=max(10, int(self.interval * 4))
        )
        if not claimed:
            return None
        async with locks.held(self.res.redis, key("reconcile:running")) as running:
            if not running:
                log.info("reconcile tick %d skipped: the previous tick is still running", number)
                return None
            return await self.tick(number)

    async def tick(self, number: int) -> TickReport | None:
        if not await self.ready():
            return None
        started = time.monotonic()
        report = TickReport(number)
        await hints.promote_due(self.res.redis, self.res.settings)
        await hints.ensure_scheduled(self.res)
        report.fixed["leads"] = await self.stream("leads")
        report.fixed["contacts"] = await self.stream("contacts")
        slot = number % (SLOW_EVERY * len(self._slow_items()))
        if slot % SLOW_EVERY == SLOW_EVERY - 1:
            name, item = self._slow_items()[slot // SLOW_EVERY]
            report.fixed[name] = await item()
        else:
            report.fixed["events"] = await self.events()
        elapsed = time.monotonic() - started
        DURATION.observe(elapsed)
        TICKS.inc()
        LAST_TICK.set(time.time())
        pipe = self.res.redis.pipeline(transaction=False)
        pipe.set(self.res.settings.key("reconcile:last"), str(time.time()))
        pipe.incr(self.res.settings.key("reconcile:runs"))
        await pipe.execute()
        level = logging.INFO if any(report.fixed.values()) else logging.DEBUG
        log.log(level, "reconcile tick %d in %.2fs fixed %s", number, elapsed, report.fixed)
        return report

    async def ready(self) -> bool:
        """Reconcile starts only once the backfill has left its cursors."""
        async with self.res.pool.acquire() as conn:
            return await store.get_cursor(conn, self.acc, "leads") is not None

    def _slow_items(self) -> list[tuple[str, Callable[[], Awaitable[int]]]]:
        return [
            ("pipelines", self.pipelines), ("users", self.users),
            ("lead_tags", lambda: self.tags("leads")), ("sweep_leads", lambda: self.sweep("leads")),
            ("contact_tags", lambda: self.tags("contacts")),
            ("sweep_contacts", lambda: self.sweep("contacts")),
        ]

    async def stream(self, entity: str) -> int:
        """Re-read everything updated since the cursor (minus the overlap); return rows fixed.

        Once the cursor has not moved for ``SETTLE`` seconds, the overlap has been re-read many
        times over, so the read starts just past the cursor: an idle stream costs a 204, not
        the same rows again and again (which Kommo counts against a client).
        """
        async with self.res.pool.acquire() as conn:
            found = await store.get_cursor_state(conn, self.acc, entity)
        if found is None:
            return 0
        cursor, state = found
        now = time.time()
        moved_at = float(state.get("moved_at") or now)
        start = cursor + 1 if now - moved_at > SETTLE else max(0, cursor - OVERLAP)
        newest, fixed = cursor, 0
        async for page in self._changed_since(entity, start):
            fixed += await self._apply_page(entity, page)
            newest = max([newest, *(int(e.get("updated_at") or 0) for e in page)])
        async with self.res.pool.acquire() as conn:
            await store.set_cursor(conn, self.acc, entity, newest,
                                   {"moved_at": now if newest != cursor else moved_at})
        CURSOR_LAG.labels(entity).set(max(0.0, now - newest))
        if fixed:
            DRIFT.labels(entity).inc(fixed)
        return fixed

    async def _changed_since(self, entity: str, start: int) -> AsyncIterator[list[Entity]]:
        """Everything updated at or after ``start``, ascending, immune to page drift.

        Page numbers drift while data changes: a row updated during the scan moves to the end,
        every later row moves up one place, and one of them slips into a page already read.
        So each page restarts the query at the newest ``updated_at`` seen so far (inclusive;
        re-reads are harmless); only a full page inside a single second pages on by number.
        """
        page_no = 1
        while True:
            params: dict[str, Any] = {"filter[updated_at][from]": start,
                                      "order[updated_at]": "asc", "limit": 250, "page": page_no}
            if entity == "leads":
                params["with"] = "contacts"
            data = await self.kommo.get(f"/api/v4/{entity}", params,
                                        priority=Priority.RECONCILE)
            items = list(((data or {}).get("_embedded") or {}).get(entity) or [])
            if not items:
                return
            yield items
            if "next" not in ((data or {}).get("_links") or {}):
                return
            last = max(int(e.get("updated_at") or 0) for e in items)
            start, page_no = (last, 1) if last > start else (start, page_no + 1)

    async def _apply_page(self, entity: str, page: Sequence[Entity]) -> int:
        if entity == "leads":
            outcome, _ = await self.mirror.apply_leads(page, priority=Priority.RECONCILE,
                                                       source="reconcile")
            return len(outcome.leads_written)
        outcome = await self.mirror.apply(Batch(contacts=page), "reconcile")
        return len(outcome.contacts_written)

    async def events(self) -> int:
        """Deletes, restores, link and tag changes from the events feed since its cursor.

        Events are read ``EVENT_OVERLAP`` seconds behind the cursor (the feed lags) and told
        apart by id; as with the streams, a cursor that stood still for ``SETTLE`` seconds is
        read from just past it.
        """
        async with self.res.pool.acquire() as conn:
            found_cursor = await store.get_cursor_state(conn, self.acc, "events")
        if found_cursor is None:
            return 0
        cursor, state = found_cursor
        now = time.time()
        moved_at = float(state.get("moved_at") or now)
        seen = {str(k): int(v) for k, v in dict(state.get("seen") or {}).items()}
        start = cursor + 1 if now - moved_at > SETTLE else max(0, cursor - EVENT_OVERLAP)
        found = await self.kommo.events(EVENT_TYPES, start, priority=Priority.RECONCILE)
        fresh = sorted((e for e in found if str(e["id"]) not in seen),
                       key=lambda e: int(e["created_at"]))
        fixed = await self._apply_events(fresh) if fresh else 0
        newest = max([cursor, *(int(e["created_at"]) for e in found)])
        seen.update({str(e["id"]): int(e["created_at"]) for e in found})
        keep = {k: v for k, v in seen.items() if v >= newest - EVENT_OVERLAP}
        async with self.res.pool.acquire() as conn:
            await store.set_cursor(conn, self.acc, "events", newest, {
                "seen": keep, "moved_at": now if newest != cursor else moved_at})
        return fixed

    async def _apply_events(self, events: Sequence[Entity]) -> int:
        fetch: dict[str, set[int]] = {"lead": set(), "contact": set()}
        deleted: dict[str, set[int]] = {"lead": set(), "contact": set()}
        restored: dict[str, set[int]] = {"lead": set(), "contact": set()}
        for e in events:
            kind, ident, kind_of_event = str(e.get("entity_type")), int(e["entity_id"]), e["type"]
            if kind not in fetch:
                continue
            if kind_of_event == f"{kind}_deleted":
                deleted[kind].add(ident)
            elif kind_of_event == f"{kind}_restored":
                restored[kind].add(ident)
            else:
                fetch[kind].add(ident)
                for value in [*(e.get("value_after") or []), *(e.get("value_before") or [])]:
                    linked = (value.get("link") or {}).get("entity") or {}
                    if linked.get("type") in fetch:
                        fetch[str(linked["type"])].add(int(linked["id"]))
        for kind in fetch:
            # A delete and a restore in the same second have no knowable order: an id with a
            # restore is settled by a by-id read (found: restored; not found: deleted).
            deleted[kind] -= restored[kind]
            fetch[kind] = (fetch[kind] - deleted[kind]) | restored[kind]
        when = max(int(e["created_at"]) for e in events)
        batch = Batch(lead_deletes=deleted["lead"], contact_deletes=deleted["contact"],
                      restored_leads=restored["lead"], restored_contacts=restored["contact"],
                      deleted_at=when)
        outcome, leads_seen, contacts_seen = await self.mirror.fetch_and_apply(
            lead_ids=sorted(fetch["lead"]), contact_ids=sorted(fetch["contact"]),
            priority=Priority.RECONCILE, source="reconcile", batch=batch,
        )
        gone_leads = restored["lead"] - leads_seen.keys()
        gone_contacts = restored["contact"] - contacts_seen.keys()
        if gone_leads or gone_contacts:
            await self.mirror.apply(Batch(lead_deletes=gone_leads, contact_deletes=gone_contacts,
                                          deleted_at=when), "reconcile")
        return (len(outcome.leads_written) + len(outcome.contacts_written)
                + len(deleted["lead"]) + len(deleted["contact"]))

    async def pipelines(self) -> int:
        data = await self.kommo.get("/api/v4/leads/pipelines", None, priority=Priority.RECONCILE)
        items = ((data or {}).get("_embedded") or {}).get("pipelines") or []
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.replace_pipelines(conn, self.acc, items)
        return 0

    async def users(self) -> int:
        try:
            items = await self.kommo.collect("/api/v4/users", {"limit": 250}, "users",
                                             priority=Priority.RECONCILE)
        except KommoBadRequest as exc:  # the users list needs admin rights
            log.warning("users not mirrored: %s", exc)
            return 0
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.replace_users(conn, self.acc, items)
        return 0

    async def tags(self, entity: str) -> int:
        items = await self.kommo.collect(f"/api/v4/{entity}/tags", {"limit": 250}, "tags",
                                         priority=Priority.RECONCILE)
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock_account(conn, self.acc)
            renamed = await store.upsert_tags(conn, self.acc, entity, items)
            touched = await store.leads_with_tags(conn, self.acc, renamed) if (
                renamed and entity == "leads") else []
            changes = await store.refresh_leads(conn, self.acc, touched, "reconcile")
        await self.mirror.publish(changes)
        return len(renamed)

    async def sweep(self, entity: str) -> int:
        """One page of the id sweep: ids Kommo lists that we lack, and ids we hold in that
        range that Kommo no longer lists. A missing id is tombstoned only after a direct
        by-id read confirms it is gone (a listing can be partial; a by-id read is not).
        Each page's range starts right after the previous page's last id, so an id that page
        drift moved between two pages is still compared."""
        async with self.res.pool.acquire() as conn:
            found = await store.get_cursor_state(conn, self.acc, f"sweep_{entity}")
        page_no, after = (found[0], int(found[1].get("after", 0))) if found else (1, 0)
        params: dict[str, Any] = {"order[id]": "asc", "limit": 250, "page": page_no}
        data = await self.kommo.get(f"/api/v4/{entity}", params, priority=Priority.RECONCILE)
        listed = [int(e["id"]) for e in ((data or {}).get("_embedded") or {}).get(entity) or []]
        last_page = "next" not in ((data or {}).get("_links") or {})
        fixed = 0
        if listed:
            low = 0 if page_no == 1 else after + 1
            high = max(listed)
            async with self.res.pool.acquire() as conn:
                rows = await conn.fetch(
                    f"""SELECT id FROM {entity} WHERE account_id = $1 AND NOT is_deleted
                        AND id >= $2 AND ($3 OR id <= $4)""",
                    self.acc, low, last_page, high,
                )
            ours = {r["id"] for r in rows}
            fixed = await self._settle(entity, sorted(ours - set(listed)),
                                       sorted(set(listed) - ours))
        done = not listed or last_page
        async with self.res.pool.acquire() as conn:
            await store.set_cursor(conn, self.acc, f"sweep_{entity}", 1 if done else page_no + 1,
                                   {"after": 0 if done else max(listed)})
        return fixed

    async def _settle(self, entity: str, suspects: list[int], lacking: list[int]) -> int:
        if not suspects and not lacking:
            return 0
        ids = [*suspects, *lacking]
        if entity == "leads":
            outcome, found, _ = await self.mirror.fetch_and_apply(
                lead_ids=ids, priority=Priority.RECONCILE, source="reconcile")
        else:
            outcome, _, found = await self.mirror.fetch_and_apply(
                contact_ids=ids, priority=Priority.RECONCILE, source="reconcile")
        gone = [i for i in suspects if i not in found]
        if gone:
            batch = Batch(lead_deletes=gone) if entity == "leads" else Batch(contact_deletes=gone)
            await self.mirror.apply(batch, "reconcile")
            log.info("sweep: %d %s confirmed deleted in Kommo", len(gone), entity)
        written = len(outcome.leads_written) + len(outcome.contacts_written)
        DRIFT.labels(entity).inc(written + len(gone))
        return written + len(gone)
