"""Settings: built once per process from the environment, validated, immutable.

A missing or malformed value raises :class:`ConfigError`, whose message is one line that
names the variable and never includes the value (values may be secrets).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from enum import Flag, auto
from typing import Final
from urllib.parse import urlsplit

import phonenumbers

DEFAULT_HINT_QUEUE_MAX: Final = 10_000
"""``HINT_QUEUE_MAX``: webhook hint ids that may wait to be fetched.

Kommo serves at most 7 calls/s x 250 ids = 1,750 ids/s to an integration (1,500 at our default
``KOMMO_RATE_LIMIT`` of 6). 10,000 waiting ids are 40 calls, about 6 s of the whole budget:
about as long as the reconcile (every 5 s) takes to read the same changes by ``updated_at``.
Past that, hints hardly beat the reconcile, and a flood of them (one 1 MiB body can name 26,000
ids) would hold the budget at webhook priority for minutes."""


class ConfigError(Exception):
    """A configuration variable is missing or invalid; the message names it, never its value."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"configuration error: {name} {problem}")
        self.name = name


class Needs(Flag):
    """What a process needs from its configuration."""

    DATABASE = auto()
    REDIS = auto()
    KOMMO = auto()
    WEB = auto()
    NOTHING = 0


@dataclasses.dataclass(frozen=True, repr=False)
class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    value: str

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class Tokens(frozenset[str]):
    """A set of secret strings (the consumer tokens of ``WS_TOKENS``): compared and iterated as
    strings (:func:`service.web.auth.authorized`), never shown by ``repr`` or ``str``."""

    def __repr__(self) -> str:
        return f"Tokens(<{len(self)} hidden>)"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class IntegrationSettings:
    """The deployment's Kommo integration (``KOMMO_CLIENT_ID``, ``KOMMO_CLIENT_SECRET``,
    ``KOMMO_REDIRECT_URI``): a public integration installs accounts with it
    (:mod:`service.accounts.install`), and registered OAuth accounts refresh with it."""

    client_id: str
    client_secret: Secret
    redirect_uri: str


