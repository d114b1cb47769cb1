"""The web process's HTTP traffic in Prometheus: :class:`TrafficMetrics`, a pure ASGI middleware.

Every HTTP request is counted in ``http_requests_total{route,method,status}`` and timed in
``http_request_duration_seconds{route,method}`` (to the end of its response). ``route`` is the
path template of the route that answered (``/webhooks/kommo/{secret}``, ``/api/leads/{lead_id}``),
never the concrete path: the webhook's path holds the secret, and concrete paths would make a
series per lead id or per probe of a scanner. A request no route matched is ``unmatched``;
a method outside :data:`METHODS` is ``other``. Only HTTP: the WebSocket gateway and the
lifespan pass through untouched.

Starlette's router records the route it matched in the scope (``scope["route"]``), which this
middleware reads once the app has answered. A request whose handler raised before it started
a response is counted as 500: what the outermost error middleware answers.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED: Final = "unmatched"

REQUESTS = Counter(
    "http_requests", "HTTP requests answered by this web process", ["route", "method", "status"]
)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, to the end of the response",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def route_of(scope: Scope) -> str:
    """The path template of the route that matched (Starlette's router sets it), or
    :data:`UNMATCHED`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class TrafficMetrics:
    """Count and time every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUESTS.labels(route, method, str(status)).inc()
            DURATION.labels(route, method).observe(time.perf_counter() - started)
