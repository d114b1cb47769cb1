"""Health, metrics and status of the web process: ``/readyz``, ``/metrics``, ``/api/status``.

``GET /readyz`` is this process's own readiness: 200 ``{"ready": true, "postgres": {"ok":
true}, "redis": {"ok": true}, ...}`` when Postgres answers ``SELECT 1`` and Redis answers
``PING``; otherwise 503 with ``"ready": false`` and ``"failed"`` naming the checks that failed.
Errors are reported by type only, never with a DSN. The state of the account's sync (a stale
reconcile, a ban) is never part of the decision: restarting web processes cannot cure it, so it
belongs to ``/api/status``, metrics and alerts. The body still shows the last reconcile's age
under ``"informational"`` (no check: its value never changes the answer).

``GET /metrics`` is this process's Prometheus registry, with the deployment-wide queue depth,
reconcile age and Kommo breaker (``kommo_breaker_open``) refreshed on each scrape.
``GET /api/status`` is :func:`service.status.gather_status`, behind the read API's token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.kommo.budget import RateBudget
from service.resources import POSTGRES, REDIS, Outages, Resources
from service.settings import Settings
from service.sync import hints, status
from service.web.auth import authorized
from service.web.state import resources

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
QUEUE_DEPTH = Gauge("hint_queue_depth", "Webhook hint ids waiting for a worker (deployment-wide)")
RECONCILE_AGE = Gauge("reconcile_age_seconds", "Seconds since any worker's last reconcile tick")

_UNAVAILABLE = (RedisError, OSError, TimeoutError)


async def _check(probe: Awaitable[object]) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await probe
    except (*_UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


async def _informational(res: Resources) -> dict[str, Any]:
    """Never a check: the sync's state is not this process's readiness (see /api/status)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            age = await status.reconcile_age(res)
    except _UNAVAILABLE as exc:
        return {"reconcile_age_seconds": None, "error": type(exc).__name__}
    return {"reconcile_age_seconds": None if age is None else round(age, 1)}


def health_routes(settings: Settings, outages: Outages | None = None) -> list[BaseRoute]:
    """``/readyz``, ``/metrics`` and ``/api/status``; ``/readyz`` tells ``outages`` when a
    dependency the app found down answers again."""

    async def readyz(request: Request) -> Response:
        res = resources(request)
        checks: dict[str, Any] = {
            "postgres": await _check(res.pool.fetchval("SELECT 1")),
            "redis": await _check(res.redis.ping()),
        }
        for service, name in ((POSTGRES, "postgres"), (REDIS, "redis")):
            if outages is not None and checks[name]["ok"]:
                outages.back(service)
        failed = [name for name, check in checks.items() if not check["ok"]]
        if failed:
            log.debug("not ready: %s", ", ".join(failed))
        body = {"ready": not failed, **({"failed": failed} if failed else {}), **checks}
        if checks["redis"]["ok"]:
            body["informational"] = await _informational(res)
        return JSONResponse(
            body, status_code=503 if failed else 200, headers={"Cache-Control": "no-store"}
        )

    async def metrics(request: Request) -> Response:
        res = resources(request)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                QUEUE_DEPTH.set(await hints.pending_count(res.redis, res.keys))
                age = await status.reconcile_age(res)
                await RateBudget(res.redis, res.keys, res.settings.rate_limit).breaker()
            RECONCILE_AGE.set(float("nan") if age is None else age)
        except _UNAVAILABLE as exc:
            log.warning(
                "metrics: Redis unavailable (%s); deployment gauges not refreshed",
                type(exc).__name__,
            )
        body = await run_in_threadpool(generate_latest, REGISTRY)
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def api_status(request: Request) -> Response:
        if not authorized(settings, request):
            return JSONResponse(
                {"error": "missing or invalid token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = json.dumps(await status.gather_status(resources(request)), default=str)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})

    return [
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/status", api_status, methods=["GET"]),
    ]
