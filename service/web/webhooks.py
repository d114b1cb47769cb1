"""``POST /webhooks/kommo/{secret}``: Kommo's webhooks, queued as hints in milliseconds.

The body is parsed by :mod:`service.web.webform`; only ids and kinds are queued
(:mod:`service.sync.hints`), and a worker fetches the records. No Kommo call and no database
write happens on the request path.

Status codes: 404 wrong secret (Starlette's plain "Not Found", nothing logged), 415 not
``application/x-www-form-urlencoded`` (or an unsupported charset or content encoding), 413
over ``WEBHOOK_MAX_BYTES``, 400 unparseable (``{"error": reason}``; also a body naming two
different accounts), 403 the body names another account than ours (:func:`is_for_account`),
200 queued (a JSON summary: ``queued`` what the body named per queue, ``dropped`` how many of
those ids were left out because ``HINT_QUEUE_MAX`` ids were waiting; still a 200, since Kommo
disables a hook that fails, and the reconcile catches them), 202 Redis unavailable
(``{"queued": null, "lost": true}``: Kommo disables hooks that keep failing; reconcile repairs
the loss).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from typing import Final, Literal, get_args

from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from service.settings import Settings
from service.sync.hints import Hints, Pushed, push_and_schedule
from service.web.state import resources
from service.web.webform import WebhookParseError, parse_webhook, subdomain_of

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S: Final = 1.0
"""Budget for queueing on the request path; Kommo gives up after 2 s."""

WEBHOOKS_RECEIVED = Counter(
    "webhooks_received", "Entity notifications received in valid webhooks", ["kind"]
)
RejectReason = Literal[
    "bad_secret", "too_large", "unparseable", "unsupported_type", "wrong_account"
]
WEBHOOKS_REJECTED = Counter("webhooks_rejected", "Webhook requests refused", ["reason"])
for _reason in get_args(RejectReason):  # at 0 from the start: increase() sees the first one
    WEBHOOKS_REJECTED.labels(_reason)
WEBHOOKS_IGNORED = Counter("webhooks_ignored", "Webhook records of kinds not mirrored", ["kind"])
WEBHOOKS_LOST = Counter("webhooks_lost", "Valid webhooks acknowledged but not queued (Redis down)")
HINTS_DROPPED = Counter(
    "webhook_hints_dropped", "Webhook hint ids not queued: HINT_QUEUE_MAX ids were waiting"
)
WEBHOOK_REQUEST_SECONDS = Histogram(
    "webhook_request_seconds",
    "Time to answer a webhook request",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)
_IGNORED_LABELS: Final = frozenset(
    {
        "task", "talk", "message", "customers", "catalogs",
        "leads[note]", "contacts[note]", "customers[note]",
    }
)  # fmt: skip


class _Rejected(Exception):
    def __init__(self, status: int, reason: RejectReason, message: str) -> None:
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


def is_for_account(hints: Hints, account_id: int | None, subdomain: str | None) -> bool:
    """Whether a parsed body may be queued for the account ``(account_id, subdomain)``.

    Every account id the body names must be ``account_id`` and its subdomain, compared
    case-insensitively and without a Kommo host suffix, must be ``subdomain``; an expected part
    that is None is not checked, and a body that names no account (old bodies) passes. One
    deployment serving several accounts calls it with the account its webhook secret selects.
    """
    if account_id is not None and any(named != account_id for named in hints.account_ids):
        return False
    expected = subdomain_of(subdomain) if subdomain is not None else None
    return expected is None or hints.subdomain in (None, expected)


def _count(hints: Hints) -> None:
    for kind, number in hints.queued().items():
        if number:
            WEBHOOKS_RECEIVED.labels(kind).inc(number)
    if hints.unsorted:  # incoming-lead records; the lead ids they list are counted as leads
        WEBHOOKS_RECEIVED.labels("unsorted").inc(hints.unsorted)
    for kind, number in hints.ignored.items():
        WEBHOOKS_IGNORED.labels(kind if kind in _IGNORED_LABELS else "other").inc(number)


def _dropped(pushed: Pushed, cap: int) -> None:
    HINTS_DROPPED.inc(pushed.dropped)
    if pushed.first_drop:  # once per burst, deployment-wide; the counter has the rest
        log.warning(
            "hint queue full (HINT_QUEUE_MAX=%d): %d ids of a webhook not queued, and more may "
            "follow in this burst (webhook_hints_dropped_total); the reconcile catches them",
            cap,
            pushed.dropped,
        )


def webhook_routes(settings: Settings) -> list[Route]:
    """The webhook endpoint."""
    configured = settings.webhook_secret
    expected = configured.value.encode() if configured is not None else None
    account_id = settings.kommo_account_id
    subdomain = settings.kommo_subdomain
    limit = settings.webhook_max_bytes
    cap = settings.hint_queue_max

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
            if not is_for_account(hints, account_id, subdomain):
                raise _Rejected(403, "wrong_account", "webhook is for another Kommo account")
        except _Rejected as exc:
            WEBHOOKS_REJECTED.labels(exc.reason).inc()
            log.info("webhook refused (%d): %s", exc.status, exc.message)
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ClientDisconnect:
            return Response(status_code=400)

        _count(hints)
        summary = {"queued": hints.queued(), "dropped": 0,
                   "unsorted": hints.unsorted, "ignored": dict(hints.ignored)}  # fmt: skip
        if hints.is_empty():
            return JSONResponse(summary)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                res = resources(request)
                pushed = await push_and_schedule(res.redis, res.arq, res.keys, hints, cap=cap)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            WEBHOOKS_LOST.inc()
            log.warning("webhook not queued, Redis unavailable: %s", type(exc).__name__)
            return JSONResponse({"queued": None, "lost": True}, status_code=202)
        if pushed.dropped:
            _dropped(pushed, cap)
            summary["dropped"] = pushed.dropped
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
