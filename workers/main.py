"""The worker process: arq settings built from our Settings, resources opened at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker as ArqWorker
from arq.worker import func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from service.keys import Keys
from service.kommo.errors import KommoUnavailable
from service.resources import SyncResources, open_sync_resources
from service.settings import Settings
from service.sync.imports import Imports
from service.sync.mirror import Mirror, resolve_account_id
from service.sync.reconcile import Reconciler
from workers import jobs

log = logging.getLogger(__name__)


def worker_options(
    settings: Settings, *, kommo_transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.worker.Worker`: the queue, the cron names and every
    job id carry ``REDIS_PREFIX``."""
    keys = Keys.of(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            res = await stack.enter_async_context(
                open_sync_resources(settings, kommo_transport=kommo_transport)
            )
            mirror = Mirror(res, await _account_id(res))  # a refused credential stops us here
            await res.redis.delete(keys.stopped)  # the credential works again
            imports = Imports(mirror)
            ctx["worker"] = jobs.Worker(res, mirror, Reconciler(mirror), imports)
            if await imports.pending():
                await jobs.ensure_backfill(res)
            ctx["stack"] = stack.pop_all()  # closed by shutdown
        log.info("worker ready for account %d", mirror.account_id)

    async def shutdown(ctx: dict[str, Any]) -> None:
        stack = ctx.get("stack")
        if stack is not None:
            with contextlib.suppress(RedisError, OSError):
                await stack.aclose()

    return {
        "functions": [
            func(jobs.process_hints, keep_result=0, max_tries=1000),
            func(jobs.backfill, keep_result=0, timeout=24 * 3600, max_tries=1000),
        ],
        "cron_jobs": [
            cron(
                jobs.reconcile_tick,
                name=keys.cron_name("cron:reconcile_tick"),
                second=set(range(60)),
                keep_result=0,
                unique=True,
                timeout=600,
                max_tries=1,
            ),
            cron(
                jobs.publish_outbox,
                name=keys.cron_name("cron:publish_outbox"),
                second=set(range(60)),
                keep_result=0,
                unique=True,
                timeout=60,
                max_tries=1,
            ),
            cron(
                jobs.purge_deleted,
                name=keys.cron_name("cron:purge_deleted"),
                hour=3,
                minute=17,
                second=0,
                keep_result=0,
                unique=True,
                timeout=3600,
                max_tries=1,
            ),
            cron(
                jobs.check_webhook,
                name=keys.cron_name("cron:check_webhook"),
                minute=set(range(0, 60, 5)),
                second=30,
                keep_result=0,
                unique=True,
                timeout=60,
                max_tries=1,
            ),
        ],
        "redis_settings": RedisSettings.from_dsn(settings.redis_dsn),
        "queue_name": keys.queue,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "poll_delay": 0.02,
        "max_jobs": 20,
        "job_timeout": 300,
        "keep_result": 0,
        "handle_signals": True,
        "health_check_key": keys.health_check,
    }


async def _account_id(res: SyncResources) -> int:
    """Resolve the account, waiting out a Kommo that is briefly unavailable (429, 5xx)."""
    delay = 1.0
    for _ in range(30):
        try:
            return await resolve_account_id(res)
        except KommoUnavailable as exc:
            log.warning("Kommo unavailable at start-up (%s); retrying in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    return await resolve_account_id(res)


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
        log.info("worker metrics on :%d/metrics", settings.worker_metrics_port)
    return asyncio.run(serve(settings, burst=burst))


async def serve(settings: Settings, *, burst: bool = False) -> int:
    """Run arq until a signal; outlive Redis restarts (arq's own loop dies with the connection).

    Jobs interrupted by a lost connection leave their work queued (hints) or uncommitted
    (cursors), so a fresh worker simply carries on.
    """
    delay = 1.0
    while True:
        worker = ArqWorker(**worker_options(settings), burst=burst)
        try:
            await worker.async_run()
            return 0
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise
            return 0  # SIGINT/SIGTERM: arq cancelled its main task and finishes in close()
        except (RedisError, OSError) as exc:
            log.error(
                "worker lost Redis (%s: %s); starting again in %.0fs",
                type(exc).__name__,
                exc,
                delay,
            )
        finally:
            with contextlib.suppress(RedisError, OSError):
                await worker.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
