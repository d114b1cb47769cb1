"""The arq jobs: thin functions over the service's sync logic.

``process_hints`` drains the webhook hint queue (see :mod:`service.hints` for the protocol),
``reconcile_tick`` fires every second on every worker and runs a reconcile tick only when this
worker claimed it, ``backfill`` imports the whole account once (single-flight by a Redis lock),
and ``check_webhook`` keeps Kommo's subscription present and enabled.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter
from redis.exceptions import RedisError

from service import hints, locks, status, subscription
from service.backfill import Backfill
from service.budget import Priority
from service.errors import KommoAuthError, KommoBlocked, KommoError
from service.reconcile import Reconciler
from service.resources import Resources
from service.sync import Batch, Mirror

log = logging.getLogger(__name__)

LAG_RETRY_S = 1.0
LAG_MAX_TRIES = 5
JOBS = Counter("worker_jobs_total", "jobs run by this worker", ["job", "outcome"])
HINT_FETCHES = Counter("hint_ids_processed_total", "webhook hint ids processed", ["kind"])


@dataclass
class Worker:
    """What every job of one worker process shares (held in arq's ctx under "worker")."""

    res: Resources
    mirror: Mirror
    reconciler: Reconciler


def worker_of(ctx: dict[str, Any]) -> Worker:
    worker = ctx["worker"]
    assert isinstance(worker, Worker)
    return worker


STOPPED = "sync:stopped"  # set when Kommo refused our credential: no job calls Kommo again


@contextlib.asynccontextmanager
async def job_edge(w: Worker, job: str) -> AsyncIterator[None]:
    """Where a job meets the outside world: count it, record errors, stop on a dead credential.

    Work left undone stays queued (hints) or uncommitted (cursors) and is retried next time.
    """
    try:
        yield
    except KommoAuthError as exc:
        JOBS.labels(job, "auth_error").inc()
        await stop_syncing(w.res, str(exc))
    except KommoBlocked:
        JOBS.labels(job, "blocked").inc()  # the budget has said so loudly, once per process
    except KommoError as exc:
        JOBS.labels(job, "error").inc()
        log.warning("%s failed, will retry: %s", job, exc)
        await status.record_error(w.res.redis, w.res.settings, job, str(exc))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, OSError) as exc:
        JOBS.labels(job, "unavailable").inc()
        log.warning("%s interrupted (%s: %s); its work stays queued", job,
                    type(exc).__name__, exc)
        with contextlib.suppress(RedisError, OSError):
            await status.record_error(w.res.redis, w.res.settings, job, type(exc).__name__)
    else:
        JOBS.labels(job, "ok").inc()


async def stop_syncing(res: Resources, reason: str) -> None:
    first = await res.redis.set(res.settings.key(STOPPED), reason, nx=True)
    await status.record_error(res.redis, res.settings, "credential", reason)
    if first:
        log.error("KOMMO REFUSED OUR CREDENTIAL: %s. Syncing is stopped; fix KOMMO_TOKEN (or "
                  "the OAuth settings) and restart the workers.", reason)


async def stopped(res: Resources) -> bool:
    return bool(await res.redis.exists(res.settings.key(STOPPED)))


async def process_hints(ctx: dict[str, Any]) -> int:
    w = worker_of(ctx)
    redis, settings = w.res.redis, w.res.settings
    if await stopped(w.res):
        return 0
    token = await hints.acquire_lock(redis, settings)
    if token is None:
        return 0
    processed, started = 0, time.monotonic()
    async with job_edge(w, "process_hints"):
        while token is not None:
            try:
                await hints.clear_scheduled(redis, settings)
                while True:
                    await hints.promote_due(redis, settings)
                    count = await drain_once(w)
                    processed += count
                    if not count or not await hints.extend_lock(redis, settings, token):
                        break
                await hints.clear_scheduled(redis, settings)
            finally:
                await hints.release_lock(redis, settings, token)
            if await hints.pending_count(redis, settings) == 0:
                break
            token = await hints.acquire_lock(redis, settings)
    log.info("process_hints: %d ids in %.2fs", processed, time.monotonic() - started)
    return processed


async def drain_once(w: Worker) -> int:
    """Claim up to 250 ids of each kind, fetch and write them; return how many were claimed.

    A delete webhook is verified by a by-id read before the tombstone: webhooks arrive late
    and out of order, so a delete can land after the restore that undid it. An id Kommo still
    returns is re-checked shortly (its read may lag), then believed.
    """
    redis, settings = w.res.redis, w.res.settings
    if await hints.pending_count(redis, settings) == 0:
        return 0
    async with w.res.require_kommo().admitted(Priority.WEBHOOK):
        return await _drain_claimed(w)


