"""Who may read: the consumer token of ``/ws``, ``/api/leads`` and ``/api/status``."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from service.settings import Settings


def presented_token(conn: HTTPConnection) -> str | None:
    """The token presented: an ``Authorization: Bearer`` header first, then ``?token=``."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get("token") or None


def authorized(settings: Settings, conn: HTTPConnection) -> bool:
    """Whether ``conn`` presents one of ``settings.ws_tokens``, compared in constant time."""
    token = presented_token(conn)
    if token is None:
        return False
    given = token.encode()
    ok = False
    for known in settings.ws_tokens:  # no early exit: every token is compared
        ok |= hmac.compare_digest(given, known.encode())
    return ok
