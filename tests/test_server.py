"""The web process's edges: log redaction and the live page."""

from __future__ import annotations

import logging

import httpx

from service.web.server import redact_access_log


def _render(logger: str, msg: str, *args: object) -> str:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, args, None)
    assert logging.getLogger(logger).filter(record)
    return record.getMessage()


def test_access_log_hides_webhook_secret_and_tokens() -> None:
    redact_access_log()
    redact_access_log()  # idempotent
    assert len(logging.getLogger("uvicorn.access").filters) == 2
    line = _render(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "POST",
        "/webhooks/kommo/" + "x" * 40,
        "1.1",
        200,
    )
    assert "x" * 40 not in line and "/webhooks/kommo/***" in line
    line = _render(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        "/api/leads?changed_after=3&token=sekrit-token&limit=5",
        "1.1",
        200,
    )
    assert "sekrit" not in line and "token=***&limit=5" in line
    line = _render(
        "uvicorn.error",
        '%s - "WebSocket %s" [accepted]',
        "127.0.0.1:5000",
        "/ws?token=sekrit-token",
    )
    assert "sekrit" not in line and "/ws?token=***" in line


async def test_live_page_is_served_self_contained(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert "<script>" in html and "/ws?token=" in html and "/api/status" in html
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere
