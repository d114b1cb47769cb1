"""The one write path: fetch from Kommo, write the mirror, publish ``lead_update`` after commit.

Webhook drains, reconcile and backfill all write through :meth:`Mirror.apply`: each batch is one
transaction (under a per-account lock) that writes entities, their tags, links and phones,
dictionaries and tombstones, then recomputes what every touched lead shows; the lead changes it
produced are published on Redis only after that transaction committed. A crash between commit
and publish loses no message for good: the versions are in Postgres and the catch-up read
returns them.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from service.kinds import ENTITY_KINDS, LEADS, EntityKind, kind_named
from service.kommo.budget import Priority
from service.records import CustomField, Event, LossReason, Pipeline, Record, TagRef, User
from service.resources import SyncResources
from service.settings import ConfigError
from service.store import Conn, dictionaries, entities, history, leadview, links
from service.store.leadview import LeadChange
from service.sync import outbox, status

log = logging.getLogger(__name__)

LEAD_UPDATES = Counter(
    "lead_updates_published_total", "lead_update messages published", ["source", "action"]
)
for _source, _action in itertools.product(
    ("webhook", "reconcile", "backfill"), ("created", "updated", "deleted", "restored")
):
    LEAD_UPDATES.labels(_source, _action)  # exported at 0 from the start, for increase()
FRESHNESS = Histogram(
    "lead_update_freshness_seconds",
    "from Kommo's updated_at to the lead_update",
    ["source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ROWS_WRITTEN = Counter(
    "mirror_rows_written_total", "rows written to the mirror", ["entity", "source"]
)

RESHOW_CHUNK = 2000  # leads re-shown per transaction after a rename many leads show
Ids = Mapping[str, Collection[int]]
"""Entity ids by kind name."""


def _per_kind() -> dict[str, Any]:
    return {k.name: set() for k in ENTITY_KINDS}


@dataclass
class Batch:
    """Everything one transaction writes. Keys of the per-kind maps are kind names."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    deletes: dict[str, set[int]] = field(default_factory=_per_kind)
    restored: dict[str, set[int]] = field(default_factory=_per_kind)
    deleted_at: float = field(default_factory=time.time)
    pipelines: Sequence[Pipeline] | None = None  # a complete listing, or None
    users: Sequence[User] | None = None  # a complete listing, or None
    loss_reasons: Sequence[LossReason] | None = None  # a complete listing, or None
    custom_fields: dict[str, list[CustomField]] = field(default_factory=dict)  # per kind
    tags: dict[str, list[TagRef]] = field(default_factory=dict)  # tag dictionaries, per kind
    status_changes: Sequence[Event] = ()  # lead_status_changed events (the stage history)
    quiet: bool = False  # an upgrade: rewrite every row (side tables an earlier release lacked);
    # what leads show gains the new fields without new versions (a real change still publishes)
    rewrite: bool = False  # write every row even when Kommo's object is the one stored

    def add(self, records: Iterable[Record]) -> None:
        for r in records:
            self.records.setdefault(r.kind.name, []).append(r)


@dataclass
class Names:
    """Dictionary entries leads show by name that a batch renamed (or added)."""

    pipelines: list[int] = field(default_factory=list)
    statuses: list[tuple[int, int]] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    loss_reasons: list[int] = field(default_factory=list)


@dataclass
class Outcome:
    written: dict[str, list[int]]  # ids written, per kind
    deleted: dict[str, list[int]]  # ids tombstoned, per kind
    changes: list[LeadChange]

    def count(self) -> int:
        return sum(map(len, self.written.values())) + sum(map(len, self.deleted.values()))


