"""E-mail normalisation: every address the service stores or matches goes through here."""

from __future__ import annotations

import re

_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")


def normalize_email(raw: str) -> str | None:
    """The trimmed, lower-cased address, or None when it is not an address."""
    address = raw.strip().lower()
    if address.startswith("mailto:"):
        address = address[len("mailto:") :]
    return address if _ADDRESS.match(address) else None
