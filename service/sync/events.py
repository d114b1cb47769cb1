"""The events feed in the reconcile: deletes, restores, link and tag changes since its cursor.

Events are read ``EVENT_OVERLAP`` seconds behind the cursor (the feed lags writes a little
more than the lists) and told apart by id; as with the streams, a cursor that stood still for
a while is read from just past it. A delete tombstones; a restore, a link change or a tag
change refetches the entities involved.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.kinds import ENTITY_KINDS
from service.kommo.budget import Priority
from service.records import Event
from service.store import cursors
from service.sync.mirror import Batch, Mirror
from service.sync.window import load_window

EVENT_OVERLAP = 30
CURSOR = "events"


STATUS_CHANGED = "lead_status_changed"  # recorded as stage history, never refetched


def event_types() -> tuple[str, ...]:
    """The event types the reconcile reads, for every mirrored kind."""
    per_kind = ("deleted", "restored", "linked", "unlinked")
    return (
        *(f"{k.singular}_{what}" for k in ENTITY_KINDS for what in per_kind),
        "entity_linked",
        "entity_unlinked",
        "entity_tag_added",
        "entity_tag_deleted",
        STATUS_CHANGED,
    )


class EventFeed:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    async def read(self) -> int:
        """Apply the events since the cursor; return the rows fixed."""
        m = self.mirror
        window = await load_window(m, CURSOR)
        if window is None:
            return 0
        seen = {str(k): int(v) for k, v in dict(window.state.get("seen") or {}).items()}
        found = await m.kommo.events_since(
            event_types(), window.start(EVENT_OVERLAP), priority=Priority.RECONCILE
        )
        fresh = sorted((e for e in found if e.id not in seen), key=lambda e: e.created_at)
        fixed = await self.apply(fresh) if fresh else 0
        newest = max([window.cursor, *(e.created_at for e in found)])
        seen.update({e.id: e.created_at for e in found})
        keep = {k: v for k, v in seen.items() if v >= newest - EVENT_OVERLAP}
        async with m.res.pool.acquire() as conn:
            await cursors.set_cursor(
                conn, m.account_id, CURSOR, newest, window.saved(newest, seen=keep)
            )
        return fixed

    async def apply(self, events: Sequence[Event]) -> int:
        kinds = {k.singular: k.name for k in ENTITY_KINDS}
        fetch: dict[str, set[int]] = {name: set() for name in kinds.values()}
        deleted: dict[str, set[int]] = {name: set() for name in kinds.values()}
        restored: dict[str, set[int]] = {name: set() for name in kinds.values()}
        for e in events:
            name = kinds.get(e.entity_type)
            if name is None or e.type == STATUS_CHANGED:  # the lead stream has the move itself
                continue
            if e.type == f"{e.entity_type}_deleted":
                deleted[name].add(e.entity_id)
            elif e.type == f"{e.entity_type}_restored":
                restored[name].add(e.entity_id)
            else:
                fetch[name].add(e.entity_id)
                for linked_type, linked_id in e.linked:
                    if linked_type in kinds:
                        fetch[kinds[linked_type]].add(linked_id)
        for name in fetch:
            # A delete and a restore in the same second have no knowable order: an id with a
            # restore is settled by a by-id read (found: restored; not found: deleted).
            deleted[name] -= restored[name]
            fetch[name] = (fetch[name] - deleted[name]) | restored[name]
        when = max(e.created_at for e in events)
        batch = Batch(
            deletes=deleted,
            restored=restored,
            deleted_at=when,
            status_changes=[e for e in events if e.type == STATUS_CHANGED],
        )
        outcome, seen = await self.mirror.fetch_and_apply(
            fetch, priority=Priority.RECONCILE, source="reconcile", batch=batch
        )
        gone = {name: restored[name] - seen.get(name, {}).keys() for name in fetch}
        if any(gone.values()):
            await self.mirror.apply(Batch(deletes=gone, deleted_at=when), "reconcile")
        return sum(len(ids) for ids in outcome.written.values()) + sum(
            len(ids) for ids in deleted.values()
        )