@dataclasses.dataclass(frozen=True)
class OAuthSettings:
    client_id: str
    client_secret: Secret
    redirect_uri: str
    auth_code: Secret | None
    refresh_token: Secret | None


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: Secret | None
    redis_url: Secret | None
    kommo_base_url: str | None
    kommo_token: Secret | None
    oauth: OAuthSettings | None
    kommo_account_id: int | None
    webhook_secret: Secret | None
    rate_limit: float = 6.0
    reconcile_interval: float = 5.0
    phone_default_region: str = "PE"
    ws_tokens: Tokens = Tokens()
    ws_max_connections_per_token: int = 500  # sockets per token in one web process
    webhook_max_bytes: int = 1 << 20
    port: int = 8000
    redis_prefix: str = ""
    log_format: str = "text"
    log_level: str = "INFO"
    worker_metrics_port: int | None = None
    public_url: str | None = None
    kommo_subdomain: str | None = None
    purge_deleted_after_days: int | None = None
    hint_queue_max: int = DEFAULT_HINT_QUEUE_MAX
    secrets_key: Secret | None = None  # SECRETS_KEY: Fernet keys, comma-separated, newest first
    integration: IntegrationSettings | None = None
    oauth_hosts: tuple[str, ...] = ()  # KOMMO_OAUTH_HOSTS: more hosts an install may name

    @classmethod
    def from_env(cls, env: Mapping[str, str], needs: Needs = Needs.NOTHING) -> Settings:
        r = _Reader(env)
        database_url = r.url("DATABASE_URL", ("postgres", "postgresql"), Needs.DATABASE in needs)
        redis_url = r.url("REDIS_URL", ("redis", "rediss", "unix"), Needs.REDIS in needs)

        base = r.url_plain("KOMMO_BASE_URL")
        sub = r.text("KOMMO_SUBDOMAIN")
        if sub is not None:
            if not sub.replace("-", "").isalnum():
                raise ConfigError("KOMMO_SUBDOMAIN", "must be a bare subdomain (e.g. examplecorp)")
            base = base or f"https://{sub}.kommo.com"
        token = r.secret("KOMMO_TOKEN")
        integration = _read_integration(r)
        oauth = _read_oauth(r, integration)
        if Needs.KOMMO in needs:
            if base is None:
                raise ConfigError("KOMMO_SUBDOMAIN", "is required (or KOMMO_BASE_URL)")
            if token is None and oauth is None and integration is not None:
                raise ConfigError(
                    "KOMMO_AUTH_CODE", "or KOMMO_REFRESH_TOKEN is required with OAuth"
                )
            if token is None and oauth is None:
                raise ConfigError("KOMMO_TOKEN", "is required (or the KOMMO_CLIENT_* OAuth set)")

        secret = r.secret("KOMMO_WEBHOOK_SECRET")
        if secret is not None and len(secret.value) < 32:
            raise ConfigError("KOMMO_WEBHOOK_SECRET", "must be at least 32 characters")
        if Needs.WEB in needs and secret is None:
            raise ConfigError("KOMMO_WEBHOOK_SECRET", "is required")

        region = (r.text("PHONE_DEFAULT_REGION") or "PE").upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError("PHONE_DEFAULT_REGION", "must be a two-letter region such as PE")
        tokens = Tokens(t.strip() for t in (r.text("WS_TOKENS") or "").split(",") if t.strip())
        if Needs.WEB in needs and not tokens:
            raise ConfigError("WS_TOKENS", "is required (comma-separated tokens)")
        log_format = (r.text("LOG_FORMAT") or "text").lower()
        if log_format not in ("text", "json"):
            raise ConfigError("LOG_FORMAT", "must be 'text' or 'json'")
        log_level = (r.text("LOG_LEVEL") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")

        return cls(
            database_url=database_url,
            redis_url=redis_url,
            kommo_base_url=base.rstrip("/") if base else None,
            kommo_token=token,
            oauth=oauth,
            kommo_account_id=r.integer("KOMMO_ACCOUNT_ID", None, low=1),
            webhook_secret=secret,
            rate_limit=r.number("KOMMO_RATE_LIMIT", 6.0, low=0.1, high=50),
            reconcile_interval=r.number("RECONCILE_INTERVAL", 5.0, low=0.2, high=3600),
            phone_default_region=region,
            ws_tokens=tokens,
            ws_max_connections_per_token=r.integer(
                "WS_MAX_CONNECTIONS_PER_TOKEN", 500, low=1, high=100_000
            )
            or 500,
            webhook_max_bytes=r.integer("WEBHOOK_MAX_BYTES", 1 << 20, low=1024) or 1 << 20,
            port=r.integer("PORT", 8000, low=1, high=65535) or 8000,
            redis_prefix=r.text("REDIS_PREFIX") or "",
            log_format=log_format,
            log_level=log_level,
            worker_metrics_port=r.integer("WORKER_METRICS_PORT", None, low=1, high=65535),
            public_url=(r.url_plain("PUBLIC_URL") or "").rstrip("/") or None,
            kommo_subdomain=sub.lower() if sub else None,
            purge_deleted_after_days=r.integer("PURGE_DELETED_AFTER_DAYS", None, low=1, high=36500),
            hint_queue_max=r.integer("HINT_QUEUE_MAX", DEFAULT_HINT_QUEUE_MAX, low=250)
            or DEFAULT_HINT_QUEUE_MAX,
            secrets_key=_read_secrets_key(r),
            integration=integration,
            oauth_hosts=_read_oauth_hosts(r),
        )

    @property
    def database_dsn(self) -> str:
        if self.database_url is None:
            raise ConfigError("DATABASE_URL", "is required")
        return self.database_url.value

    @property
    def redis_dsn(self) -> str:
        if self.redis_url is None:
            raise ConfigError("REDIS_URL", "is required")
        return self.redis_url.value


def _read_integration(r: _Reader) -> IntegrationSettings | None:
    client_id = r.text("KOMMO_CLIENT_ID")
    if client_id is None:
        return None
    client_secret = r.secret("KOMMO_CLIENT_SECRET")
    if client_secret is None:
        raise ConfigError("KOMMO_CLIENT_SECRET", "is required with KOMMO_CLIENT_ID")
    redirect = r.url_plain("KOMMO_REDIRECT_URI")
    if redirect is None:
        raise ConfigError("KOMMO_REDIRECT_URI", "is required with KOMMO_CLIENT_ID")
    return IntegrationSettings(client_id, client_secret, redirect)


def _read_oauth(r: _Reader, integration: IntegrationSettings | None) -> OAuthSettings | None:
    """The environment account's OAuth: the integration and a code or refresh token to start
    from. Without either the integration only installs registered accounts."""
    if integration is None:
        return None
    code, refresh = r.secret("KOMMO_AUTH_CODE"), r.secret("KOMMO_REFRESH_TOKEN")
    if code is None and refresh is None:
        return None
    return OAuthSettings(
        integration.client_id, integration.client_secret, integration.redirect_uri, code, refresh
    )


def _read_secrets_key(r: _Reader) -> Secret | None:
    """``SECRETS_KEY``: one or more Fernet keys (32 bytes, url-safe base64), newest first."""
    value = r.text("SECRETS_KEY")
    if value is None:
        return None
    keys = [k.strip() for k in value.split(",") if k.strip()]
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                "SECRETS_KEY",
                "must be comma-separated Fernet keys (url-safe base64 of 32 bytes; "
                "`kommo-sync accounts new-key` makes one)",
            )
    return Secret(",".join(keys)) if keys else None


def _read_oauth_hosts(r: _Reader) -> tuple[str, ...]:
    """``KOMMO_OAUTH_HOSTS``: ``host[:port]`` (https) or ``http://host[:port]`` (a simulator)."""
    hosts = []
    for entry in (r.text("KOMMO_OAUTH_HOSTS") or "").split(","):
        entry = entry.strip().lower().rstrip("/")
        if not entry:
            continue
        plain = entry.removeprefix("http://").removeprefix("https://")
        parts = urlsplit("//" + plain)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        if not parts.hostname or parts.netloc != plain or not port_ok or "@" in plain:
            raise ConfigError("KOMMO_OAUTH_HOSTS", "must be comma-separated host[:port] entries")
        hosts.append(entry.removeprefix("https://"))
    return tuple(hosts)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def secret(self, name: str) -> Secret | None:
        value = self.text(name)
        return Secret(value) if value is not None else None

    def url_plain(self, name: str) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, "must be an http(s) URL")
        return value

    def url(self, name: str, schemes: tuple[str, ...], required: bool) -> Secret | None:
        value = self.text(name)
        if value is None:
            if required:
                raise ConfigError(name, "is required")
            return None
        if urlsplit(value).scheme not in schemes:
            raise ConfigError(name, f"must be a URL with scheme {' or '.join(schemes)}")
        return Secret(value)

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, "must be a number") from None
        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low:g} and {high:g}")
        return number

    def integer(
        self, name: str, default: int | None, *, low: int, high: int | None = None
    ) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, "must be an integer") from None
        if number < low or (high is not None and number > high):
            raise ConfigError(name, "is out of range")
        return number
