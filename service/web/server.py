"""The web process under uvicorn: ``kommo-sync web``.

One process (``--workers 1``, the default) runs ``create_app(settings)`` in
:class:`service.gateway.Server`, which lets the WebSocket hub close its sockets with 1001 before
uvicorn shuts down. With ``--workers N`` uvicorn forks N processes that each build the app from
the environment (:func:`app_from_env`). Logging is configured by the CLI, never by uvicorn;
access-log lines have the webhook secret and ``token=`` query values redacted.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.gateway.hub import Hub, Server
from service.logs import configure_logging
from service.resources import DependencyError
from service.settings import Needs, Settings
from service.web.app import create_app
from service.web.webhooks import RedactWebhookPath

WEB_NEEDS = Needs.DATABASE | Needs.REDIS | Needs.WEB
_TOKEN_ARG = re.compile(r"([?&]token=)[^&\s\"']*")


class RedactTokens(logging.Filter):
    """Rewrite ``?token=<value>`` (WebSocket and read-API clients) to ``?token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _TOKEN_ARG.sub(r"\1***", a) if isinstance(a, str) and "token=" in a else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_ARG.sub(r"\1***", record.msg)
        return True


def redact_access_log() -> None:
    """Install the redacting filters on uvicorn's loggers (idempotent): ``uvicorn.access`` logs
    HTTP requests, ``uvicorn.error`` the WebSocket handshakes (``/ws?token=…``)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        for kind in (RedactWebhookPath, RedactTokens):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())


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


def _options(settings: Settings, host: str) -> dict[str, Any]:
    return {
        "host": host,
        "port": settings.port,
        "ws_per_message_deflate": False,  # per-message deflate halves the gateway's capacity
        "log_config": None,
        "timeout_graceful_shutdown": 5,
        "proxy_headers": True,  # trusted from FORWARDED_ALLOW_IPS (default 127.0.0.1)
        "server_header": False,
    }


def serve(settings: Settings, host: str = "0.0.0.0", workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a clean shutdown. A dependency that fails start-up
    is raised as its :class:`~service.resources.DependencyError` (one line and its exit code,
    printed by the CLI); uvicorn's own start-up failures (e.g. the port is taken) exit 3."""
    redact_access_log()
    if workers > 1:
        uvicorn.run(
            "service.web.server:app_from_env",
            factory=True,
            workers=workers,
            **_options(settings, host),
        )
        return 0
    hub = Hub(settings)
    app = StartupFailure(create_app(settings, hub=hub))
    server = Server(uvicorn.Config(app, **_options(settings, host)), hub)
    try:
        server.run()
    except SystemExit:  # uvicorn's way out of a failed start-up
        if app.failure is not None:
            raise app.failure from None
        raise
    return 0 if server.started else 3


def app_from_env() -> ASGIApp:
    """The app factory for ``--workers N``: each worker process re-reads the environment (and
    logs a dependency's start-up failure as one line; uvicorn then stops them all)."""
    settings = Settings.from_env(os.environ, WEB_NEEDS)
    configure_logging(settings, process="web")
    redact_access_log()
    return StartupFailure(create_app(settings))
