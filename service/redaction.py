"""What logs may show: secrets are redacted from every record, whatever its level or logger.

:class:`Redactor` is a logging filter. Installed on a handler (:func:`service.logs.
configure_logging`) it cleans every record that handler writes; installed on a logger
(``uvicorn.error``, ``uvicorn.access``: :func:`service.web.server.redact_access_log`) it cleans
that logger's records at the source, for any handler. It rewrites the rendered message:

- a query parameter whose *decoded* key is a secret's (``token``, ``code``, ...): ``?token=x``,
  and ``?tok%65n=x`` too, which Starlette decodes to ``token``, become ``?token=***``;
- a header that carries credentials (``Authorization: …``, ``Cookie: …``, as the websockets
  library dumps them at DEBUG) and a ``Bearer``/``Basic`` credential anywhere;
- the password of a URL (``postgresql://user:***@host``) and the webhook secret of
  ``/webhooks/kommo/<secret>``;
- every configured secret value of at least :data:`MIN_SECRET_LENGTH` characters (consumer
  tokens, ``KOMMO_TOKEN``, the webhook secret, the OAuth secrets, each ``SECRETS_KEY`` key, DSN
  passwords), wherever it appears, exception text included.

The websockets library's DEBUG dumps of frames (``< TEXT '…' [n bytes]``) are dropped: a frame is
cut at 75 characters, which could leave part of a secret no rule recognises, and the server's
frames are the leads' data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit

from service.settings import Secret, Settings

MIN_SECRET_LENGTH = 8  # shorter values would garble every line; the patterns still apply
SECRET_KEYS = frozenset(
    {"token", "access_token", "refresh_token", "client_secret", "code", "secret", "password"}
)
_HIDDEN = "***"
_QUERY_PAIR = re.compile(r"([?&])([^=&\s\"'#?]*)=([^&\s\"'#]*)")
_HEADER = re.compile(
    r"\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)(\s*:\s*)([^\r\n]+)",
    re.IGNORECASE,
)
_CREDENTIAL = re.compile(r"\b(bearer|basic)(\s+)[^\s'\",;]+", re.IGNORECASE)
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE)
_WEBHOOK = re.compile(r"(/webhooks/kommo/)[^\s\"'?]+")


def _query_pair(match: re.Match[str]) -> str:
    sep, key, value = match.groups()
    if value and unquote_plus(key).lower() in SECRET_KEYS:
        return f"{sep}{key}={_HIDDEN}"
    return match.group(0)


class Redactor(logging.Filter):
    """Redacts secrets from log records (see the module's docstring); never drops a record
    but the websockets library's frame dumps."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._secrets = tuple(values)
        self._values = re.compile("|".join(map(re.escape, values))) if values else None

    @classmethod
    def for_settings(cls, settings: Settings | None) -> Redactor:
        return cls(secret_values(settings) if settings is not None else ())

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (each rule runs only where a cheap
        substring test says it may apply: a log line costs a few microseconds)."""
        if self._values is not None and any(s in text for s in self._secrets):
            text = self._values.sub(_HIDDEN, text)
        if "=" in text:
            text = _QUERY_PAIR.sub(_query_pair, text)
        low = text.lower()
        if ":" in text and ("authoriz" in low or "cookie" in low or "api-key" in low):
            text = _HEADER.sub(rf"\1\2{_HIDDEN}", text)
        if "://" in text and "@" in text:
            text = _USERINFO.sub(rf"\1{_HIDDEN}@", text)
        if "bearer" in low or "basic" in low:
            text = _CREDENTIAL.sub(rf"\1\2{_HIDDEN}", text)
        if "/webhooks/kommo/" in text:
            text = _WEBHOOK.sub(rf"\1{_HIDDEN}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_frame_dump(record):
            return False
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's to report; a filter never raises
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _is_frame_dump(record: logging.LogRecord) -> bool:
    """``logger.debug("< %s", frame)`` from the websockets library (uvicorn hands it its logger)."""
    args = record.args
    return (
        record.levelno == logging.DEBUG
        and record.msg in ("< %s", "> %s")
        and isinstance(args, tuple)
        and len(args) == 1
        and type(args[0]).__module__.startswith("websockets")
    )


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, as plain strings (for :class:`Redactor` only)."""
    secrets: list[Secret | None] = [settings.kommo_token, settings.webhook_secret]
    if settings.secrets_key is not None:
        secrets += [Secret(key) for key in settings.secrets_key.value.split(",")]
    if settings.integration is not None:
        secrets.append(settings.integration.client_secret)
    if settings.oauth is not None:
        oauth = settings.oauth
        secrets += [oauth.client_secret, oauth.auth_code, oauth.refresh_token]
    values = [s.value for s in secrets if s is not None] + list(settings.ws_tokens)
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url.value).password if url is not None else None
        if password:
            values += [password, unquote_plus(password)]
    return values
