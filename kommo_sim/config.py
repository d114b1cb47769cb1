"""The simulator's configuration and the webhook settings it subscribes with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kommo_sim.layouts import Layout
from kommo_sim.oauth import OAuthConfig
from kommo_sim.ratelimit import RateLimitConfig

# What ``SimConfig.webhooks`` destinations are subscribed to: every lead, contact and company
# event the mirror cares about (notes, tasks, talks and customers are not simulated).
ALL_SETTINGS = (
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


@dataclass
class SimConfig:
    seed: int = 1
    leads: int = 100
    contacts: int = 60
    companies: int = 20
    tags: int = 12
    pipelines: int = 2
    users: int = 3
    token: str = "sim-token"
    account_id: int = 31000001
    subdomain: str = "examplecorp"
    timezone: str = "America/Lima"  # one of kommo_sim.state.TIMEZONES
    start_time: float | None = None  # the clock's start (default: the real time now)
    clock_speed: float = 1.0  # 0 freezes the clock
    webhooks: list[str] = field(default_factory=list)  # subscribed to ALL_SETTINGS at start
    unsorted_webhooks: bool = True  # ... and sent unsorted[...] bodies (see WebhookSender)
    # "vary": each body gets a layout drawn from the seeded RNG (account block first or last,
    # account[id] or not, brackets encoded or not, + or %20); "fixed" or a Layout: always that.
    webhook_layouts: Literal["vary", "fixed"] | Layout = "vary"
    history: bool = True  # seeded leads come with past stage moves (lead_status_changed)
    base_url: str | None = None  # hrefs in answers; default: the request's scheme and host
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)


def fill_url(url: str, subdomain: str, account_id: int) -> str:
    """A webhook URL with ``{subdomain}`` and ``{account_id}`` filled in (other text as is)."""
    return url.replace("{subdomain}", subdomain).replace("{account_id}", str(account_id))
