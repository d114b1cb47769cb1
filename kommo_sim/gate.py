"""The gate in front of every API call: request id, token check, blocks, rate limit,
injected faults, and the request counters. A pure ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

logger = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
NGINX_403 = """<html>
<head><title>403 Forbidden</title></head>
<body>
<center><h1>403 Forbidden</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""
GATEWAY_429 = NGINX_403.replace("403 Forbidden", "429 Too Many Requests")
_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def problem(
    status: int,
    title: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "title": title,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def route_path(scope: Scope) -> str:
    """The path below the mount point (an account of a fleet is served under a prefix)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def endpoint_of(method: str, path: str) -> str:
    """``GET /api/v4/leads/24000101`` -> ``GET /api/v4/leads/{id}`` (the counters' key)."""
    return f"{method} {_ID_SEGMENT.sub('/{id}', path.rstrip('/') or '/')}"


class Gate:
    """Wraps the app; only ``/api/v4`` and ``/oauth2`` calls are gated and counted."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or not path.startswith(("/api/v4", "/oauth2")):
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        status_seen = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status_seen
            if message["type"] == "http.response.start":
                status_seen = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        early = await self._check(scope, path) if path.startswith("/api/v4") else None
        if early is not None:
            await early(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        self.sim.counters[(endpoint_of(scope["method"], path), status_seen)] += 1
        logger.debug("%s %s -> %s", scope["method"], path, status_seen)

    async def _check(self, scope: Scope, path: str) -> Response | None:
        sim, faults = self.sim, self.sim.faults
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token or not sim.tokens.is_valid(token):
            return problem(401, "Unauthorized", "Invalid user name or password")
        if faults.payment_required:
            return problem(402, "Payment Required", "Payment required")
        now = sim.clock.now()
        if now < faults.block_until:
            return Response(NGINX_403, status_code=403, media_type="text/html")
        verdict = sim.ratelimit.check(token)
        if verdict == "ok" and now < faults.storm_until:
            verdict = "403" if sim.ratelimit.note_429() else "429"
        if verdict == "403":
            return Response(NGINX_403, status_code=403, media_type="text/html")
        if verdict == "429":
            return self._too_many()
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.roll(faults.error_rate):
            status = faults.error_status
            return Response(
                json.dumps(
                    {
                        "title": "ErrInternalServer",
                        "status": status,
                        "detail": "Our team are probably already working on the elimination of the "
                        "problem",
                        "trace_id": str(uuid.uuid4()),
                    }
                ),
                status_code=status,
                media_type=PROBLEM,
            )
        return None

    def _too_many(self) -> Response:
        if self.sim.faults.html_429:
            return Response(GATEWAY_429, status_code=429, media_type="text/html")
        return problem(
            429,
            "Too Many Requests",
            "You have sent too many requests in a given amount of time. Please try again later.",
            {"retry_after": self.sim.ratelimit.config.retry_after},
        )
