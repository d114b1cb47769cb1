"""What every mutation shares: finding entities, committing a change (``updated_at``, events,
webhook items), links between entities, and the lagging-read fault.

The mutation methods themselves live in mixins by subject (``lead_mutations``,
``party_mutations``, ``definition_mutations``, ``incoming``); :class:`kommo_sim.Simulator`
combines them, so tests and the ``/_sim/mutations/{op}`` route call them on one object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kommo_sim.changes import Action, lead_changes, party_changes
from kommo_sim.payloads import WebhookItem
from kommo_sim.state import Company, Contact, Entity, Kind, Lead

if TYPE_CHECKING:
    from kommo_sim.clock import SimClock
    from kommo_sim.config import SimConfig
    from kommo_sim.events import EventLog
    from kommo_sim.faults import Faults
    from kommo_sim.render import Renderer
    from kommo_sim.state import State
    from kommo_sim.webhooks import WebhookSender

_WORD = {"leads": "lead", "contacts": "contact", "companies": "company"}


class NotFound(LookupError):
    """The entity does not exist (or is deleted, for a change that needs it alive)."""


class Engine:
    config: SimConfig
    clock: SimClock
    state: State
    events: EventLog
    faults: Faults
    webhooks: WebhookSender
    renderer: Renderer
    _previous: dict[tuple[Kind, int], tuple[float, Entity]]

    @property
    def base_url(self) -> str:
        return self.config.base_url or f"https://{self.config.subdomain}.kommo.com"

    # ----- lagging reads -----

    def visible(self, kind: Kind, entity: Any) -> Any:
        """The version a read shows: sometimes the previous one, with the lagging-read fault."""
        if not self.faults.lag_seconds:
            return entity
        seen = self._previous.get((kind, entity.id))
        if seen is None or self.clock.now() - seen[0] > self.faults.lag_seconds:
            return entity
        return seen[1] if self.faults.roll(self.faults.lag_probability) else entity

    def visible_lead(self, lead: Lead) -> Lead:
        shown: Lead = self.visible("leads", lead)
        return shown

    def visible_contact(self, contact: Contact) -> Contact:
        shown: Contact = self.visible("contacts", contact)
        return shown

    # ----- finding -----

    def _user(self, by: int | None) -> int:
        return self.state.users[0].id if by is None else by

    def _get(self, kind: Kind, entity_id: int, alive: bool = True) -> Any:
        entity = self.state.table(kind).get(entity_id)
        if entity is None or (alive and entity.is_deleted):
            raise NotFound(f"no {_WORD[kind]} {entity_id}")
        return entity

    def _lead(self, lead_id: int, alive: bool = True) -> Lead:
        lead: Lead = self._get("leads", lead_id, alive)
        return lead

    def _contact(self, contact_id: int, alive: bool = True) -> Contact:
        contact: Contact = self._get("contacts", contact_id, alive)
        return contact

    def _company(self, company_id: int, alive: bool = True) -> Company:
        company: Company = self._get("companies", company_id, alive)
        return company

    # ----- committing -----

    @contextmanager
    def _batch(self) -> Iterator[list[WebhookItem]]:
        """Collect the webhook items of one logical change; publish them together."""
        items: list[WebhookItem] = []
        yield items
        self.state.leads.touched()
        self.state.contacts.touched()
        self.state.companies.touched()
        self.webhooks.publish(items)

    def _change(
        self,
        items: list[WebhookItem],
        kind: Kind,
        entity_id: int,
        by: int | None,
        edit: Callable[[Any], object],
        action: Action = "update",
    ) -> Any:
        """Apply ``edit`` to one entity and commit it; a failing edit changes nothing."""
        entity = self._get(kind, entity_id, alive=action != "restore")
        if action == "restore" and not entity.is_deleted:
            raise NotFound(f"{_WORD[kind]} {entity_id} is not deleted")
        before = entity.clone()
        try:
            edit(entity)
        except Exception:
            entity.__dict__.update(before.clone().__dict__)
            raise
        self._commit(items, kind, before, entity, self._user(by), action)
        return entity

    def _commit(
        self,
        items: list[WebhookItem],
        kind: Kind,
        before: Entity,
        after: Entity,
        by: int,
        action: Action,
    ) -> None:
        after.updated_at = self.clock.now_s()
        after.updated_by = by
        if self.faults.lag_seconds:
            self._previous[(kind, after.id)] = (self.clock.now(), before)
        if isinstance(before, Lead) and isinstance(after, Lead):
            items += lead_changes(self.state, self.events, before, after, by, action)
        elif not isinstance(before, Lead) and not isinstance(after, Lead):
            items += party_changes(self.state, self.events, before, after, by, action)

    def _added(self, items: list[WebhookItem], kind: Kind, entity: Entity, by: int) -> None:
        """Store a new entity and write its ``*_added`` event and ``add`` webhook."""
        self.state.table(kind).put(entity)
        if isinstance(entity, Lead):
            items += lead_changes(self.state, self.events, None, entity, by, "add")
        else:
            items += party_changes(self.state, self.events, None, entity, by, "add")

    # ----- links -----

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

    def _set_company(
        self,
        items: list[WebhookItem],
        owner: Lead | Contact,
        company_id: int | None,
        by: int | None,
    ) -> None:
        """Link ``owner`` (a lead or contact: at most one company each) to a company, or to none."""
        user = self._user(by)
        new = None if company_id is None else self._company(company_id)
        if owner.company_id == company_id:
            return
        old = None if owner.company_id is None else self.state.companies.get(owner.company_id)
        kind: Kind = "leads" if isinstance(owner, Lead) else "contacts"
        owner_before = owner.clone()
        owner.company_id = company_id
        self._commit(items, kind, owner_before, owner, user, "update")
        for company, linked in ((old, False), (new, True)):
            if company is None:
                continue
            company_before = company.clone()
            links = company.leads if kind == "leads" else company.contacts
            if linked:
                links[owner.id] = None
            else:
                links.pop(owner.id, None)
            if not company.is_deleted:
                self._commit(items, "companies", company_before, company, user, "update")
