"""Tokens: the long-lived token from the config, plus OAuth 2.0 codes and rotating
refresh tokens (API.md §5), all timed on the simulator clock."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from kommo_sim.clock import SimClock

logger = logging.getLogger(__name__)

ACCESS_TTL = 86400
REFRESH_TTL = 90 * 86400
CODE_TTL = 20 * 60


@dataclass
class OAuthConfig:
    client_id: str = "sim-client-id"
    client_secret: str = "sim-client-secret"
    redirect_uri: str = "https://example.com/oauth/callback"
    refresh_grace: bool = False  # True: the old refresh token works until the new one is used


class OAuthError(Exception):
    """A rejected token request; ``hint`` goes into the 400 body."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@dataclass
class _Refresh:
    expires_at: float
    predecessor: str | None = None  # with the grace rule: retired when this one is first used


@dataclass
class Tokens:
    clock: SimClock
    static_token: str
    config: OAuthConfig = field(default_factory=OAuthConfig)
    static_expires_at: float | None = None
    refresh_calls: int = 0
    code_grants: int = 0
    _codes: dict[str, float] = field(default_factory=dict)
    _access: dict[str, float] = field(default_factory=dict)
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _revoked: set[str] = field(default_factory=set)

    def is_valid(self, token: str) -> bool:
        now = self.clock.now()
        if token in self._revoked:
            return False
        if token == self.static_token:
            return self.static_expires_at is None or now < self.static_expires_at
        expires = self._access.get(token)
        return expires is not None and now < expires

    def revoke(self, token: str) -> None:
        self._revoked.add(token)

    def issue_code(self) -> str:
        code = "def50200" + secrets.token_hex(24)
        self._codes[code] = self.clock.now() + CODE_TTL
        return code

    def grant(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer POST /oauth2/access_token or raise OAuthError."""
        if (
            body.get("client_id") != self.config.client_id
            or body.get("client_secret") != self.config.client_secret
        ):
            raise OAuthError("Client authentication failed")
        if body.get("redirect_uri") != self.config.redirect_uri:
            raise OAuthError("Redirect URI mismatch")
        now = self.clock.now()
        grant_type = body.get("grant_type")
        if grant_type == "authorization_code":
            expires = self._codes.pop(str(body.get("code")), None)
            if expires is None or now >= expires:
                raise OAuthError("Authorization code has expired or been used")
            self.code_grants += 1
            return self._pair()
        if grant_type == "refresh_token":
            self.refresh_calls += 1
            token = str(body.get("refresh_token"))
            entry = self._refresh.get(token)
            if entry is None or now >= entry.expires_at or token in self._revoked:
                raise OAuthError("Token has been revoked")
            if entry.predecessor is not None:
                self._refresh.pop(entry.predecessor, None)
                entry.predecessor = None
            if not self.config.refresh_grace:
                del self._refresh[token]
            return self._pair(predecessor=token if self.config.refresh_grace else None)
        raise OAuthError("Unsupported grant type")

    def _pair(self, predecessor: str | None = None) -> dict[str, Any]:
        now = self.clock.now()
        access = _jwt({"jti": secrets.token_hex(8), "iat": int(now), "exp": int(now) + ACCESS_TTL})
        refresh = "def50200" + secrets.token_hex(32)
        self._access[access] = now + ACCESS_TTL
        self._refresh[refresh] = _Refresh(now + REFRESH_TTL, predecessor)
        logger.info("oauth: issued a new token pair")
        return {
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL,
            "server_time": int(now),
            "access_token": access,
            "refresh_token": refresh,
        }


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{secrets.token_hex(16)}"