class Mirror:
    """The mirror of one Kommo account: write batches, publish their lead changes."""

    def __init__(self, res: SyncResources, account_id: int) -> None:
        self.res = res
        self.kommo = res.kommo
        self.account_id = account_id
        self.region = res.settings.phone_default_region

    async def apply(self, batch: Batch, source: str) -> Outcome:
        """Write the batch in one transaction, then publish what leads now show differently.

        A dictionary change that many leads show (a stage renamed) re-shows them afterwards in
        transactions of ``RESHOW_CHUNK`` leads, so that other writers are not held up."""
        acc = self.account_id
        async with self.res.pool.acquire() as conn, conn.transaction():
            await leadview.lock_account(conn, acc)
            names = await self._dictionaries(conn, batch)
            written, deleted, renamed_tags = await self._entities(conn, batch)
            touched = set(written[LEADS.name]) | set(deleted[LEADS.name])
            for kind in ENTITY_KINDS:
                if kind is not LEADS and (written[kind.name] or deleted[kind.name]):
                    touched.update(
                        await leadview.leads_showing(
                            conn, acc, kind, [*written[kind.name], *deleted[kind.name]]
                        )
                    )
            touched.update(await leadview.leads_with_tags(conn, acc, renamed_tags))
            names.loss_reasons += await dictionaries.upsert_loss_reasons(
                conn,
                acc,
                [
                    r.loss_reason
                    for r in batch.records.get(LEADS.name, ())
                    if r.loss_reason is not None
                ],
                complete=False,
            )
            reshow = await leadview.leads_showing_names(
                conn, acc, names.pipelines, names.statuses, names.users, names.loss_reasons
            )
            if len(reshow) <= RESHOW_CHUNK:
                touched.update(reshow)
                reshow = []
            if batch.quiet:
                touched = set(await leadview.refresh_quietly(conn, acc, touched))
            changes = await leadview.refresh_leads(conn, acc, touched, source)
            stale = await self._stale_dictionaries(conn, batch, written[LEADS.name])
        for kind in ENTITY_KINDS:
            ROWS_WRITTEN.labels(kind.name, source).inc(
                len(written[kind.name]) + len(deleted[kind.name])
            )
        await self.publish(changes)
        if stale:
            await self.res.redis.sadd(self.res.keys.dictionaries_stale, *stale)  # type: ignore[misc]
        if reshow:
            changes += await self.reshow(reshow, source, quiet=batch.quiet)
        return Outcome(written, deleted, changes)

    async def reshow(
        self, lead_ids: Sequence[int], source: str, *, quiet: bool = False
    ) -> list[LeadChange]:
        """Re-show these leads, ``RESHOW_CHUNK`` per transaction (one statement each)."""
        changes: list[LeadChange] = []
        for i in range(0, len(lead_ids), RESHOW_CHUNK):
            chunk = lead_ids[i : i + RESHOW_CHUNK]
            async with self.res.pool.acquire() as conn, conn.transaction():
                await leadview.lock_account(conn, self.account_id)
                if quiet:
                    chunk = await leadview.refresh_quietly(conn, self.account_id, chunk)
                done = await leadview.refresh_leads(conn, self.account_id, chunk, source)
            await self.publish(done)
            changes += done
        return changes

    async def _dictionaries(self, conn: Conn, batch: Batch) -> Names:
        acc, names = self.account_id, Names()
        if batch.pipelines is not None:
            names.pipelines, names.statuses = await dictionaries.replace_pipelines(
                conn, acc, batch.pipelines
            )
        if batch.users is not None:
            names.users = await dictionaries.replace_users(conn, acc, batch.users)
        if batch.loss_reasons is not None:
            names.loss_reasons = await dictionaries.upsert_loss_reasons(
                conn, acc, batch.loss_reasons, complete=True
            )
        for entity_type, defined in batch.custom_fields.items():
            await dictionaries.replace_custom_fields(conn, acc, entity_type, defined)
        await history.record_status_changes(conn, acc, batch.status_changes)
        return names

    async def _entities(
        self, conn: Conn, batch: Batch
    ) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        """Upsert every kind with its side tables, then tombstones; returns the ids written and
        deleted per kind, and the lead tags renamed (their leads show the new name)."""
        acc, region = self.account_id, self.region
        written: dict[str, list[int]] = {}
        deleted: dict[str, list[int]] = {}
        renamed: list[int] = []
        for name, tags in batch.tags.items():
            changed = await links.upsert_tags(conn, acc, kind_named(name), tags)
            renamed += changed if name == LEADS.name else []
        for kind in ENTITY_KINDS:
            rows = await entities.upsert(
                conn,
                acc,
                kind,
                batch.records.get(kind.name, ()),
                restored=batch.restored.get(kind.name, ()),
                rewrite=batch.quiet or batch.rewrite,
            )
            changed = await links.replace_all(conn, acc, kind, rows, region)
            renamed += changed if kind is LEADS else []
            written[kind.name] = [r.id for r in rows]
        for kind in ENTITY_KINDS:
            deleted[kind.name] = await entities.tombstone(
                conn, acc, kind, batch.deletes.get(kind.name, ()), batch.deleted_at
            )
        return written, deleted, renamed

    async def _stale_dictionaries(
        self, conn: Conn, batch: Batch, leads: Sequence[int]
    ) -> list[str]:
        """Dictionaries the written records point past (read again on the next tick)."""
        stale = sorted(await dictionaries.missing_for_leads(conn, self.account_id, leads))
        for kind in ENTITY_KINDS:
            ids = [v.field_id for r in batch.records.get(kind.name, ()) for v in r.values]
            if ids and await dictionaries.unknown_fields(conn, self.account_id, kind.name, ids):
                stale.append(f"custom_fields:{kind.name}")
        return stale

    async def publish(self, changes: Sequence[LeadChange]) -> None:
        """After the commit: publish the batch's messages and drop them from the outbox."""
        if not changes:
            return
        await outbox.publish(self.res, [(c.version, c.payload) for c in changes])
        now = time.time()
        latencies = []
        for change in changes:
            LEAD_UPDATES.labels(change.source, change.action).inc()
            changed_at = _epoch(change.updated_at)
            if changed_at is not None and change.edited and change.action != "deleted":
                FRESHNESS.labels(change.source).observe(max(0.0, now - changed_at))
                if change.source == "webhook":
                    latencies.append(max(0.0, now - changed_at) * 1000)
        await status.record_latencies(self.res.redis, self.res.keys, latencies)

    async def known(self, kind: EntityKind, ids: Collection[int]) -> set[int]:
        async with self.res.pool.acquire() as conn:
            return await entities.known_ids(conn, self.account_id, kind, ids)

    async def apply_leads(
        self,
        leads: Sequence[Record],
        *,
        priority: Priority,
        source: str,
        batch: Batch | None = None,
        ids: Ids | None = None,
    ) -> tuple[Outcome, dict[str, dict[int, int]]]:
        """Write leads, first fetching what they link to that the mirror never saw (and the
        entities in ``ids``); returns the outcome and the ``updated_at`` of what was fetched."""
        batch = batch or Batch()
        batch.add(leads)
        seen: dict[str, dict[int, int]] = {}
        for kind in _linked_kinds():
            link = next(lk for lk in LEADS.links if lk.target == kind.owner)
            linked = {t for r in leads for t in r.linked(link.embedded)}
            wanted = set((ids or {}).get(kind.name, ())) | (
                linked - await self.known(kind, linked) if linked else set()
            )
            found = await self.kommo.by_ids(kind, wanted, priority=priority) if wanted else []
            batch.add(found)
            seen[kind.name] = _stamps(found)
        return await self.apply(batch, source), seen

    async def fetch_and_apply(
        self, ids: Ids, *, priority: Priority, source: str, batch: Batch | None = None
    ) -> tuple[Outcome, dict[str, dict[int, int]]]:
        """Fetch entities by id (plus linked ones never seen) and write them.

        Returns the outcome and, per kind, the ``updated_at`` Kommo returned per id (an id Kommo
        did not return is absent: deleted, or not visible).
        """
        batch = batch or Batch()
        lead_ids = set(ids.get(LEADS.name, ()))
        rest = {k: set(v) for k, v in ids.items() if k != LEADS.name}
        early: dict[str, dict[int, int]] = {}
        for kind in _linked_kinds():
            restored = rest.get(kind.name, set()) & batch.restored.get(kind.name, set())
            if restored:  # a restored contact's links come back with it: re-read its leads
                found, their_leads = await self.kommo.leads_of_contacts(
                    kind, restored, priority=priority
                )
                batch.add(found)
                early[kind.name] = _stamps(found)
                lead_ids |= their_leads
                rest[kind.name] -= restored
        leads = await self.kommo.by_ids(LEADS, lead_ids, priority=priority) if lead_ids else []
        outcome, seen = await self.apply_leads(
            leads, priority=priority, source=source, batch=batch, ids=rest
        )
        stamps = {LEADS.name: _stamps(leads)}
        for kind in _linked_kinds():
            stamps[kind.name] = {**early.get(kind.name, {}), **seen.get(kind.name, {})}
        return outcome, stamps


def _linked_kinds() -> list[EntityKind]:
    """The kinds leads link to (and show): contacts, …"""
    targets = {link.target for link in LEADS.links}
    return [k for k in ENTITY_KINDS if k.owner in targets]


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _stamps(records: Iterable[Record]) -> dict[int, int]:
    return {r.id: r.updated_at for r in records}


async def resolve_account_id(res: SyncResources) -> int:
    """The account our credential opens (checked against KOMMO_ACCOUNT_ID when set).

    This is also the start-up check of the credential: a refused one fails here, loudly.
    """
    account = await res.kommo.account(priority=Priority.WEBHOOK)
    found = int(account["id"])
    wanted = res.settings.kommo_account_id
    if wanted is not None and wanted != found:
        raise ConfigError("KOMMO_ACCOUNT_ID", f"does not match the credential's account {found}")
    return found
