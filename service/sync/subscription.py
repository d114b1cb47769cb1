"""Kommo's webhook subscription for this deployment: install it, check it, heal it.

The destination is ``{PUBLIC_URL}/webhooks/kommo/{KOMMO_WEBHOOK_SECRET}`` subscribed to every
lead and contact event the service handles. Kommo disables a hook after more than 100 failed
deliveries in two hours (or after an API block); the worker checks every few minutes and
subscribes again, with a loud log line, when the hook is missing, disabled or incomplete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.kommo.budget import Priority
from service.kommo.client import KommoClient
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


async def install(kommo: KommoClient, url: str) -> None:
    """Subscribe (Kommo updates an existing destination in place, which also re-enables it)."""
    await kommo.subscribe_webhook(url, SETTINGS, priority=Priority.RECONCILE)


async def heal(kommo: KommoClient, url: str) -> Verdict:
    verdict = await check(kommo, url)
    if not verdict.ok:
        log.error("WEBHOOK SUBSCRIPTION BROKEN: %s; subscribing again", verdict.problem)
        await install(kommo, url)
    return verdict
