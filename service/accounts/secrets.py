"""Secrets at rest: what the registry keeps encrypted with ``SECRETS_KEY``, and what it hashes.

``SECRETS_KEY`` holds one or more Fernet keys, comma-separated, newest first. They are used as a
``MultiFernet``: a value is encrypted with the first key and read with any of them, so a key is
rotated by setting ``SECRETS_KEY="new,old"``, running ``kommo-sync accounts rekey`` (every
stored secret re-encrypted with the first key) and then dropping the old key.

A sealed value is ``fernet:`` followed by the Fernet token, so a value stored in clear before a
key was configured (the environment account's ``oauth_tokens`` row) is told apart and read as it
is, then sealed at its next write. Secrets that are looked up (webhook secrets, consumer tokens)
are stored as SHA-256 digests: they are random 256-bit values, so the digest cannot be reversed
by guessing. Nothing here ever puts a secret in a message or a ``repr``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.settings import ConfigError, Settings

SEALED: Final = "fernet:"
_UNREADABLE = (
    "does not decrypt a stored secret (was a key dropped before `kommo-sync accounts rekey` ran?)"
)


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED)


class SecretBox:
    """Encrypts with the first key of ``SECRETS_KEY``, decrypts with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("SECRETS_KEY", "holds no key")
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in keys])
        self.key_count = len(keys)

    def __repr__(self) -> str:
        return f"SecretBox(<{self.key_count} key(s) hidden>)"

    __str__ = __repr__

    def seal(self, plain: str) -> str:
        return SEALED + self._fernet.encrypt(plain.encode()).decode("ascii")

    def reveal(self, stored: str) -> str:
        """The clear value of a sealed one; a value stored in clear is returned as it is."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED).encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise ConfigError("SECRETS_KEY", _UNREADABLE) from None

    def reseal(self, stored: str) -> str:
        """``stored`` encrypted with the first key (a value in clear is sealed)."""
        if not is_sealed(stored):
            return self.seal(stored)
        try:
            token = self._fernet.rotate(stored.removeprefix(SEALED).encode("ascii"))
        except InvalidToken:
            raise ConfigError("SECRETS_KEY", _UNREADABLE) from None
        return SEALED + token.decode("ascii")


class NoKey:
    """No ``SECRETS_KEY``: the environment account's pair is stored as it is (as before keys
    existed); a sealed value cannot be read, which one clear error says."""

    def __repr__(self) -> str:
        return "NoKey()"

    def seal(self, plain: str) -> str:
        return plain

    def reveal(self, stored: str) -> str:
        if is_sealed(stored):
            raise ConfigError("SECRETS_KEY", "is required: the stored secrets are encrypted")
        return stored


def box_of(settings: Settings) -> SecretBox | None:
    """The box of ``SECRETS_KEY``, or None when it is not set."""
    if settings.secrets_key is None:
        return None
    return SecretBox(settings.secrets_key.value.split(","))


def cipher_for(settings: Settings) -> SecretBox | NoKey:
    """What encrypts the environment account's stored OAuth pair (``oauth_tokens``)."""
    return box_of(settings) or NoKey()


def require_box(settings: Settings) -> SecretBox:
    """The box, or the one-line error an operator needs when ``SECRETS_KEY`` is missing."""
    box = box_of(settings)
    if box is None:
        raise ConfigError(
            "SECRETS_KEY",
            "is required once an account is registered (`kommo-sync accounts new-key` makes one)",
        )
    return box


def digest(secret: str) -> str:
    """The SHA-256 hex digest a looked-up secret is stored and found by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str = "") -> str:
    """A fresh random secret: 256 bits, url-safe (43 characters after ``prefix``)."""
    return prefix + secrets.token_urlsafe(32)


def new_key() -> str:
    """A fresh Fernet key for ``SECRETS_KEY``."""
    return Fernet.generate_key().decode("ascii")
