"""The web process under uvicorn: ``kommo-sync web``.

One process (``--workers 1``, the default) runs ``create_app(settings)`` in
:class:`service.gateway.Server`, which lets the WebSocket hub close its sockets with 1001 before
uvicorn shuts down. With ``--workers N`` uvicorn forks N processes that each build the app from
the environment (:func:`app_from_env`). Logging is configured by the CLI, never by uvicorn;
uvicorn's records (access log, handshakes, and at DEBUG the websockets library's header dumps)
are redacted at the source by :class:`service.redaction.Redactor`: no level shows a secret.

The WebSocket protocol is uvicorn's sans-I/O one when it has it (the gateway's direct frame path,
:mod:`service.gateway.frames`), and a client frame is at most
:data:`~service.gateway.filters.MAX_FRAME_BYTES` (uvicorn closes the socket with 1009 past it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.gateway import frames
from service.gateway.filters import MAX_FRAME_BYTES
from service.gateway.hub import Hub, Server
from service.logs import configure_logging
from service.redaction import Redactor
from service.resources import DependencyError
from service.settings import Needs, Settings
from service.web.app import create_app
from service.web.webhooks import RedactWebhookPath

WEB_NEEDS = Needs.DATABASE | Needs.REDIS | Needs.WEB


class StartupFailure:
    """Pure ASGI, around the app: a lifespan start-up that failed for a known reason (a
    :class:`~service.resources.DependencyError`: PostgreSQL or Redis unreachable, or refusing
    our credentials) is logged as its one line, not as Starlette's traceback, and kept in
    :attr:`failure` so that :func:`serve` can end with it and its exit code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failure: DependencyError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent once the app has raised: then we know why
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold)
        except DependencyError as exc:
            self.failure = exc
            held[:] = [{**message, "message": str(exc)} for message in held]
            raise
        finally:
            for message in held:
                await send(message)


def redact_access_log(settings: Settings | None = None) -> None:
    """Install the redacting filters on uvicorn's loggers (idempotent; with ``settings`` the
    redactor also knows their secret values): ``uvicorn.access`` logs HTTP requests,
    ``uvicorn.error`` the WebSocket handshakes (``/ws?token=…``) and, at DEBUG, the websockets
    library's header and frame dumps."""
    redactor = Redactor.for_settings(settings)
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, Redactor)]:
            logger.removeFilter(old)
        if not any(isinstance(f, RedactWebhookPath) for f in logger.filters):
            logger.addFilter(RedactWebhookPath())
        logger.addFilter(redactor)


def uvicorn_options(settings: Settings, host: str = "0.0.0.0") -> dict[str, Any]:
    """The ``uvicorn.Config`` options of the web process."""
    return {
        "host": host,
        "port": settings.port,
        "ws": "websockets-sansio" if frames.SANSIO is not None else "auto",
        "ws_max_size": MAX_FRAME_BYTES,  # a subscribe frame with full filter lists fits
        "ws_per_message_deflate": False,  # per-message deflate halves the gateway's capacity
        "log_config": None,
        "timeout_graceful_shutdown": 5,
        "proxy_headers": True,  # trusted from FORWARDED_ALLOW_IPS (default 127.0.0.1)
        "server_header": False,
    }


def build_server(
    settings: Settings, host: str = "0.0.0.0", *, hub: Hub | None = None, **options: Any
) -> Server:
    """The single-process web server, redaction installed; ``hub`` and ``options`` (uvicorn's,
    over :func:`uvicorn_options`) are for tests and benchmarks."""
    redact_access_log(settings)
    hub = Hub(settings) if hub is None else hub
    app = StartupFailure(create_app(settings, hub=hub))
    config = uvicorn.Config(app, **{**uvicorn_options(settings, host), **options})
    return Server(config, hub)


def serve(settings: Settings, host: str = "0.0.0.0", workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a clean shutdown. A dependency that fails start-up
    is raised as its :class:`~service.resources.DependencyError` (one line and its exit code,
    printed by the CLI); uvicorn's own start-up failures (e.g. the port is taken) exit 3."""
    if workers > 1:
        redact_access_log(settings)
        uvicorn.run(
            "service.web.server:app_from_env",
            factory=True,
            workers=workers,
            **uvicorn_options(settings, host),
        )
        return 0
    server = build_server(settings, host)
    app = server.config.app
    try:
        server.run()
    except SystemExit:  # uvicorn's way out of a failed start-up
        if isinstance(app, StartupFailure) and app.failure is not None:
            raise app.failure from None
        raise
    return 0 if server.started else 3


def app_from_env() -> ASGIApp:
    """The app factory for ``--workers N``: each worker process re-reads the environment (and
    logs a dependency's start-up failure as one line; uvicorn then stops them all)."""
    settings = Settings.from_env(os.environ, WEB_NEEDS)
    configure_logging(settings, process="web")
    redact_access_log(settings)
    return StartupFailure(create_app(settings))
