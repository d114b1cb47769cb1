"""The OAuth ``state`` of an install: signed, short-lived and single-use.

Kommo sends the ``state`` we put in the authorize URL back to the callback with the code. A
callback is honoured only with a state this deployment issued (an HMAC-SHA256 signature under a
key derived from ``KOMMO_CLIENT_SECRET``), before its expiry, and the first time: the state's
nonce is claimed in Redis with ``SET NX`` (``oauth:state:<nonce>`` under ``REDIS_PREFIX``,
kept as long as the state could still be valid), so a replayed callback registers nothing.

A state reads ``<nonce>.<expires at, Unix s>.<signature>``, all url-safe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlencode

from redis.asyncio import Redis

from service.keys import Keys
from service.settings import ConfigError, IntegrationSettings

STATE_TTL_S: Final = 600.0  # Kommo's authorization code itself lives 20 minutes
AUTHORIZE_URL: Final = "https://www.kommo.com/oauth"
_LABEL: Final = b"kommo-sync oauth state v1"


class BadState(Exception):
    """The callback's ``state`` is missing, forged, expired or already used (one line)."""


class States:
    """Issues and checks install states for one integration."""

    def __init__(
        self,
        integration: IntegrationSettings,
        redis: Redis,
        keys: Keys,
        *,
        ttl: float = STATE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secret = integration.client_secret.value.encode()
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()
        self._client_id = integration.client_id
        self._redis, self._keys, self._ttl, self._clock = redis, keys, ttl, clock

    def __repr__(self) -> str:
        return f"States(client_id={self._client_id!r}, ttl={self._ttl:g})"

    def issue(self) -> str:
        """A fresh state, valid for ``ttl`` seconds, once."""
        nonce = secrets.token_urlsafe(16)
        body = f"{nonce}.{int(self._clock() + self._ttl)}"
        return f"{body}.{self._sign(body)}"

    def authorize_url(self, base: str = AUTHORIZE_URL) -> str:
        """Where an account's administrator starts the install (with a fresh state)."""
        query = urlencode({"client_id": self._client_id, "state": self.issue()})
        return f"{base}?{query}"

    async def claim(self, state: str | None) -> None:
        """Accept ``state`` once: raises :class:`BadState` unless it is ours, unexpired and
        never claimed before (by any process of the deployment)."""
        nonce, expires = self._verified(state)
        left = expires - self._clock()
        if left <= 0:
            raise BadState("the install link has expired: start the install again")
        claimed = await self._redis.set(
            self._keys.oauth_state(nonce), b"1", nx=True, px=max(1, int(left * 1000) + 1000)
        )
        if not claimed:
            raise BadState("this install link was already used: start the install again")

    def _verified(self, state: str | None) -> tuple[str, float]:
        parts = (state or "").split(".")
        if len(parts) != 3 or not all(parts):
            raise BadState("the install state is missing or malformed")
        nonce, expires, signature = parts
        if not hmac.compare_digest(signature.encode(), self._sign(f"{nonce}.{expires}").encode()):
            raise BadState("the install state is not one this deployment issued")
        if not expires.isdigit():
            raise BadState("the install state is malformed")
        return nonce, float(expires)

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def states_of(integration: IntegrationSettings | None, redis: Redis, keys: Keys) -> States:
    """The deployment's states; installing needs its integration (``KOMMO_CLIENT_ID``, …)."""
    if integration is None:
        raise ConfigError("KOMMO_CLIENT_ID", "is required to install accounts (with the secret)")
    return States(integration, redis, keys)
