"""The simulator object: configuration, wiring, and read-only snapshots for tests.

Every mutation (see the mixins :class:`LeadMutations`, :class:`PartyMutations`,
:class:`DefinitionMutations`, :class:`IncomingMutations`) is synchronous and in memory: it
bumps ``updated_at`` to the clock's whole second, writes events, and queues webhooks (sent by
a background task; ``await sim.webhooks.drain()`` waits for them).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import httpx

from kommo_sim.clock import SimClock
from kommo_sim.config import ALL_SETTINGS, SimConfig
from kommo_sim.definition_mutations import DefinitionMutations
from kommo_sim.engine import NotFound
from kommo_sim.events import EventLog
from kommo_sim.faults import Faults
from kommo_sim.history import seed_history
from kommo_sim.incoming import IncomingMutations
from kommo_sim.lead_mutations import LeadMutations
from kommo_sim.oauth import Tokens
from kommo_sim.party_mutations import PartyMutations
from kommo_sim.ratelimit import RateLimiter
from kommo_sim.render import JSON, Renderer, tag
from kommo_sim.seed import SeedSpec, generate
from kommo_sim.state import Company
from kommo_sim.webhooks import WebhookSender

__all__ = ["ALL_SETTINGS", "NotFound", "SimConfig", "Simulator"]

logger = logging.getLogger(__name__)


class Simulator(LeadMutations, PartyMutations, DefinitionMutations, IncomingMutations):
    """A Kommo account in memory, served by ``app`` (API v4, OAuth and ``/_sim`` control).

    ``clock`` lets several simulators share one clock (a :class:`kommo_sim.SimFleet` does).
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        clock: SimClock | None = None,
    ) -> None:
        from kommo_sim.api import create_app  # the app needs the finished simulator

        self.config = config = config or SimConfig()
        self.clock = clock or SimClock(config.start_time, config.clock_speed)
        self.state = generate(
            SeedSpec(
                config.seed,
                config.leads,
                config.contacts,
                config.tags,
                config.pipelines,
                config.users,
                config.account_id,
                config.subdomain,
                self.clock.now_s(),
                config.companies,
                config.timezone,
            )
        )
        self.events = EventLog()
        if config.history:
            seed_history(self.state, self.events, config.seed)
        self.faults = Faults(rng=random.Random(config.seed))
        self.ratelimit = RateLimiter(config.rate_limit, self.clock)
        self.tokens = Tokens(self.clock, config.token, config.oauth)
        self.webhooks = WebhookSender(
            self.state,
            self.clock,
            self.faults,
            webhook_transport,
            layouts=config.webhook_layouts,
            seed=config.seed,
        )
        for url in config.webhooks:
            self.webhooks.subscribe(url, ALL_SETTINGS, unsorted=config.unsorted_webhooks)
        self.counters: Counter[tuple[str, int]] = Counter()
        self.renderer = Renderer(self.state)
        self._previous = {}
        for table in (self.state.leads, self.state.contacts, self.state.companies):
            table.by_updated()  # build the (updated_at, id) indexes now, not on a request
        self.app = create_app(self)

    # ----- read-only snapshots (for tests comparing a mirror) -----

    @property
    def leads(self) -> dict[int, JSON]:
        """Every lead as the API shows it with ``with=contacts``; deleted ones included."""
        return {
            lead.id: self.renderer.lead(lead, self.base_url, with_contacts=True)
            for lead in self.state.leads
        }

    @property
    def contacts(self) -> dict[int, JSON]:
        """Every contact as the API shows it with ``with=leads``; deleted ones included."""
        return {
            c.id: self.renderer.contact(c, self.base_url, with_leads=True)
            for c in self.state.contacts
        }

    @property
    def companies(self) -> dict[int, JSON]:
        """Every company as the API shows it with ``with=leads,contacts``; deleted included."""
        return {
            c.id: self.renderer.company(c, self.base_url, with_leads=True, with_contacts=True)
            for c in self.state.companies
        }

    @property
    def lead_tags_dict(self) -> dict[int, JSON]:
        return {t.id: tag(t) for t in self.state.lead_tags.values()}

    @property
    def contact_tags_dict(self) -> dict[int, JSON]:
        return {t.id: tag(t) for t in self.state.contact_tags.values()}

    @property
    def company_tags_dict(self) -> dict[int, JSON]:
        return {t.id: tag(t) for t in self.state.company_tags.values()}

    @property
    def custom_fields(self) -> dict[str, list[JSON]]:
        """Field definitions per kind (``leads``, ``contacts``, ``companies``), as served."""
        return {
            kind: [self.renderer.custom_field(f, self.base_url) for f in fields.values()]
            for kind, fields in self.state.fields.items()
        }

    @property
    def loss_reasons(self) -> dict[int, JSON]:
        return {
            r.id: self.renderer.loss_reason(r, self.base_url)
            for r in self.state.loss_reasons.values()
        }

    @property
    def status_changes(self) -> list[dict[str, Any]]:
        """Every stage move so far (seeded past included), one per ``lead_status_changed``
        event: ``{event_id, lead_id, changed_at, changed_by, pipeline_id_before,
        status_id_before, pipeline_id, status_id}``, in the order written (per lead, in
        time order; sort by ``changed_at`` for one timeline)."""
        return [change.as_dict() for change in self.state.status_changes]

    def dump(self) -> JSON:
        """The whole state, as served by ``GET /_sim/state``."""
        base = self.base_url
        return {
            "account": self.renderer.account(base, with_datetime=True),
            "users": [self.renderer.user(u, base) for u in self.state.users],
            "pipelines": [self.renderer.pipeline(p, base) for p in self.state.pipelines],
            "lead_tags": list(self.lead_tags_dict.values()),
            "contact_tags": list(self.contact_tags_dict.values()),
            "company_tags": list(self.company_tags_dict.values()),
            "custom_fields": self.custom_fields,
            "loss_reasons": list(self.loss_reasons.values()),
            "leads": list(self.leads.values()),
            "contacts": list(self.contacts.values()),
            "companies": list(self.companies.values()),
            "status_changes": self.status_changes,
            "events": len(self.events),
            "now": self.clock.now(),
        }

    def visible_company(self, company: Company) -> Company:
        shown: Company = self.visible("companies", company)
        return shown

    async def aclose(self) -> None:
        await self.webhooks.aclose()
