"""Fetch from Kommo, write the mirror, publish ``lead_update`` after commit.

``Mirror`` is the one write path shared by webhook jobs, reconcile and backfill: each batch is
one transaction (under a per-account lock), and the lead changes it produced are published on
Redis only after that transaction committed. A crash between commit and publish loses no
message for good: the versions are in Postgres and the catch-up read returns them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from service import status, store
from service.budget import Priority
from service.resources import Resources
from service.settings import ConfigError
from service.store import Entity, LeadChange

log = logging.getLogger(__name__)

LEAD_UPDATES = Counter(
    "lead_updates_published_total", "lead_update messages published", ["source", "action"]
)
FRESHNESS = Histogram(
    "lead_update_freshness_seconds", "from Kommo's updated_at to the lead_update", ["source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ROWS_WRITTEN = Counter(
    "mirror_rows_written_total", "rows written to the mirror", ["entity", "source"]
)


@dataclass
class Batch:
    """Everything one transaction writes."""

    leads: Sequence[Entity] = ()
    contacts: Sequence[Entity] = ()
    lead_deletes: Collection[int] = ()
    contact_deletes: Collection[int] = ()
    restored_leads: Collection[int] = ()
    restored_contacts: Collection[int] = ()
    deleted_at: float = field(default_factory=time.time)


@dataclass
class Outcome:
    leads_written: list[int]
    contacts_written: list[int]
    changes: list[LeadChange]


class Mirror:
    """The mirror of one Kommo account: write batches, publish their lead changes."""

    def __init__(self, res: Resources, account_id: int) -> None:
        self.res = res
        self.account_id = account_id
        self.region = res.settings.phone_default_region

    async def apply(self, batch: Batch, source: str) -> Outcome:
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock_account(conn, self.account_id)
            acc = self.account_id
            leads = await store.upsert_leads(conn, acc, batch.leads, restored=batch.restored_leads)
            contacts = await store.upsert_contacts(
                conn, acc, batch.contacts, region=self.region, restored=batch.restored_contacts
            )
            gone_leads = await store.tombstone(conn, acc, "leads", batch.lead_deletes,
                                               batch.deleted_at)
            gone_contacts = await store.tombstone(conn, acc, "contacts", batch.contact_deletes,
                                                  batch.deleted_at)
            touched = set(leads.ids) | set(gone_leads)
            if contacts.ids or gone_contacts:
                touched |= set(await store.leads_showing_contacts(
                    conn, acc, [*contacts.ids, *gone_contacts]))
            if leads.renamed_tags:
                touched |= set(await store.leads_with_tags(conn, acc, leads.renamed_tags))
            changes = await store.refresh_leads(conn, acc, touched, source)
        ROWS_WRITTEN.labels("leads", source).inc(len(leads.ids) + len(gone_leads))
        ROWS_WRITTEN.labels("contacts", source).inc(len(contacts.ids) + len(gone_contacts))
        await self.publish(changes)
        return Outcome(leads.ids, contacts.ids, changes)

    async def publish(self, changes: Sequence[LeadChange]) -> None:
        if not changes:
            return
        channel = self.res.settings.key("lead_update")
        now = time.time()
        latencies = []
        async with self.res.redis.pipeline(transaction=False) as pipe:
            for change in changes:
                pipe.publish(channel, json.dumps(change.envelope(self.account_id)))
                LEAD_UPDATES.labels(change.source, change.action).inc()
                changed_at = _epoch(change.lead.get("updated_at"))
                if changed_at is not None and change.edited and change.action != "deleted":
                    FRESHNESS.labels(change.source).observe(max(0.0, now - changed_at))
                    if change.source == "webhook":
                        latencies.append(max(0.0, now - changed_at) * 1000)
            await pipe.execute()
        await status.record_latencies(self.res.redis, self.res.settings, latencies)

    async def known_contacts(self, ids: Collection[int]) -> set[int]:
        async with self.res.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id FROM contacts WHERE account_id = $1 AND id = ANY($2::bigint[])",
                self.account_id, list(ids),
            )
        return {r["id"] for r in rows}

    async def apply_leads(
        self, leads: Sequence[Entity], *, priority: Priority, source: str,
        batch: Batch | None = None, contact_ids: Collection[int] = (),
    ) -> tuple[Outcome, dict[int, int]]:
        """Write leads (and contacts), first fetching linked contacts the mirror never saw."""
        linked = {int(c["id"]) for e in leads for c in _embedded(e, "contacts")}
        unseen = linked - await self.known_contacts(linked) if linked else set()
        wanted = set(contact_ids) | unseen
        kommo = self.res.require_kommo()
        contacts = await kommo.contacts_by_ids(sorted(wanted), priority=priority) if wanted else []
        batch = batch or Batch()
        batch.leads = [*batch.leads, *leads]
        batch.contacts = [*batch.contacts, *contacts]
        return await self.apply(batch, source), _stamps(contacts)

    async def fetch_and_apply(
        self,
        *,
        lead_ids: Collection[int] = (),
        contact_ids: Collection[int] = (),
        priority: Priority,
        source: str,
        batch: Batch | None = None,
    ) -> tuple[Outcome, dict[int, int], dict[int, int]]:
        """Fetch leads and contacts by id (plus linked contacts never seen) and write them.

        Returns the outcome and the ``updated_at`` Kommo returned per lead and per contact id
        (an id Kommo did not return is absent: deleted, or not visible).
        """
        kommo = self.res.require_kommo()
        batch = batch or Batch()
        lead_set, contact_set = set(lead_ids), set(contact_ids)
        restored = contact_set & set(batch.restored_contacts)
        early: list[dict[str, Any]] = []
        if restored:
            # A restored contact's links come back with it: re-read the leads it shows on.
            early = await kommo.collect(
                "/api/v4/contacts",
                {"filter[id][]": sorted(restored), "with": "leads", "limit": 250},
                "contacts", priority=priority,
            )
            lead_set |= {int(x["id"]) for c in early for x in _embedded(c, "leads")}
            batch.contacts = [*batch.contacts, *early]
        leads = await kommo.leads_by_ids(lead_set, priority=priority) if lead_set else []
        outcome, contacts = await self.apply_leads(
            leads, priority=priority, source=source, batch=batch,
            contact_ids=contact_set - restored,
        )
        return outcome, _stamps(leads), {**_stamps(early), **contacts}


def _embedded(e: Entity, key: str) -> list[Mapping[str, Any]]:
    return list((e.get("_embedded") or {}).get(key) or [])


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _stamps(entities: Iterable[Entity]) -> dict[int, int]:
    return {int(e["id"]): int(e.get("updated_at") or 0) for e in entities}


async def resolve_account_id(res: Resources) -> int:
    """The account our credential opens (checked against KOMMO_ACCOUNT_ID when set).

    This is also the start-up check of the credential: a refused one fails here, loudly.
    """
    account = await res.require_kommo().account(priority=Priority.WEBHOOK)
    found = int(account["id"])
    wanted = res.settings.kommo_account_id
    if wanted is not None and wanted != found:
        raise ConfigError("KOMMO_ACCOUNT_ID", f"does not match the credential's account {found}")
    return found
