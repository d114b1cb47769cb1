"""Where the client's bearer token comes from: a long-lived token, or an OAuth pair.

:class:`~service.kommo.oauth.OAuthTokens` is the OAuth source; :class:`StaticToken` is a
private integration's long-lived token, which is never refreshed.
"""

from __future__ import annotations

from typing import Protocol

from service.kommo.errors import KommoAuthError


class TokenSource(Protocol):
    async def access_token(self) -> str: ...
    async def refresh(self, rejected: str) -> str: ...


class StaticToken:
    """A long-lived token: never refreshed; a 401 means it expired or was revoked."""

    def __init__(self, token: str, *, name: str = "KOMMO_TOKEN") -> None:
        self._token, self._name = token, name  # name: what the error calls the token

    def __repr__(self) -> str:
        return f"StaticToken(<{self._name} hidden>)"

    async def access_token(self) -> str:
        return self._token

    async def refresh(self, rejected: str) -> str:
        raise KommoAuthError(
            f"Kommo rejected {self._name} (HTTP 401): expired or revoked", status=401
        )
