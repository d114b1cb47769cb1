"""Who may read: the consumer token of ``/ws``, ``/api/leads`` and ``/api/status``."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from service.settings import Settings


def presented_token(conn: HTTPConnection) -> str | None:
    """The token presented: an ``Authorization: Bearer`` header first, then ``?token=`` (as
    Starlette decodes the query string: ``?tok%65n=`` is ``token`` too)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.query_params.get("token") or None


def known_token(settings: Settings, conn: HTTPConnection) -> str | None:
    """Which of ``settings.ws_tokens`` ``conn`` presents (None: none), compared in constant time."""
    token = presented_token(conn)
    if token is None:
        return None
    given = token.encode()
    found = None
    for known in settings.ws_tokens:  # no early exit: every token is compared
        if hmac.compare_digest(given, known.encode()):
            found = known
    return found


def authorized(settings: Settings, conn: HTTPConnection) -> bool:
    """Whether ``conn`` presents one of ``settings.ws_tokens``."""
    return known_token(settings, conn) is not None