async def _drain_claimed(w: Worker) -> int:
    redis, settings = w.res.redis, w.res.settings
    leads = await hints.claim(redis, settings, "leads")
    contacts = await hints.claim(redis, settings, "contacts")
    lead_dels = await hints.claim(redis, settings, "lead_deletes")
    contact_dels = await hints.claim(redis, settings, "contact_deletes")
    if not (leads or contacts or lead_dels or contact_dels):
        return 0
    restored_leads = await hints.restores(redis, settings, "leads", [i for i, _, _ in leads])
    restored_contacts = await hints.restores(redis, settings, "contacts",
                                             [i for i, _, _ in contacts])
    batch = Batch(restored_leads=restored_leads, restored_contacts=restored_contacts)
    _, lead_seen, contact_seen = await w.mirror.fetch_and_apply(
        lead_ids={i for i, _, _ in (*leads, *lead_dels)},
        contact_ids={i for i, _, _ in (*contacts, *contact_dels)},
        priority=Priority.WEBHOOK, source="webhook", batch=batch,
    )
    gone_leads = [c for c in lead_dels if c[0] not in lead_seen]
    gone_contacts = [c for c in contact_dels if c[0] not in contact_seen]
    # A restore Kommo can no longer read was deleted again.
    again_leads = [i for i in restored_leads if i not in lead_seen]
    again_contacts = [i for i in restored_contacts if i not in contact_seen]
    if gone_leads or gone_contacts or again_leads or again_contacts:
        await w.mirror.apply(Batch(
            lead_deletes=[c[0] for c in gone_leads] + again_leads,
            contact_deletes=[c[0] for c in gone_contacts] + again_contacts,
            deleted_at=max([float(c[2]) for c in (*gone_leads, *gone_contacts)] or [time.time()]),
        ), "webhook")
    work: list[tuple[hints.Kind, list[hints.Claimed], dict[int, int]]] = [
        ("leads", leads, lead_seen), ("contacts", contacts, contact_seen),
        ("lead_deletes", lead_dels, lead_seen), ("contact_deletes", contact_dels, contact_seen),
    ]
    for kind, items, seen in work:
        if kind.endswith("_deletes"):
            lagging = [c for c in items if c[0] in seen]  # still readable right after a delete
        else:
            lagging = [c for c in items if c[2] and seen.get(c[0], 0) < c[2]]
        settled = [c[0] for c in items if c not in lagging]
        if settled:  # a later lag of the same id starts counting afresh
            tries = settings.key(f"hints:lag_tries:{kind}")
            await redis.hdel(tries, *map(str, settled))  # type: ignore[misc]
        retry = await _still_worth_retrying(w, kind, [c[0] for c in lagging])
        await hints.retry_later(redis, settings, kind, [c for c in lagging if c[0] in retry],
                                LAG_RETRY_S)
        await hints.done(redis, settings, kind, [c for c in items if c[0] not in retry])
        HINT_FETCHES.labels(kind).inc(len(items))
    return len(leads) + len(contacts) + len(lead_dels) + len(contact_dels)


async def _still_worth_retrying(w: Worker, kind: str, ids: list[int]) -> set[int]:
    """Kommo's read lags its webhook: retry a few times, then leave it to reconcile."""
    if not ids:
        return set()
    key = w.res.settings.key(f"hints:lag_tries:{kind}")
    async with w.res.redis.pipeline(transaction=False) as pipe:
        for ident in ids:
            pipe.hincrby(key, str(ident), 1)
        pipe.expire(key, 600)
        tries = (await pipe.execute())[:-1]
    keep = {i for i, n in zip(ids, tries, strict=True) if int(n) <= LAG_MAX_TRIES}
    if len(keep) < len(ids):
        log.warning("%d %s still older than their webhook after %d tries; reconcile will "
                    "catch them", len(ids) - len(keep), kind, LAG_MAX_TRIES)
    return keep


async def reconcile_tick(ctx: dict[str, Any]) -> bool:
    w = worker_of(ctx)
    if await stopped(w.res):
        return False
    if await Backfill(w.mirror, show_bar=False).needed():
        await ensure_backfill(w.res)
        return False
    ran = False
    async with job_edge(w, "reconcile"):
        ran = await w.reconciler.maybe_tick() is not None
    return ran


async def ensure_backfill(res: Resources) -> None:
    """Queue the backfill unless one is running (a crashed one's lock expires and it resumes)."""
    if await res.redis.exists(res.settings.key("backfill:lock")):
        return
    await res.arq.enqueue_job("backfill", _queue_name=res.queue_name,
                              _job_id=res.settings.key(f"backfill:{int(time.time() // 60)}"))


async def backfill(ctx: dict[str, Any], restart: bool = False) -> bool:
    w = worker_of(ctx)
    async with locks.held(w.res.redis, w.res.settings.key("backfill:lock")) as mine:
        if not mine:
            return False
        async with job_edge(w, "backfill"):
            await Backfill(w.mirror, show_bar=False).run(restart=restart)
    return True


async def check_webhook(ctx: dict[str, Any]) -> bool:
    """Keep Kommo's subscription present and enabled (needs PUBLIC_URL); True when healthy."""
    w = worker_of(ctx)
    if w.res.settings.public_url is None or w.res.settings.webhook_secret is None:
        return False
    if await stopped(w.res):
        return False
    if not await w.res.redis.set(w.res.settings.key("webhook:checked"), b"1", nx=True, ex=240):
        return False  # another worker checked within the last few minutes
    healthy = False
    async with job_edge(w, "check_webhook"):
        kommo = w.res.require_kommo()
        healthy = (await subscription.heal(kommo, subscription.destination(w.res.settings))).ok
    return healthy
