"""Health, metrics and status of the web process: ``/readyz``, ``/metrics``, ``/api/status``.

``GET /readyz`` answers 200 ``{"ready": true, "postgres": {...}, "redis": {...}, "reconcile":
{...}}`` when Postgres answers ``SELECT 1``, Redis answers ``PING`` and the last reconcile tick
(any worker's) is at most ``3 × RECONCILE_INTERVAL`` old; otherwise 503 with ``"ready": false``
and ``"failed"`` naming the checks that failed. Errors are reported by type only, never with a
DSN. ``GET /metrics`` is this process's Prometheus registry, with the deployment-wide queue
depth and reconcile age refreshed on each scrape. ``GET /api/status`` is
:func:`service.status.gather_status`, behind the read API's token.
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


def health_routes(settings: Settings) -> list[BaseRoute]:
    """``/readyz``, ``/metrics`` and ``/api/status``."""
    limit = 3 * settings.reconcile_interval

    async def readyz(request: Request) -> Response:
        res = resources(request)
        body: dict[str, Any] = {
            "postgres": await _check(res.pool.fetchval("SELECT 1")),
            "redis": await _check(res.redis.ping()),
        }
        reconcile: dict[str, Any] = {"ok": False, "age_seconds": None, "max_age_seconds": limit}
        if body["redis"]["ok"]:
            try:
                age = await status.reconcile_age(res)
            except _UNAVAILABLE as exc:
                reconcile["error"] = type(exc).__name__
            else:
                reconcile["age_seconds"] = None if age is None else round(age, 1)
                reconcile["ok"] = age is not None and age <= limit
                if age is None:
                    reconcile["error"] = "no reconcile has run yet"
                elif age > limit:
                    reconcile["error"] = "reconcile is stale"
        body["reconcile"] = reconcile
        failed = [name for name, check in body.items() if not check["ok"]]
        if failed:
            log.debug("not ready: %s", ", ".join(failed))
        headers = {"Cache-Control": "no-store"}
        return JSONResponse(
            {"ready": not failed, **({"failed": failed} if failed else {}), **body},
            status_code=503 if failed else 200,
            headers=headers,
        )

    async def metrics(request: Request) -> Response:
        res = resources(request)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                QUEUE_DEPTH.set(await hints.pending_count(res.redis, res.keys))
                age = await status.reconcile_age(res)
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
