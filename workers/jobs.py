"""The worker's jobs: a few lines each around the sync engine, and the edge where they meet the
outside world (errors counted and recorded, a refused credential stops every job)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import asyncpg
from prometheus_client import Counter
from redis.exceptions import RedisError

from service.kommo.errors import KommoAuthError, KommoBlocked, KommoError
from service.resources import KOMMO, Outages, SyncResources, failure_of, kommo_address
from service.sync import locks, outbox, retention, status, subscription
from service.sync.drain import Drain
from service.sync.imports import Imports
from service.sync.mirror import Mirror
from service.sync.reconcile import Reconciler

log = logging.getLogger(__name__)

Job = Literal[
    "process_hints", "reconcile", "publish_outbox", "purge_deleted", "backfill", "check_webhook"
]
Outcome = Literal["ok", "error", "unavailable", "blocked", "auth_error"]
JOBS = Counter("worker_jobs_total", "jobs run by this worker", ["job", "outcome"])

# Counters of known label values are exported at 0 from the start, so that increase() and
# rate() see their first increment (a series that appears at 1 has no increase). The values
# of lead_update's source and action are the contract's (shared/design.md).
for _labels in itertools.product(get_args(Job), get_args(Outcome)):
    JOBS.labels(*_labels)


@dataclass(frozen=True)
class Worker:
    """What every job of one worker process shares (held in arq's ctx under "worker")."""

    res: SyncResources
    mirror: Mirror
    reconciler: Reconciler
    imports: Imports
    outages: Outages = field(default_factory=lambda: Outages(log))


def worker_of(ctx: dict[str, Any]) -> Worker:
    worker = ctx["worker"]
    assert isinstance(worker, Worker)
    return worker


@contextlib.asynccontextmanager
async def job_edge(w: Worker, job: Job) -> AsyncIterator[None]:
    """Where a job meets the outside world: count it, record errors, stop on a dead credential.

    Work left undone stays queued (hints) or uncommitted (cursors) and is retried next time.
    A dependency that cannot be reached is logged once when it goes and once when it is back
    (:class:`~service.resources.Outages`), not once per job: the reconcile cron fires every
    second on every worker.
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
        where = f"{KOMMO} at {kommo_address(w.res.settings)}"
        log.warning("%s failed, will retry (%s: %s)", job, where, exc)
        await status.record_error(w.res.redis, w.res.keys, job, str(exc))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, OSError) as exc:
        JOBS.labels(job, "unavailable").inc()
        failure = failure_of(exc, w.res.settings)
        if failure is None:  # e.g. a statement Postgres refused: not an outage
            log.warning(
                "%s interrupted (%s: %s); its work stays queued", job, type(exc).__name__, exc
            )
        else:
            w.outages.lost(failure, "jobs will retry; their work stays queued")
        with contextlib.suppress(RedisError, OSError):
            await status.record_error(
                w.res.redis, w.res.keys, job, str(failure or type(exc).__name__)
            )
    else:
        JOBS.labels(job, "ok").inc()
        for service in w.outages.down:  # only during an outage: is it over?
            if await w.res.reachable(service):
                w.outages.back(service)


async def stop_syncing(res: SyncResources, reason: str) -> None:
    first = await res.redis.set(res.keys.stopped, reason, nx=True)
    await status.record_error(res.redis, res.keys, "credential", reason)
    if first:
        log.error(
            "KOMMO REFUSED OUR CREDENTIAL: %s. Syncing is stopped; fix KOMMO_TOKEN (or "
            "the OAuth settings) and restart the workers.",
            reason,
        )


async def stopped(res: SyncResources) -> bool:
    return bool(await res.redis.exists(res.keys.stopped))


async def process_hints(ctx: dict[str, Any]) -> int:
    w = worker_of(ctx)
    processed, started = 0, time.monotonic()
    async with job_edge(w, "process_hints"):
        if not await stopped(w.res):
            processed = await Drain(w.mirror).run()
    if processed:
        log.info("process_hints: %d ids in %.2fs", processed, time.monotonic() - started)
    return processed


async def reconcile_tick(ctx: dict[str, Any]) -> bool:
    w = worker_of(ctx)
    ran = False
    async with job_edge(w, "reconcile"):
        ran = await _reconcile(w)
    return ran


async def _reconcile(w: Worker) -> bool:
    if await stopped(w.res):
        return False
    pending = await w.imports.pending()
    if pending:
        await ensure_backfill(w.res)
        if pending[0] == "backfill":
            return False  # the reconcile starts from the cursors the backfill leaves
    return await w.reconciler.maybe_tick() is not None


async def publish_outbox(ctx: dict[str, Any]) -> int:
    """Publish lead_update messages a writer committed but never published (it died)."""
    w = worker_of(ctx)
    swept = 0
    async with job_edge(w, "publish_outbox"):
        swept = await outbox.sweep(w.res)
    return swept


async def purge_deleted(ctx: dict[str, Any]) -> int:
    """Daily, with PURGE_DELETED_AFTER_DAYS: scrub personal data of long-deleted entities."""
    w = worker_of(ctx)
    days = w.res.settings.purge_deleted_after_days
    if days is None:
        return 0
    removed: dict[str, int] = {}
    async with job_edge(w, "purge_deleted"):
        removed = await retention.purge(w.res, time.time() - days * 86400)
    return sum(removed.values())


async def ensure_backfill(res: SyncResources) -> None:
    """Queue the backfill unless one is running (a crashed one's lock expires and it resumes)."""
    if await res.redis.exists(res.keys.backfill_lock):
        return
    await res.arq.enqueue_job(
        "backfill",
        _queue_name=res.keys.queue,
        _job_id=res.keys.job_id("backfill", str(int(time.time() // 60))),
    )


async def backfill(ctx: dict[str, Any], restart: bool = False) -> bool:
    """The background imports, one after the other (one at a time deployment-wide): the
    backfill, the quiet upgrade of an older mirror, the stage history."""
    w = worker_of(ctx)
    ran = False
    async with job_edge(w, "backfill"):  # the lock too: a Redis outage is one line, not a trace
        async with locks.held(w.res.redis, w.res.keys.backfill_lock) as mine:
            if mine:
                await w.imports.run(restart=restart)
                ran = True
    return ran


async def check_webhook(ctx: dict[str, Any]) -> bool:
    """Keep Kommo's subscription present and enabled (needs PUBLIC_URL); True when healthy."""
    w = worker_of(ctx)
    if w.res.settings.public_url is None or w.res.settings.webhook_secret is None:
        return False
    healthy = False
    async with job_edge(w, "check_webhook"):
        healthy = await _check_webhook(w)
    return healthy


async def _check_webhook(w: Worker) -> bool:
    """One worker checks per round; the others export NaN, so that the deployment's
    ``webhook_subscription_ok`` is the last checker's verdict (``min`` ignores NaN)."""
    if await stopped(w.res) or not await w.res.redis.set(
        w.res.keys.webhook_checked, b"1", nx=True, ex=240
    ):  # stopped, or another worker checked within the last few minutes
        subscription.SUBSCRIPTION_OK.set(math.nan)
        return False
    url = subscription.destination(w.res.settings)
    return (await subscription.heal(w.res.kommo, url)).ok
