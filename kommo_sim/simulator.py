"""The simulator object: configuration, wiring, and the in-process mutation API.

Every mutation is synchronous and in memory: it bumps ``updated_at`` to the clock's whole
second, writes events, and queues webhooks (sent by a background task; ``await
sim.webhooks.drain()`` waits for them).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from kommo_sim.changes import Action, contact_changes, lead_changes
from kommo_sim.clock import SimClock
from kommo_sim.edits import apply_contact_fields, apply_lead_fields
from kommo_sim.events import EventLog
from kommo_sim.faults import Faults
from kommo_sim.oauth import OAuthConfig, Tokens
from kommo_sim.payloads import WebhookItem
from kommo_sim.ratelimit import RateLimitConfig, RateLimiter
from kommo_sim.render import JSON, Renderer, tag
from kommo_sim.seed import CONTACT_PHONE, SeedSpec, generate, phone_values
from kommo_sim.state import Contact, Kind, Lead, State
from kommo_sim.webhooks import WebhookSender

logger = logging.getLogger(__name__)

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
)


class NotFound(LookupError):
    """The entity does not exist (or is deleted, for a change that needs it alive)."""


@dataclass
class SimConfig:
    seed: int = 1
    leads: int = 100
    contacts: int = 60
    tags: int = 12
    pipelines: int = 2
    users: int = 3
    token: str = "sim-token"
    account_id: int = 31000001
    subdomain: str = "examplecorp"
    start_time: float | None = None  # the clock's start (default: the real time now)
    clock_speed: float = 1.0  # 0 freezes the clock
    webhooks: list[str] = field(default_factory=list)  # subscribed to ALL_SETTINGS at start
    base_url: str | None = None  # hrefs in answers; default: the request's scheme and host
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)


class Simulator:
    """A Kommo account in memory, served by ``app`` (API v4, OAuth and ``/_sim`` control)."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        from kommo_sim.api import create_app  # the app needs the finished simulator

        self.config = config = config or SimConfig()
        self.clock = SimClock(config.start_time, config.clock_speed)
        self.state: State = generate(
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
            )
        )
        self.events = EventLog()
        self.faults = Faults(rng=random.Random(config.seed))
        self.ratelimit = RateLimiter(config.rate_limit, self.clock)
        self.tokens = Tokens(self.clock, config.token, config.oauth)
        self.webhooks = WebhookSender(self.state, self.clock, self.faults, webhook_transport)
        for url in config.webhooks:
            self.webhooks.subscribe(url, ALL_SETTINGS)
        self.counters: Counter[tuple[str, int]] = Counter()
        self.renderer = Renderer(self.state)
        self._previous: dict[tuple[Kind, int], tuple[float, Lead | Contact]] = {}
        self.state.leads.by_updated()  # build the (updated_at, id) indexes now, not on a request
        self.state.contacts.by_updated()
        self.app = create_app(self)

    # ----- read-only snapshots (for tests comparing a mirror) -----

    @property
    def base_url(self) -> str:
        return self.config.base_url or f"https://{self.config.subdomain}.kommo.com"

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
    def lead_tags_dict(self) -> dict[int, JSON]:
        return {t.id: tag(t) for t in self.state.lead_tags.values()}

    @property
    def contact_tags_dict(self) -> dict[int, JSON]:
        return {t.id: tag(t) for t in self.state.contact_tags.values()}

    def dump(self) -> JSON:
        """The whole state, as served by ``GET /_sim/state``."""
        base = self.base_url
        return {
            "account": self.renderer.account(base, with_datetime=True),
            "users": [self.renderer.user(u, base) for u in self.state.users],
            "pipelines": [self.renderer.pipeline(p, base) for p in self.state.pipelines],
            "lead_tags": list(self.lead_tags_dict.values()),
            "contact_tags": list(self.contact_tags_dict.values()),
            "leads": list(self.leads.values()),
            "contacts": list(self.contacts.values()),
            "events": len(self.events),
            "now": self.clock.now(),
        }

    def visible_lead(self, lead: Lead) -> Lead:
        """The version a read shows: sometimes the previous one, with the lagging-read fault."""
        shown = self._lagging("leads", lead.id)
        return shown if isinstance(shown, Lead) else lead

    def visible_contact(self, contact: Contact) -> Contact:
        shown = self._lagging("contacts", contact.id)
        return shown if isinstance(shown, Contact) else contact

    def _lagging(self, kind: Kind, entity_id: int) -> Lead | Contact | None:
        if not self.faults.lag_seconds:
            return None
        seen = self._previous.get((kind, entity_id))
        if seen is None or self.clock.now() - seen[0] > self.faults.lag_seconds:
            return None
        return seen[1] if self.faults.roll(self.faults.lag_probability) else None

    async def aclose(self) -> None:
        await self.webhooks.aclose()

    # ----- leads -----

    def create_lead(
        self,
        *,
        contacts: Sequence[int] = (),
        tags: Sequence[str] = (),
        by: int | None = None,
        **fields: Any,
    ) -> JSON:
        """Create a lead; ``contacts`` are linked in order (the first is main)."""
        pipeline = self.state.pipelines[0]
        now = self.clock.now_s()
        user = self._user(by)
        lead = Lead(
            self.state.new_id("leads"),
            "",
            0,
            user,
            pipeline.statuses[0].id,
            pipeline.id,
            user,
            user,
            now,
            now,
        )
        with self._batch() as items:
            apply_lead_fields(self.state, lead, fields, self.clock.now_s())
            lead.tags = [self.state.tag_by_name("leads", n).id for n in tags]
            self.state.leads.put(lead)
            items += lead_changes(self.state, self.events, None, lead, user, "add")
            for contact_id in contacts:
                self._link(
                    items, lead, self._contact(contact_id), is_main=not lead.contacts, by=user
                )
        return self.renderer.lead(lead, self.base_url, with_contacts=True)

    def update_lead(self, lead_id: int, *, by: int | None = None, **fields: Any) -> JSON:
        """Change any of name, price, status_id, pipeline_id, responsible_user_id,
        loss_reason_id, custom_fields ({field_id: value or None})."""
        return self.bulk_update_leads([lead_id], by=by, **fields)[0]

    def bulk_update_leads(
        self, ids: Iterable[int], *, by: int | None = None, **fields: Any
    ) -> list[JSON]:
        """The same change to several leads, delivered as one webhook body."""
        now = self.clock.now_s()
        with self._batch() as items:
            for lead_id in ids:
                self._change_lead(
                    items,
                    lead_id,
                    by,
                    lambda lead: apply_lead_fields(self.state, lead, fields, now),
                )
        return [
            self.renderer.lead(self.state.leads.rows[i], self.base_url, with_contacts=True)
            for i in ids
        ]

    def delete_lead(self, lead_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change_lead(
                items, lead_id, by, lambda lead: setattr(lead, "is_deleted", True), "delete"
            )

    def restore_lead(self, lead_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change_lead(
                items, lead_id, by, lambda lead: setattr(lead, "is_deleted", False), "restore"
            )

    def set_lead_tags(self, lead_id: int, names: Sequence[str], *, by: int | None = None) -> None:
        ids = [self.state.tag_by_name("leads", n).id for n in names]
        with self._batch() as items:
            self._change_lead(items, lead_id, by, lambda lead: setattr(lead, "tags", ids))

    def add_lead_tag(self, lead_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.lead_tags[t].name for t in self._lead(lead_id).tags]
        self.set_lead_tags(lead_id, current + [name] if name not in current else current, by=by)

    def remove_lead_tag(self, lead_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.lead_tags[t].name for t in self._lead(lead_id).tags]
        self.set_lead_tags(lead_id, [n for n in current if n != name], by=by)

    def link_contact(
        self, lead_id: int, contact_id: int, is_main: bool = False, *, by: int | None = None
    ) -> None:
        with self._batch() as items:
            self._link(items, self._lead(lead_id), self._contact(contact_id), is_main, by)

    def unlink_contact(self, lead_id: int, contact_id: int, *, by: int | None = None) -> None:
        lead, contact = self._lead(lead_id), self._contact(contact_id)
        user = self._user(by)
        with self._batch() as items:
            lead_before, contact_before = lead.clone(), contact.clone()
            was_main = lead.contacts.pop(contact_id, False)
            contact.leads.pop(lead_id, None)
            if was_main and lead.contacts:
                lead.contacts[next(iter(lead.contacts))] = True
            self._commit(items, "leads", lead_before, lead, user, "update")
            self._commit(items, "contacts", contact_before, contact, user, "update")

    # ----- contacts -----

    def create_contact(
        self,
        *,
        phones: Sequence[str] = (),
        tags: Sequence[str] = (),
        by: int | None = None,
        **fields: Any,
    ) -> JSON:
        now = self.clock.now_s()
        user = self._user(by)
        contact = Contact(self.state.new_id("contacts"), "", "", "", user, user, user, now, now)
        with self._batch() as items:
            apply_contact_fields(self.state, contact, fields)
            if phones:
                contact.custom_fields[CONTACT_PHONE] = phone_values(list(phones), self.faults.rng)
            contact.tags = [self.state.tag_by_name("contacts", n).id for n in tags]
            self.state.contacts.put(contact)
            items += contact_changes(self.state, self.events, None, contact, user, "add")
        return self.renderer.contact(contact, self.base_url, with_leads=True)

    def update_contact(self, contact_id: int, *, by: int | None = None, **fields: Any) -> JSON:
        """Change any of name, first_name, last_name, responsible_user_id, custom_fields."""
        with self._batch() as items:
            self._change_contact(
                items, contact_id, by, lambda c: apply_contact_fields(self.state, c, fields)
            )
        return self.renderer.contact(self._contact(contact_id), self.base_url, with_leads=True)

    def delete_contact(self, contact_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change_contact(
                items, contact_id, by, lambda c: setattr(c, "is_deleted", True), "delete"
            )

    def restore_contact(self, contact_id: int, *, by: int | None = None) -> None:
        with self._batch() as items:
            self._change_contact(
                items, contact_id, by, lambda c: setattr(c, "is_deleted", False), "restore"
            )

    def set_contact_phones(
        self, contact_id: int, raws: Sequence[str], *, by: int | None = None
    ) -> None:
        values = phone_values(list(raws), self.faults.rng)

        def edit(contact: Contact) -> None:
            if values:
                contact.custom_fields[CONTACT_PHONE] = values
            else:
                contact.custom_fields.pop(CONTACT_PHONE, None)

        with self._batch() as items:
            self._change_contact(items, contact_id, by, edit)

    def set_contact_tags(
        self, contact_id: int, names: Sequence[str], *, by: int | None = None
    ) -> None:
        ids = [self.state.tag_by_name("contacts", n).id for n in names]
        with self._batch() as items:
            self._change_contact(items, contact_id, by, lambda c: setattr(c, "tags", ids))

    def add_contact_tag(self, contact_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.contact_tags[t].name for t in self._contact(contact_id).tags]
        self.set_contact_tags(
            contact_id, current + [name] if name not in current else current, by=by
        )

    def remove_contact_tag(self, contact_id: int, name: str, *, by: int | None = None) -> None:
        current = [self.state.contact_tags[t].name for t in self._contact(contact_id).tags]
        self.set_contact_tags(contact_id, [n for n in current if n != name], by=by)

    def rename_tag(self, kind: Kind, tag_id: int, name: str) -> None:
        """Rename a tag in the leads or contacts dictionary (entities are not touched)."""
        tags = self.state.tags_of(kind)
        if tag_id not in tags:
            raise NotFound(f"no {kind} tag {tag_id}")
        tags[tag_id].name = name

    # ----- internals -----

    @contextmanager
    def _batch(self) -> Iterator[list[WebhookItem]]:
        items: list[WebhookItem] = []
        yield items
        self.state.leads.touched()
        self.state.contacts.touched()
        self.webhooks.publish(items)

    def _user(self, by: int | None) -> int:
        return self.state.users[0].id if by is None else by

    def _lead(self, lead_id: int, alive: bool = True) -> Lead:
        lead = self.state.leads.get(lead_id)
        if lead is None or (alive and lead.is_deleted):
            raise NotFound(f"no lead {lead_id}")
        return lead

    def _contact(self, contact_id: int, alive: bool = True) -> Contact:
        contact = self.state.contacts.get(contact_id)
        if contact is None or (alive and contact.is_deleted):
            raise NotFound(f"no contact {contact_id}")
        return contact

    def _change_lead(
        self,
        items: list[WebhookItem],
        lead_id: int,
        by: int | None,
        edit: Callable[[Lead], object],
        action: Action = "update",
    ) -> None:
        lead = self._lead(lead_id, alive=action != "restore")
        if action == "restore" and not lead.is_deleted:
            raise NotFound(f"lead {lead_id} is not deleted")
        before = lead.clone()
        edit(lead)
        self._commit(items, "leads", before, lead, self._user(by), action)

    def _change_contact(
        self,
        items: list[WebhookItem],
        contact_id: int,
        by: int | None,
        edit: Callable[[Contact], object],
        action: Action = "update",
    ) -> None:
        contact = self._contact(contact_id, alive=action != "restore")
        if action == "restore" and not contact.is_deleted:
            raise NotFound(f"contact {contact_id} is not deleted")
        before = contact.clone()
        edit(contact)
        self._commit(items, "contacts", before, contact, self._user(by), action)

    def _commit(
        self,
        items: list[WebhookItem],
        kind: Kind,
        before: Lead | Contact,
        after: Lead | Contact,
        by: int,
        action: Action,
    ) -> None:
        after.updated_at = self.clock.now_s()
        after.updated_by = by
        if self.faults.lag_seconds:
            self._previous[(kind, after.id)] = (self.clock.now(), before)
        if isinstance(before, Lead) and isinstance(after, Lead):
            items += lead_changes(self.state, self.events, before, after, by, action)
        elif isinstance(before, Contact) and isinstance(after, Contact):
            items += contact_changes(self.state, self.events, before, after, by, action)

    def _link(
        self, items: list[WebhookItem], lead: Lead, contact: Contact, is_main: bool, by: int | None
    ) -> None:
        user = self._user(by)
        lead_before, contact_before = lead.clone(), contact.clone()
        if is_main or not any(lead.contacts.values()):
            lead.contacts = {cid: False for cid in lead.contacts}
            is_main = True
        lead.contacts[contact.id] = is_main
        contact.leads[lead.id] = None
        self._commit(items, "leads", lead_before, lead, user, "update")
        self._commit(items, "contacts", contact_before, contact, user, "update")
