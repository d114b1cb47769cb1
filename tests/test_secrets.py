"""No secret in any log line, at any level, nor in the settings' repr.

The web process as production builds it runs at ``LOG_LEVEL=DEBUG`` (its own handler, from
``configure_logging``, writing to a captured stderr; pytest's handler ahead of it sees every
record before that handler's filter, so the uvicorn loggers must redact at the source). Requests
and sockets present the token in every place it is accepted: the ``Authorization`` header,
``?token=`` and ``?tok%65n=`` (Starlette decodes the key to ``token``).
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import pytest
from redis.asyncio import Redis

from service.logs import configure_logging
from service.redaction import Redactor
from service.settings import Needs, Settings
from tests.webserver import connect_ws, next_event, served

DB_PASSWORD = "dbpass-" + "q7w8e9r0t1y2"  # PostgreSQL trusts local connections: never checked
TOKENS = ("consumer-token-4f1d2c", "second-consumer-8e7a6b")
SECRETS = {
    "KOMMO_TOKEN": "kommo-long-lived-token-55aa",
    "KOMMO_CLIENT_ID": "integration-id",
    "KOMMO_CLIENT_SECRET": "oauth-client-secret-66bb",
    "KOMMO_REDIRECT_URI": "https://sync.example.com/oauth/kommo/callback",
    "KOMMO_AUTH_CODE": "oauth-auth-code-77cc",
    "KOMMO_REFRESH_TOKEN": "oauth-refresh-token-88dd",
}


def _secret_env(env: dict[str, str]) -> dict[str, str]:
    database = env["DATABASE_URL"].replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    assert DB_PASSWORD in database
    return {
        **env,
        **SECRETS,
        "DATABASE_URL": database,
        "WS_TOKENS": ",".join(TOKENS),
        "LOG_LEVEL": "DEBUG",
    }


def _secret_values(env: dict[str, str]) -> list[str]:
    values = [v for k, v in SECRETS.items() if k not in ("KOMMO_CLIENT_ID", "KOMMO_REDIRECT_URI")]
    return [*values, *TOKENS, DB_PASSWORD, env["KOMMO_WEBHOOK_SECRET"]]


def test_the_settings_repr_shows_no_secret(env: dict[str, str]) -> None:
    settings = Settings.from_env(_secret_env(env), Needs.DATABASE | Needs.REDIS | Needs.WEB)
    shown = repr(settings) + str(settings) + repr(settings.ws_tokens) + f"{settings.ws_tokens}"
    leaked = [s for s in _secret_values(env) if s in shown]
    assert leaked == [], leaked
    assert set(settings.ws_tokens) == set(TOKENS)  # still plain strings to compare with


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The test configures the process's logging: put pytest's back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = ("uvicorn", "uvicorn.access", "uvicorn.error", "uvicorn.asgi")
    uvicorns = [logging.getLogger(n) for n in names]
    saved = [(logger.level, logger.propagate, logger.handlers[:]) for logger in uvicorns]
    for logger in uvicorns:  # as in the web process (log_config=None); uvicorn's default
        logger.setLevel(logging.NOTSET)  # logging config, which other tests use, changes them
        logger.propagate, logger.handlers[:] = True, []
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for logger, (level, propagate, handlers) in zip(uvicorns, saved, strict=True):
            logger.setLevel(level)
            logger.propagate, logger.handlers[:] = propagate, handlers
            for f in [f for f in logger.filters if isinstance(f, Redactor)]:
                logger.removeFilter(f)  # a redactor knowing this test's secrets only


async def test_no_log_record_at_debug_shows_a_secret(
    env: dict[str, str],
    pool: asyncpg.Pool,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    restored_logging: None,
) -> None:
    settings = Settings.from_env(_secret_env(env), Needs.DATABASE | Needs.REDIS | Needs.WEB)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)  # where the process's handler writes
    configure_logging(settings, process="web")
    root = logging.getLogger()
    root.handlers.insert(0, caplog.handler)  # sees each record before the handler's filter
    caplog.handler.setLevel(logging.DEBUG)
    quiet = logging.getLogger("tests.client")  # the test's own client logs nothing
    quiet.setLevel(logging.WARNING)
    token, other = TOKENS
    secret = env["KOMMO_WEBHOOK_SECRET"]
    async with served(settings) as running:
        http = running.http
        for path, headers in (
            ("/api/leads", {"Authorization": f"Bearer {token}"}),
            (f"/api/leads?token={token}", {}),
            (f"/api/leads?changed_after=0&tok%65n={other}", {}),
            (f"/api/leads/1?%74oken={quote(token)}&limit=5", {}),
            (f"/api/status?token={token}", {}),
        ):
            response = await http.get(path, headers=headers)
            assert response.status_code in (200, 404), (path, response.status_code)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        encoded = "".join(f"%{b:02X}" for b in secret.encode())  # every character encoded
        for path in (f"/webhooks/kommo/{secret}", f"/webhooks/kommo/{encoded}"):
            response = await http.post(path, content=b"", headers=form)
            assert response.status_code == 400  # an empty body: refused, and logged
        for query, headers in (
            ("", {"Authorization": f"Bearer {token}"}),
            (f"token={token}", {}),
            (f"tok%65n={other}", {}),
        ):
            ws, _ = await connect_ws(running.url(query), additional_headers=headers, logger=quiet)
            await ws.send(json.dumps({"subscribe": "all"}))
            await next_event(ws, "subscribed")
            await ws.send(json.dumps({"token": token, "secret": secret}))  # a frame that echoes
            await next_event(ws, "error")
            await ws.close()
    records = caplog.records
    assert any(r.levelno == logging.DEBUG and r.name == "uvicorn.error" for r in records)
    shown = [r.getMessage() + (r.exc_text or "") for r in records]
    written = stderr.getvalue()
    for value in _secret_values(env):
        leaked = [line for line in shown if value in line]
        assert leaked == [], (value, leaked)
        assert value not in written
    assert any("authorization: ***" in line.lower() for line in shown)  # the header dump
    assert any("tok%65n=***" in line for line in shown)  # the access log, on the decoded key
    assert any("/webhooks/kommo/***" in line for line in shown)
    assert "/api/leads?token=***" in written


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("GET /ws?tok%65n=abc HTTP/1.1", "GET /ws?tok%65n=*** HTTP/1.1"),
        ("GET /ws?a=1&%74%6F%6B%65%6E=abc&b=2", "GET /ws?a=1&%74%6F%6B%65%6E=***&b=2"),
        (
            "GET /oauth/kommo/callback?code=c0de&state=s",
            "GET /oauth/kommo/callback?code=***&state=s",
        ),
        ("GET /ws?tokens=abc", "GET /ws?tokens=abc"),  # not a key Starlette reads as token
        ("< Authorization: Bearer abc.def", "< Authorization: ***"),
        (
            "headers=[(b'authorization', b'Bearer abc')]",
            "headers=[(b'authorization', b'Bearer ***')]",
        ),
        ("connect postgresql://u:pw@db/x failed", "connect postgresql://u:***@db/x failed"),
        ('"POST /webhooks/kommo/s3cr3t HTTP/1.1" 200', '"POST /webhooks/kommo/*** HTTP/1.1" 200'),
        ("a frame with known-secret-value in it", "a frame with *** in it"),
        ("a short one: tiny", "a short one: tiny"),  # below MIN_SECRET_LENGTH: patterns only
    ],
)
def test_redaction_rules(line: str, shown: str) -> None:
    assert Redactor(["known-secret-value", "tiny"]).redact(line) == shown


def test_the_websockets_frame_dumps_are_dropped() -> None:
    from websockets.frames import Frame, Opcode

    frame = Frame(Opcode.TEXT, b'{"subscribe": "all"}')
    record = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "< %s", (frame,), None)
    assert not Redactor().filter(record)
    record = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "< %s", ("GET",), None)
    assert Redactor().filter(record)
