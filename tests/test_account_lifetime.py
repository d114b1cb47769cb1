"""When a long-lived token expires: the JWT's ``exp`` (read without verifying), days left."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from service.accounts.lifetime import days_left, token_expiry

NOW = datetime(2026, 5, 26, 12, 0, tzinfo=UTC)


def jwt(claims: object, header: object = None) -> str:
    def part(data: object) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header or {'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_exp_of_a_jwt() -> None:
    exp = int((NOW + timedelta(days=30)).timestamp())
    token = jwt({"aud": "x", "jti": "y", "iat": 1, "exp": exp, "sub": "9000001"})
    assert token_expiry(token) == NOW + timedelta(days=30)
    assert days_left(token_expiry(token), NOW) == pytest.approx(30.0)
    assert days_left(token_expiry(token), NOW + timedelta(days=31)) == pytest.approx(-1.0)
    assert token_expiry(jwt({"exp": exp + 0.5})) == datetime.fromtimestamp(exp + 0.5, UTC)
    assert token_expiry(f" {token}\n") == NOW + timedelta(days=30)  # as read from a file


@pytest.mark.parametrize(
    "token",
    [
        "fleet-token-0123456789",  # not a JWT
        "def50200abcdef",
        "a.b",
        "a..c",
        "a.!!!.c",
        jwt({"iat": 1}),  # no exp
        jwt({"exp": "soon"}),
        jwt({"exp": True}),
        jwt(["exp", 1]),
        jwt({"exp": 10**20}),  # out of range
        "eyJ.eyJleHAiOjF9IGJhZA.x",  # payload not JSON
    ],
)
def test_tokens_without_a_known_expiry(token: str) -> None:
    assert token_expiry(token) is None


def test_no_expiry_no_days() -> None:
    assert days_left(None, NOW) is None
