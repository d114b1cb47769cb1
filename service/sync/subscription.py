"""Kommo's webhook subscription for this deployment: install it, check it, heal it.

The destination is ``{PUBLIC_URL}/webhooks/kommo/{KOMMO_WEBHOOK_SECRET}`` subscribed to every
lead and contact event the service handles. Kommo disables a hook after more than 100 failed
deliveries in two hours (or after an API block); the worker checks every few minutes and
subscribes again, with a loud log line, when the hook is missing, disabled or incomplete.

``POST /api/v4/webhooks`` *replaces* the settings of an existing destination, so every call
carries the whole list. The core set (:data:`SETTINGS`) is what :func:`check` requires; names
in :data:`OPTIONAL_SETTINGS` are asked for too, but a name Kommo refuses (400/422) is left out
and never costs the core set its subscription (:func:`install`).

Metrics: ``webhook_subscription_ok`` is the verdict of this process's last :func:`heal` (1
healthy, 0 broken: missing, disabled or incomplete; NaN: no verdict, as in a process that did
not check in the last round: the worker's job sets NaN when another worker checked), and
``webhook_resubscriptions_total`` counts the subscriptions :func:`heal` made again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from service.kommo.budget import Priority
from service.kommo.client import KommoClient
from service.kommo.errors import KommoBadRequest
from service.settings import ConfigError, Settings

log = logging.getLogger(__name__)

SETTINGS = (
    "add_lead",
    "update_lead",
    "delete_lead",
    "restore_lead",
    "status_lead",
    "responsible_lead",
    "add_contact",
    "update_contact",
    "delete_contact",
    "restore_contact",
    "responsible_contact",
    "add_company",
    "update_company",
    "delete_company",
    "restore_company",
    "responsible_company",
)
"""The events the service needs: Kommo's documented names (amoCRM ``webhooks-api``)."""

OPTIONAL_SETTINGS: tuple[str, ...] = ()
"""Events subscribed when Kommo accepts them; none today.

Incoming leads ("unsorted"): Kommo lists "Incoming lead added / edited / deleted" among its
webhook events (developers.kommo.com/docs/webhooks-general) but documents no ``settings`` name
for them: neither Kommo's ``POST /api/v4/webhooks`` reference nor amoCRM's table of possible
events (``crm_platform/webhooks-api``) names one, and ``add_unsorted`` / ``update_unsorted`` /
``delete_unsorted`` appear only in third-party code. So none is subscribed. A hook that an
administrator subscribes to them in Kommo's settings page is handled all the same (the parser
reads ``unsorted[...]`` bodies), and the reconcile reads incoming leads in any case.
"""

_REFUSED = (400, 422)

SUBSCRIPTION_OK = Gauge(
    "webhook_subscription_ok",
    "Kommo's webhook subscription at this process's last check: 1 healthy, 0 broken, NaN unknown",
)
SUBSCRIPTION_OK.set(math.nan)  # no check yet
RESUBSCRIBED = Counter(
    "webhook_resubscriptions", "Broken webhook subscriptions (missing, disabled) subscribed again"
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problem: str  # empty when ok; never contains the destination (it holds the secret)


def destination(settings: Settings, public_url: str | None = None) -> str:
    base = (public_url or settings.public_url or "").rstrip("/")
    if not base:
        raise ConfigError("PUBLIC_URL", "is required (or --url): the web process's public URL")
    if settings.webhook_secret is None:
        raise ConfigError("KOMMO_WEBHOOK_SECRET", "is required")
    return f"{base}/webhooks/kommo/{settings.webhook_secret.value}"


async def check(kommo: KommoClient, url: str) -> Verdict:
    hooks = await kommo.list_webhooks(priority=Priority.RECONCILE)
    mine = [h for h in hooks if h.get("destination") == url]
    if not mine:
        return Verdict(False, "no webhook is subscribed for this service's URL")
    hook = mine[0]
    if hook.get("disabled"):
        return Verdict(False, "Kommo has disabled the webhook")
    missing = sorted(set(SETTINGS) - set(hook.get("settings") or []))
    if missing:
        return Verdict(False, "the webhook lacks " + ", ".join(missing))
    return Verdict(True, "")


async def install(
    kommo: KommoClient, url: str, optional: Sequence[str] = OPTIONAL_SETTINGS
) -> tuple[str, ...]:
    """Subscribe (Kommo updates an existing destination in place, which also re-enables it);
    return the names subscribed.

    One call asks for the core set and every optional name. When Kommo refuses it (400/422),
    the core set is subscribed alone, then each optional name is added in a call of its own,
    so a refused name costs only itself. A refused core set raises
    :class:`~service.kommo.errors.KommoBadRequest`.
    """
    extra = tuple(dict.fromkeys(n for n in optional if n not in SETTINGS))
    if not extra:
        await _subscribe(kommo, url, SETTINGS)
        return SETTINGS
    if await _accepted(kommo, url, (*SETTINGS, *extra)):
        return (*SETTINGS, *extra)
    await _subscribe(kommo, url, SETTINGS)
    taken: tuple[str, ...] = SETTINGS
    for name in extra:
        if await _accepted(kommo, url, (*taken, name)):
            taken = (*taken, name)
        else:
            log.warning("Kommo refused the webhook event %r; subscribed without it", name)
    return taken


async def heal(
    kommo: KommoClient, url: str, optional: Sequence[str] = OPTIONAL_SETTINGS
) -> Verdict:
    """Check the subscription and subscribe again when it is broken; the verdict is the
    check's (what was found, before any repair)."""
    verdict: Verdict | None = None
    try:
        verdict = await check(kommo, url)
    finally:
        SUBSCRIPTION_OK.set(math.nan if verdict is None else float(verdict.ok))
    if not verdict.ok:
        log.error("WEBHOOK SUBSCRIPTION BROKEN: %s; subscribing again", verdict.problem)
        await install(kommo, url, optional)
        RESUBSCRIBED.inc()
    return verdict


async def _subscribe(kommo: KommoClient, url: str, names: Sequence[str]) -> None:
    await kommo.subscribe_webhook(url, names, priority=Priority.RECONCILE)


async def _accepted(kommo: KommoClient, url: str, names: Sequence[str]) -> bool:
    """Subscribe ``names``; False when Kommo refused the list (the hook is then unchanged)."""
    try:
        await _subscribe(kommo, url, names)
    except KommoBadRequest as exc:
        if exc.status not in _REFUSED:
            raise
        return False
    return True
