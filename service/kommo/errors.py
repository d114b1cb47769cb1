"""What can go wrong when talking to Kommo, as one small exception tree.

```
KommoError
 ├── KommoUnavailable      — retry later: 5xx, timeouts, connection errors
 │    └── KommoRateLimited — 429 (retry_after: float)
 └── KommoRejected         — don't retry
      ├── KommoAuthError       — 401 / revoked or expired credential / OAuth refresh refused
      ├── KommoPaymentRequired — 402
      ├── KommoBlocked         — 403 block: the breaker is open for every process (until: float)
      └── KommoBadRequest      — 400/404/405/422 and other 4xx
```

Callers decide with two ``except`` clauses: :class:`KommoUnavailable` means "the same call may
work later", :class:`KommoRejected` means "repeating it will not help". Messages name the
method, the endpoint template and the status; they never contain tokens, secrets, the
``Authorization`` header or query strings (:func:`detail` strips them from error bodies).
"""

from __future__ import annotations

import re
from typing import Any

import httpx


class KommoError(Exception):
    """Base class of every Kommo failure; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KommoUnavailable(KommoError):
    """Kommo did not answer usefully (5xx, timeout, connection error): try again later."""


class KommoRateLimited(KommoUnavailable):
    """Kommo answered 429 more often than we retry; wait ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class KommoRejected(KommoError):
    """Kommo refused the call; repeating it unchanged will not help."""


class KommoAuthError(KommoRejected):
    """The credential is invalid, expired or revoked, or an OAuth refresh was refused."""


class KommoPaymentRequired(KommoRejected):
    """402: the account's subscription or trial has ended."""


class KommoBlocked(KommoRejected):
    """403: Kommo blocked us; the shared breaker stops every process until ``until`` (Unix s)."""

    def __init__(self, message: str, *, until: float) -> None:
        super().__init__(message, status=403)
        self.until = until


class KommoBadRequest(KommoRejected):
    """400, 404, 405, 422 or another 4xx: the request itself is wrong."""


def json_body(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer (error bodies are ``application/problem+json``), or ``{}``."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def detail(resp: httpx.Response) -> str:
    """A short, query-free description of an error body (problem+json or HTML)."""
    text = str(json_body(resp).get("detail") or resp.headers.get("content-type", "no body"))
    return re.sub(r"\?\S*", "", text)[:160]
