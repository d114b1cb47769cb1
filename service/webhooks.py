"""Kommo's webhooks: the form-body parser and the ``POST /webhooks/kommo/{secret}`` endpoint.

A webhook is a hint, not data: only ids, kinds and ``last_modified``/``updated_at`` are taken
from the body (:class:`service.hints.Hints`); the worker fetches the records from the API.

The body is PHP ``http_build_query`` output::

    account[subdomain]=…&account[id]=…            (first, last or absent)
    leads[add|update|status|responsible|delete|restore][<i>][id|last_modified|updated_at|…]=…
    contacts[add|update|delete|restore|responsible][<i>][id|…|type]=…   type = contact|company

Rules of the parser (:func:`parse_webhook`):

- Indices are any decimal numbers, in any order, not necessarily contiguous; several entity
  kinds and actions may share one body.
- Companies (``contacts[...][type]=company``) are recognised and counted, never queued. A
  contact record without ``type`` is taken as a contact.
- Other top-level kinds (``task``, ``unsorted``, ``talk``, ``message``, …) and other actions
  (``leads[note]``, ``contacts[note]``, …) are ignored and counted per record.
- A timestamp that is absent or not a plain integer counts as 0 (it only tunes the lagging-read
  check); the id, the index, ``type`` and ``account[id]`` are validated strictly.
- Delete and change of one id in one body: the delete wins (Kommo sends one state per id, and
  an update can't follow a delete in one body, so the change came first). Delete and restore of
  one id in one body: both are kept as hints (the restore also queues a fetch); the worker's
  fetch decides.
- Invalid input raises :class:`WebhookParseError` with a one-line reason.

Endpoint status codes: 404 wrong secret (Starlette's plain "Not Found", nothing logged), 415
not ``application/x-www-form-urlencoded`` (or an unsupported charset or content encoding), 413
over ``WEBHOOK_MAX_BYTES``, 400 unparseable (``{"error": reason}``), 403 ``account[id]`` is not
``KOMMO_ACCOUNT_ID``, 200 queued (a JSON summary), 202 Redis unavailable (``{"queued": null,
"lost": true}``: Kommo disables hooks that keep failing; reconcile repairs the loss).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote_plus

from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from service.hints import Hints, push_and_schedule

if TYPE_CHECKING:
    from service.app import Web

log = logging.getLogger(__name__)

MAX_ID: Final = 2**53
REDIS_TIMEOUT_S: Final = 1.0
"""Budget for queueing on the request path; Kommo gives up after 2 s."""

WEBHOOKS_RECEIVED = Counter(
    "webhooks_received", "Entity notifications received in valid webhooks", ["kind"]
)
WEBHOOKS_REJECTED = Counter("webhooks_rejected", "Webhook requests refused", ["reason"])
WEBHOOKS_IGNORED = Counter("webhooks_ignored", "Webhook records of kinds not mirrored", ["kind"])
WEBHOOKS_LOST = Counter("webhooks_lost", "Valid webhooks acknowledged but not queued (Redis down)")
WEBHOOK_REQUEST_SECONDS = Histogram(
    "webhook_request_seconds",
    "Time to answer a webhook request",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)
_IGNORED_LABELS: Final = frozenset(
    {
        "task", "unsorted", "talk", "message", "customers", "catalogs", "companies",
        "leads[note]", "contacts[note]", "customers[note]",
    }
)  # fmt: skip


class WebhookParseError(ValueError):
    """The body is not a Kommo webhook; ``str(error)`` is a one-line reason."""


_LEAD_ACTIONS: Final = frozenset({"add", "update", "status", "responsible", "delete", "restore"})
_CONTACT_ACTIONS: Final = frozenset({"add", "update", "delete", "restore", "responsible"})
_FIELDS: Final = frozenset({"id", "last_modified", "updated_at", "type"})
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HIGH_BYTES = re.compile(r"(?:%[89A-Fa-f][0-9A-Fa-f])+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _unquote(text: str) -> str:
    if "%" in text or "+" in text:
        return unquote_plus(text, errors="strict")
    return text


class _Record:
    __slots__ = ("id", "lm", "type")

    def __init__(self) -> None:
        self.id: int | None = None
        self.lm = 0
        self.type: str | None = None


def _positive_id(where: str, raw: str) -> int:
    value = _unquote(raw)
    if value.isascii() and value.isdigit() and len(value) <= 16:
        number = int(value)
        if 0 < number <= MAX_ID:
            return number
    raise WebhookParseError(f"{where} is not a positive integer up to 2**53: {value[:24]!r}")


def _timestamp(raw: str) -> int:
    value = _unquote(raw) if "%" in raw else raw
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    return 0


def parse_webhook(body: bytes) -> Hints:
    """Parse one Kommo webhook body into :class:`Hints`; raise :class:`WebhookParseError`."""
    if not body.strip():
        raise WebhookParseError("empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookParseError("body is not valid UTF-8") from None
    if "%" in text:
        # Brackets are most of the escapes: decode them once, to keep the scans below short.
        text = text.replace("%5B", "[").replace("%5D", "]")
    if "%" in text:
        if _BAD_PERCENT.search(text):
            raise WebhookParseError("malformed percent-encoding")
        for run in _HIGH_BYTES.findall(text):
            try:
                bytes.fromhex(run.replace("%", "")).decode("utf-8")
            except UnicodeDecodeError:
                raise WebhookParseError("percent-encoded bytes are not valid UTF-8") from None

    hints = Hints()
    records: dict[tuple[str, str, str], _Record] = {}
    ignored: set[tuple[str, str, str]] = set()
    for field in text.split("&"):
        if not field:
            continue
        key, eq, value = field.partition("=")
        if not eq:
            raise WebhookParseError("not form-encoded: a field without '='")
        if "%" in key or "+" in key:
            key = _unquote(key)
        open_at = key.find("[")
        if open_at <= 0:
            continue  # a bare name: not a kind, not ours
        top = key[:open_at]
        if top == "account":
            if key == "account[id]":
                account_id = _positive_id("account[id]", value)
                if hints.account_id not in (None, account_id):
                    raise WebhookParseError("two different account[id] values")
                hints.account_id = account_id
            elif key == "account[subdomain]":
                hints.subdomain = _unquote(value)[:255]
            continue
        parts = key[open_at + 1 : -1].split("][", 3) if key[-1] == "]" else None
        if top == "leads" or top == "contacts":
            if parts is None:
                raise WebhookParseError(f"malformed key {key[:60]!r}")
            action = parts[0]
            if action not in (_LEAD_ACTIONS if top == "leads" else _CONTACT_ACTIONS):
                ignored.add((f"{top}[{action[:32]}]", parts[1] if len(parts) > 1 else "", ""))
                continue
            if len(parts) < 3:
                raise WebhookParseError(f"{key[:60]!r} has no index and field")
            index, name = parts[1], parts[2]
            if not (index.isascii() and index.isdigit() and len(index) <= 9):
                raise WebhookParseError(f"{top}[{action}] index is not numeric: {index[:24]!r}")
            if name not in _FIELDS:
                if (top, action, index) not in records:
                    records[(top, action, index)] = _Record()
                continue
            if len(parts) == 4:
                raise WebhookParseError(f"malformed key {key[:60]!r}")
            where = f"{top}[{action}][{index}][{name}]"
            record = records.get((top, action, index))
            if record is None:
                record = records[(top, action, index)] = _Record()
            if name == "id":
                ident = _positive_id(where, value)
                if record.id not in (None, ident):
                    raise WebhookParseError(f"two different values for {where}")
                record.id = ident
            elif name == "type":
                if top == "contacts":
                    kind = _unquote(value)
                    if kind != "contact" and kind != "company":
                        raise WebhookParseError(f"{where} is not contact or company: {kind[:24]!r}")
                    record.type = kind
            else:
                record.lm = max(record.lm, _timestamp(value))
        elif _NAME.fullmatch(top):
            action = parts[0][:32] if parts else ""
            ignored.add((top, action, parts[1] if parts and len(parts) > 1 else ""))

    if not records and not ignored:
        raise WebhookParseError("no leads, contacts or other Kommo entity in the body")
    for (top, action, index), record in records.items():
        if record.id is None:
            raise WebhookParseError(f"{top}[{action}][{index}] has no id")
        ident = record.id
        if top == "leads":
            changes, deletes, restores = hints.lead_changes, hints.lead_deletes, hints.lead_restores
        elif record.type == "company":
            hints.companies += 1
            continue
        else:
            changes = hints.contact_changes
            deletes, restores = hints.contact_deletes, hints.contact_restores
        if action == "delete":
            deletes.add(ident)
            continue
        if action == "restore":
            restores.add(ident)
        if record.lm > changes.get(ident, -1):
            changes[ident] = record.lm
    for changes, deletes, restores in (
        (hints.lead_changes, hints.lead_deletes, hints.lead_restores),
        (hints.contact_changes, hints.contact_deletes, hints.contact_restores),
    ):
        for ident in deletes:
            if ident not in restores:
                changes.pop(ident, None)
    if ignored:
        hints.ignored.update(kind for kind, _, _ in ignored)
    return hints


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


_FORM: Final = "application/x-www-form-urlencoded"
_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _check_content_type(request: Request) -> None:
    value = request.headers.get("content-type", "")
    media, _, params = value.partition(";")
    if media.strip().lower() != _FORM:
        raise _Rejected(415, "unsupported_type", f"Content-Type must be {_FORM}")
    for param in params.split(";"):
        name, _, arg = param.partition("=")
        if name.strip().lower() == "charset" and arg.strip().strip('"').lower() not in _CHARSETS:
            raise _Rejected(415, "unsupported_type", "charset must be utf-8")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _Rejected(415, "unsupported_type", "Content-Encoding is not supported")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise _Rejected(400, "unparseable", "invalid Content-Length")
        if int(declared) > limit:
            raise _Rejected(413, "too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Rejected(413, "too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _count(hints: Hints) -> None:
    for kind, number in hints.queued().items():
        if number:
            WEBHOOKS_RECEIVED.labels(kind).inc(number)
    if hints.companies:
        WEBHOOKS_RECEIVED.labels("companies").inc(hints.companies)
    for kind, number in hints.ignored.items():
        WEBHOOKS_IGNORED.labels(kind if kind in _IGNORED_LABELS else "other").inc(number)


def webhook_routes(web: Web) -> list[Route]:
    """The webhook endpoint, bound to the app's shared resources."""
    configured = web.settings.webhook_secret
    expected = configured.value.encode() if configured is not None else None
    account_id = web.settings.kommo_account_id
    subdomain = web.settings.kommo_subdomain
    limit = web.settings.webhook_max_bytes

    async def kommo_webhook(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await _handle(request)
        finally:
            WEBHOOK_REQUEST_SECONDS.observe(time.perf_counter() - started)

    async def _handle(request: Request) -> Response:
        given = str(request.path_params["secret"]).encode()
        if expected is None or not hmac.compare_digest(given, expected):
            WEBHOOKS_REJECTED.labels("bad_secret").inc()
            return PlainTextResponse("Not Found", status_code=404)
        try:
            _check_content_type(request)
            body = await _read_body(request, limit)
            try:
                hints = parse_webhook(body)
            except WebhookParseError as exc:
                raise _Rejected(400, "unparseable", str(exc)) from None
            if (account_id is not None and hints.account_id not in (None, account_id)) or (
                    subdomain is not None and hints.subdomain not in (None, subdomain)):
                raise _Rejected(403, "wrong_account", "webhook is for another Kommo account")
        except _Rejected as exc:
            WEBHOOKS_REJECTED.labels(exc.reason).inc()
            log.info("webhook refused (%d): %s", exc.status, exc.message)
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ClientDisconnect:
            return Response(status_code=400)

        _count(hints)
        summary = {"queued": hints.queued(), "companies": hints.companies,
                   "ignored": dict(hints.ignored)}  # fmt: skip
        if hints.is_empty():
            return JSONResponse(summary)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await push_and_schedule(web.res, hints)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            WEBHOOKS_LOST.inc()
            log.warning("webhook not queued, Redis unavailable: %s", type(exc).__name__)
            return JSONResponse({"queued": None, "lost": True}, status_code=202)
        return JSONResponse(summary)

    return [Route("/webhooks/kommo/{secret}", kommo_webhook, methods=["POST"])]


_SECRET_PATH = re.compile(r"/webhooks/kommo/[^\s\"']*")
_SECRET_ARG = re.compile(r"/webhooks/kommo/.*", re.DOTALL)


class RedactWebhookPath(logging.Filter):
    """Rewrite ``/webhooks/kommo/<secret>`` to ``/webhooks/kommo/***`` in log records.

    Install it on the ``uvicorn.access`` logger, whose records carry the path (with the query)
    as an argument: everything after the prefix in a string argument is redacted. A message
    text is redacted up to the next space or quote.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _SECRET_ARG.sub("/webhooks/kommo/***", a)
                if isinstance(a, str) and "/webhooks/kommo/" in a
                else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "/webhooks/kommo/" in record.msg:
            record.msg = _SECRET_PATH.sub("/webhooks/kommo/***", record.msg)
        return True
