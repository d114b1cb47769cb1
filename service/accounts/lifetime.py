"""When a long-lived token stops working: its ``exp`` claim, and the days left until then.

Kommo's long-lived tokens are JWTs with an ``exp`` claim (API.md §5), chosen at creation
(1 day to 5 years) and never refreshed: an operator has to replace one before it expires. The
payload is decoded without verifying the signature (we only read our own credential's claim;
Kommo verifies it). A token that is not a JWT, or has no numeric ``exp``, has no known expiry.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

_DAY = 86400.0


def token_expiry(token: str) -> datetime | None:
    """The ``exp`` of a JWT (UTC), or None when the token is not a JWT or carries none."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def days_left(expiry: datetime | None, now: datetime) -> float | None:
    """Days from ``now`` until ``expiry`` (negative once expired); None without an expiry."""
    if expiry is None:
        return None
    return (expiry - now).total_seconds() / _DAY
