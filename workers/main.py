"""The worker process: arq settings built from our Settings, resources opened at start-up, and
:func:`serve`, which runs arq until a signal and rides out Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import asyncpg
import httpx
from arq import cron
from arq.worker import Worker as ArqWorker
from arq.worker import func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from service import setting_gauges
from service.keys import Keys
from service.kommo.errors import KommoUnavailable
from service.resources import (
    KOMMO,
    CredentialRefused,
    Outages,
    SyncResources,
    Unreachable,
    arq_redis_settings,
    failure_of,
    kommo_address,
    open_sync_resources,
)
from service.settings import Settings
from service.sync.imports import Imports
from service.sync.mirror import Mirror, resolve_account_id
from service.sync.reconcile import Reconciler
from workers import jobs

log = logging.getLogger(__name__)

RECONNECT_FIRST_S, RECONNECT_MAX_S = 1.0, 10.0
CLOSE_ARQ_S, CLOSE_RESOURCES_S = 3.0, 5.0  # a shutdown takes at most their sum


def worker_options(
    settings: Settings,
    *,
    kommo_transport: httpx.AsyncBaseTransport | None = None,
    outages: Outages | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :class:`arq.worker.Worker`: the queue, the cron names and every
    job id carry ``REDIS_PREFIX``. ``outages``: the process's record of what is down (shared by
    the jobs and :func:`serve`)."""
    keys = Keys.of(settings)
    outages = Outages(log) if outages is None else outages

    async def startup(ctx: dict[str, Any]) -> None:
        setting_gauges.export(settings)
        async with contextlib.AsyncExitStack() as stack:
            res = await stack.enter_async_context(
                open_sync_resources(settings, kommo_transport=kommo_transport)
            )
            mirror = Mirror(res, await _account_id(res))  # a refused credential stops us here
            await res.redis.delete(keys.stopped)  # the credential works again
            imports = Imports(mirror)
            ctx["worker"] = jobs.Worker(res, mirror, Reconciler(mirror), imports, outages)
            if await imports.pending():
                await jobs.ensure_backfill(res)
            ctx["stack"] = stack.pop_all()  # closed by shutdown
        outages.all_back()  # everything answered
        log.info("worker ready for account %d", mirror.account_id)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await _close_resources(ctx)

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
        "redis_settings": arq_redis_settings(settings),
        "queue_name": keys.queue,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "poll_delay": 0.02,
        "max_jobs": 20,
        "job_timeout": 300,
        "keep_result": 0,
        "handle_signals": False,  # serve() owns SIGINT and SIGTERM
        "health_check_key": keys.health_check,
    }


async def _account_id(res: SyncResources) -> int:
    """Resolve the account, waiting out a Kommo that is briefly unavailable (429, 5xx)."""
    delay = 1.0
    for _ in range(30):
        try:
            return await resolve_account_id(res)
        except KommoUnavailable as exc:
            failure = Unreachable(KOMMO, kommo_address(res.settings), exc)
            log.warning("%s at start-up; retrying in %.0fs", failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    return await resolve_account_id(res)


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
        log.info("worker metrics on :%d/metrics", settings.worker_metrics_port)
    return asyncio.run(serve(settings, burst=burst))


async def serve(
    settings: Settings,
    *,
    burst: bool = False,
    kommo_transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Run arq until SIGTERM or SIGINT (0), riding out outages once it has started.

    Starting: a dependency that cannot be reached, or that refuses our credentials, stops the
    process with a :class:`~service.resources.DependencyError` (one line, exit 4 or 5; a
    refused Kommo credential exits 3). Running: when Redis goes (arq's loop dies with the
    connection) the worker reconnects with a backoff, saying so once; Postgres and Kommo
    failures stay inside the jobs (:func:`workers.jobs.job_edge`). A credential refused on
    reconnecting stops it too: retrying a wrong password never helps. A signal ends every
    state within seconds, the wait between attempts included. Jobs interrupted by a lost
    connection leave their work queued (hints) or uncommitted (cursors), so a fresh worker
    simply carries on.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _supervise(settings, burst, kommo_transport, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _supervise(
    settings: Settings,
    burst: bool,
    kommo_transport: httpx.AsyncBaseTransport | None,
    stop: asyncio.Event,
) -> int:
    outages = Outages(log)
    options = worker_options(settings, kommo_transport=kommo_transport, outages=outages)
    delay, started = RECONNECT_FIRST_S, False
    while not stop.is_set():
        worker = ArqWorker(**options, burst=burst)
        error = await _run_until_stopped(worker, stop)
        if error is None or stop.is_set():  # a signal, or a burst that emptied the queue
            return 0
        if "worker" in worker.ctx:  # this attempt got as far as running
            started, delay = True, RECONNECT_FIRST_S
        failure = failure_of(error, settings)
        if failure is None:
            raise error
        if not started or isinstance(failure, CredentialRefused):
            raise failure
        outages.lost(failure, f"reconnecting (backoff up to {RECONNECT_MAX_S:.0f}s)")
        log.debug("reconnecting in %.0fs", delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        delay = min(delay * 2, RECONNECT_MAX_S)
    return 0


async def _run_until_stopped(worker: ArqWorker, stop: asyncio.Event) -> BaseException | None:
    """Run ``worker`` until it ends or ``stop`` is set, then close it; what it failed with."""
    run = asyncio.ensure_future(worker.async_run())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        run.cancel()  # no-op when it has ended
        await asyncio.wait({run})
        await _close(worker)
    return None if run.cancelled() else run.exception()


async def _close(worker: ArqWorker) -> None:
    """arq's side, then ours, each within a bound: a dead Redis must not hold up a shutdown."""
    try:
        async with asyncio.timeout(CLOSE_ARQ_S):
            await worker.close()  # cancels running jobs; they leave their work queued
    except (RedisError, OSError):  # its final Redis call failed: our resources are still open
        with contextlib.suppress(RedisError, OSError):
            await worker.pool.aclose()
    except asyncio.CancelledError:
        if (task := asyncio.current_task()) is not None and task.cancelling():
            raise  # we are being cancelled, not one of the jobs
    await _close_resources(worker.ctx)


async def _close_resources(ctx: dict[str, Any]) -> None:
    stack = ctx.pop("stack", None)
    if stack is not None:
        with contextlib.suppress(RedisError, OSError, asyncpg.InterfaceError):
            async with asyncio.timeout(CLOSE_RESOURCES_S):
                await stack.aclose()
